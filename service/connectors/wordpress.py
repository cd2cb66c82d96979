"""WordPress: comments on news stories (posts), through the Switchboard Connector plugin and the REST API.

Inbound: the plugin (`integrations/wordpress/switchboard-connector`) sends each new, edited, re-moderated, trashed
or deleted comment, signed with Standard Webhooks under the source's signing secret, with an event id that stays
the same on the plugin's retries (WP-Cron), so a retried event is one delivery. Posts are threads (their first
category is the channel, their author the thread's author), comments are comments, `parent_id` makes replies. A
comment sent to spam or the trash, or deleted, is `comment.deleted` here (there is nothing left to answer).

Outbound, through the WordPress REST API (`/wp-json/wp/v2/comments`) as the user of an Application Password (a user
with `moderate_comments`, e.g. an Editor):

- **reply**: a child comment of the comment, with the meta `switchboard_reply_id` (the plugin registers it and sends
  it back, so the echo opens no item). Written as the responder's WordPress user when the member is mapped to one
  (`POST /v1/admin/members` identities on this source), otherwise as the Application Password's user and signed with
  the responder's name. WordPress has no idempotency key, so before posting a reply Switchboard looks for a child of
  the comment that already carries the reply's id (an earlier attempt whose answer was lost): one reply, once.
- **hold / release / reject**: the comment's status set to `hold`, `approved`, and `spam` or `trash` (the source's
  `reject_as`). WordPress answers 500 to a status it already has; that is read back and counts as done.
- **resolve**: WordPress has no such notion; sources of this kind do not offer it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from service.connectors import standard
from service.connectors.base import Capability, CommentEvent, Person, ThreadRef, credentials_of, refuse_unknown
from service.connectors.http import Message, Outcome, judge, scrubbed
from service.errors import InvalidPayload
from service.inputs import InvalidJson, parse_json, to_utc
from service.models import Source

KIND = "wordpress"
REJECT_AS = ("spam", "trash")
_STATUS = {"comment.held": "hold", "comment.released": "approved"}


# ---- inbound --------------------------------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # WordPress sites may add fields; we read what we need


class _Author(_Lenient):
    user_id: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)


class _Post(_Lenient):
    id: str = Field(min_length=1, max_length=200)
    title: str | None = Field(None, max_length=500)
    link: str | None = Field(None, max_length=2000)
    type: str | None = Field(None, max_length=50)
    categories: list[str] = Field(default_factory=list)
    author: _Author | None = None


class _Comment(_Lenient):
    id: str = Field(min_length=1, max_length=200)
    post_id: str = Field(min_length=1, max_length=200)
    parent_id: str | None = Field(None, max_length=200)
    status: str | None = Field(None, max_length=20)
    content: str = Field("", max_length=50_000)
    date_gmt: AwareDatetime | None = None
    author: _Author | None = None
    switchboard_reply_id: str | None = Field(None, max_length=64)


class _Event(_Lenient):
    type: Literal["comment.created", "comment.updated", "comment.deleted"]
    occurred_at: AwareDatetime
    comment: _Comment
    post: _Post | None = None


def _person(author: _Author | None) -> Person | None:
    if author is None:
        return None
    user = author.user_id if author.user_id not in (None, "", "0") else None
    return Person(external_id=user, name=author.name, email=author.email)


def parse(body: bytes) -> CommentEvent:
    """The plugin's event as a CommentEvent."""
    try:
        document = parse_json(body)
    except InvalidJson as exc:
        error = {"loc": list(exc.loc), "msg": exc.message, "type": exc.kind}
        raise InvalidPayload(exc.message, errors=[error]) from None
    try:
        event = _Event.model_validate(document)
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidPayload("The event does not match the WordPress connector's format.", errors=errors) from None
    c = event.comment
    if event.type == "comment.deleted":
        return CommentEvent(action="deleted", event_type=event.type, external_id=c.id)
    post = event.post
    thread = ThreadRef(
        external_id=c.post_id,
        title=post.title if post else None,
        url=post.link if post else None,
        kind=post.type if post else None,
        channel=post.categories[0] if post and post.categories else None,
        author=_person(post.author) if post else None,
    )
    return CommentEvent(
        action="created" if event.type == "comment.created" else "updated",
        event_type=event.type,
        external_id=c.id,
        thread=thread,
        parent_external_id=c.parent_id if c.parent_id not in (None, "", "0") else None,
        author=_person(c.author),
        body=c.content,
        posted_at=to_utc(c.date_gmt) if c.date_gmt else None,
        edited_at=to_utc(event.occurred_at) if event.type == "comment.updated" else None,
        reply_marker=c.switchboard_reply_id,
    )


class WordPressAdapter:
    """Inbound: Standard Webhooks signatures (the plugin signs with the source's secret), the plugin's payload."""

    verify = staticmethod(standard.verify)

    def parse(self, body: bytes) -> CommentEvent:
        """The plugin's format."""
        return parse(body)


# ---- outbound -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WordPressSite:
    """The REST API of one WordPress site, as the user of an Application Password."""

    site_url: str
    username: str
    password: str = field(repr=False)
    reject_as: str = "spam"

    def _url(self, path: str) -> str:
        return self.site_url.rstrip("/") + "/wp-json/wp/v2/" + path

    def _auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.username, self.password)

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:
        """Carry one event to the site."""
        data: dict[str, Any] = message.payload.get("data", {})
        comment = data.get("comment", {})
        try:
            if message.kind == "reply.created":
                return await self._reply(client, comment, data.get("reply", {}), now)
            status = _STATUS.get(message.kind) or (self.reject_as if message.kind == "comment.rejected" else None)
            if status is None:
                return Outcome(delivered=True, status=None, error=f"WordPress has no use for {message.kind}")
            return await self._set_status(client, str(comment["id"]), status, now)
        except httpx.HTTPError as exc:
            return Outcome(delivered=False, error=scrubbed(exc, self.site_url))

    async def _reply(
        self, client: httpx.AsyncClient, comment: Mapping[str, Any], reply: Mapping[str, Any], now: datetime
    ) -> Outcome:
        parent, post, reply_id = str(comment["id"]), str(comment["thread_id"]), str(reply["id"])
        existing = await self._find_reply(client, post=post, parent=parent, reply_id=reply_id, now=now)
        if existing is not None:
            return existing
        author = reply.get("author") or {}
        body: dict[str, Any] = {
            "post": int(post),
            "parent": int(parent),
            "content": str(reply.get("body", "")),
            "meta": {"switchboard_reply_id": reply_id},
        }
        user = author.get("platform_user_id")
        if user and str(user).isdigit():
            body["author"] = int(user)
        else:
            body["content"] += f"\n\n— {author.get('name') or 'Switchboard'}"
        response = await client.post(self._url("comments"), json=body, auth=self._auth())
        outcome = judge(response, now)
        if outcome.delivered:
            return Outcome(delivered=True, status=response.status_code, external_id=_id_of(response))
        return outcome

    async def _find_reply(
        self, client: httpx.AsyncClient, *, post: str, parent: str, reply_id: str, now: datetime
    ) -> Outcome | None:
        """An earlier attempt's reply (a child of the comment carrying the reply's id), delivered; else None."""
        params = {"post": post, "parent": parent, "context": "edit", "per_page": "100", "status": "all"}
        response = await client.get(self._url("comments"), params=params, auth=self._auth())
        if response.status_code != 200:
            outcome = judge(response, now)
            return None if outcome.delivered else outcome
        for child in response.json():
            meta = child.get("meta") or {}
            if isinstance(meta, dict) and meta.get("switchboard_reply_id") == reply_id:
                return Outcome(delivered=True, status=200, external_id=str(child["id"]))
        return None

    async def _set_status(self, client: httpx.AsyncClient, comment_id: str, status: str, now: datetime) -> Outcome:
        response = await client.post(self._url(f"comments/{comment_id}"), json={"status": status}, auth=self._auth())
        if response.status_code == 500 and _code(response) == "rest_comment_failed_edit":
            # WordPress refuses to set the status a comment already has: read it back.
            current = await client.get(
                self._url(f"comments/{comment_id}"), params={"context": "edit"}, auth=self._auth()
            )
            if current.status_code == 200 and current.json().get("status") == status:
                return Outcome(delivered=True, status=200, external_id=comment_id)
        outcome = judge(response, now)
        return (
            Outcome(delivered=True, status=response.status_code, external_id=comment_id)
            if outcome.delivered
            else outcome
        )


def _id_of(response: httpx.Response) -> str | None:
    try:
        value = response.json().get("id")
    except (ValueError, AttributeError):
        return None
    return str(value) if isinstance(value, int) else None


def _code(response: httpx.Response) -> str | None:
    try:
        value = response.json().get("code")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# ---- the connector ----------------------------------------------------------------------------------------------


class WordPressConnector:
    """Kind `wordpress`: settings `site_url`, `username`, `reject_as` (`spam` or `trash`); credentials
    `application_password`."""

    kind = KIND
    adapter = WordPressAdapter()

    def check(self, settings: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        """Known keys only, of the right shapes."""
        refuse_unknown(
            "WordPress",
            settings,
            credentials,
            setting_keys={"site_url", "username", "reject_as"},
            credential_keys={"application_password"},
        )
        site = settings.get("site_url")
        if site is not None and not (isinstance(site, str) and site.startswith(("http://", "https://"))):
            raise InvalidPayload("`site_url` must be the WordPress site's http(s) address.")
        if settings.get("reject_as", "spam") not in REJECT_AS:
            raise InvalidPayload("`reject_as` must be `spam` or `trash`.")
        for name, value in (
            ("username", settings.get("username")),
            ("application_password", credentials.get("application_password")),
        ):
            if value is not None and not (isinstance(value, str) and 0 < len(value) <= 200):
                raise InvalidPayload(f"`{name}` must be a non-empty string.")

    def _site(self, source: Source) -> WordPressSite | None:
        settings = source.settings or {}
        credentials = credentials_of(source)
        site, user, password = (
            settings.get("site_url"),
            settings.get("username"),
            credentials.get("application_password"),
        )
        if not (site and user and password):
            return None
        return WordPressSite(
            site_url=site, username=user, password=password, reject_as=settings.get("reject_as", "spam")
        )

    def capabilities(self, source: Source) -> list[Capability]:
        """Receiving always; replies and moderation once the site and an Application Password are set."""
        if self._site(source) is None:
            return ["receive"]
        return ["receive", "reply", "hold", "release", "reject"]

    def endpoint(self, source: Source) -> WordPressSite | None:
        """The site's REST API, or None before it is configured."""
        return self._site(source)
