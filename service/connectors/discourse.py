"""Discourse: forum topics and their replies, through Discourse's own outgoing webhooks and its REST API.

Inbound: a Discourse webhook (Admin > API > Webhooks) with content type `application/json`, the events "Post is
created / updated / deleted / recovered" (Discourse's default selection) and, in its Secret field, the source's
signing secret exactly as Switchboard issued it (`whsec_...`). Discourse signs the raw body,
`X-Discourse-Event-Signature: sha256=<hex HMAC-SHA256(secret, body)>`, with the secret string itself as the key.
Discourse sends no timestamp and signs nothing but the body, so there is no replay window to enforce here: a replayed
body can only say again what was once true of a post, and the mapping below is built so that this changes nothing
(de-duplication, then the stored comment's own state).

- **Delivery id.** Discourse's `X-Discourse-Event-Id` is a new row for each automatic retry, so it cannot be the
  de-duplication key. The key is `discourse:<post id>:<X-Discourse-Event>:<version>:<updated_at or deleted_at>`,
  the same on every retry of one event (Discourse re-sends the payload it built when the event happened); the
  timestamp is there because edits within Discourse's grace period keep the version. A body without a post (a ping,
  a topic or user event) is keyed by its SHA-256.
- **Events.** The signed body says what the post is now, and that is what Switchboard applies (the event name is
  in a header the signature does not cover): a post with `deleted_at` or `user_deleted` is deleted here
  (`post_destroyed`, also an author's own deletion); a post in its first version and never updated is created
  (`post_created`); any other live post is created-or-updated with `updated_at` as its edit time (`post_edited`,
  and `post_recovered`: a post Switchboard never saw is created; one it has as deleted stays deleted, since its text
  was erased on deletion, and the delivery is answered `ignored_deleted`). An older edit arriving late is
  `ignored_stale`.
- **Not comments** (answered 2xx with outcome `ignored`, nothing stored but the delivery and, for an opening post,
  its topic): a ping (`{"ping": "OK"}`), topic and other non-post events, posts in private messages, whispers and
  small actions (`post_type` other than 1), and the opening post of a topic (post number 1): that post is the story
  itself, so its topic becomes the thread, titled and in its category, with the post's author as the thread's author
  (a rule `{"assign": {"to": "thread_author"}}` then routes the replies to whoever opened the topic).
- **Mapping.** Topic = thread (`topic_id`, `topic_title`, the category's `category_slug` as channel, else its
  `category_id`); the author is the post's username in lower case (Discourse usernames are case-insensitive; it is
  also what the API needs to post as someone), with the display name; `raw` (the Markdown the author wrote) is the
  body.
- **External ids.** A comment's external id is `<topic id>:<post number>`. Discourse names a reply's parent only by
  its post number (`reply_to_post_number`), so this is the only form in which a reply can point at its parent
  (`<topic id>:<reply_to_post_number>`; a reply to the opening post has no parent); it is also all a reply needs
  (`POST /posts.json` takes `topic_id` and `reply_to_post_number`), and moderation looks the post id up by number
  (`GET /posts/by_number/<topic id>/<post number>.json`) before acting. Post numbers stay with their post unless a
  moderator moves posts to another topic; a moved post is a new comment here.

Outbound, through the REST API with the headers `Api-Key` and `Api-Username` (settings `base_url` and
`api_username`, a moderator or admin; credential `api_key`):

- **reply**: `POST /posts.json {topic_id, raw, reply_to_post_number}`. Written as the responder's Discourse user
  when the member is mapped to one on this source (their username is sent as `Api-Username`, which needs an "All
  users" API key: a single-user key refuses it with 403, and the reply is dead with that error), otherwise as
  `api_username` and signed "— <responder's name>". The raw ends with `<!-- switchboard:<reply id> -->`: Discourse
  keeps it in `raw` (which its webhooks carry) and shows nothing of it, so the echo (the `post_created` webhook of
  the reply) opens no item even when it arrives before the delivery is recorded, or for a reply that waited for
  approval. Discourse has no idempotency key, so before posting Switchboard reads the posts after the comment
  (`GET /t/<topic id>/posts.json?post_number=<n>&asc=true&include_raw=true`, up to 5 pages) for one ending with that
  marker (an earlier attempt whose answer was lost): one reply, once.
- **hold**: Discourse has no hide route; a staff flag that takes action hides the post:
  `POST /post_actions.json {id, post_action_type_id: 4 (inappropriate), take_action: "true"}`. Discourse tells the
  author their post was hidden after a flag. **release**: `PUT /posts/<id>/unhide`. **reject**: hidden
  (`reject_as: "hide"`, the default) or deleted (`DELETE /posts/<id>.json`, `reject_as: "delete"`).
  Each first reads the post: one already hidden (or deleted) counts as hidden, one already visible as released,
  one already deleted or gone as deleted. A refused flag is read back the same way. Discourse lets a user flag a
  post once: hiding a post again after it was released is refused by Discourse (the message is dead with its
  answer, for a moderator to hide it in Discourse).
- **resolve**: Discourse has no such notion; sources of this kind do not offer it.

Rate limits: Discourse answers 429 with `Retry-After` and `extras.wait_seconds`; either holds the next attempt back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from service.connectors.base import Capability, CommentEvent, Person, ThreadRef, credentials_of, refuse_unknown
from service.connectors.http import MAX_RETRY_AFTER_SECONDS, USER_AGENT, Message, Outcome, judge, scrubbed
from service.errors import InvalidPayload, InvalidSignature
from service.inputs import InvalidJson, parse_json, to_utc
from service.models import Source

KIND = "discourse"
REJECT_AS = ("hide", "delete")
SIGNATURE_HEADER = "x-discourse-event-signature"
REGULAR_POST = 1  # Post.types[:regular]; 2 moderator_action, 3 small_action, 4 whisper
FLAG_INAPPROPRIATE = 4  # PostActionType.types[:inappropriate]: an auto-action flag, so take_action hides the post
REPLY_LOOKUP_PAGES = 5  # pages of posts after the comment searched for an earlier attempt's reply
MARKER = "<!-- switchboard:{} -->"
_MARKER_AT_END = re.compile(r"\s*<!--\s*switchboard:([0-9a-fA-F-]{36})\s*-->\s*\Z")
_STAMP = re.compile(r"\A[0-9A-Za-z:.+-]{1,40}\Z")
_EVENT_NAME = re.compile(r"\A[a-z0-9_]{1,60}\Z")
_EXTERNAL_ID = re.compile(r"\A([1-9][0-9]{0,18}):([1-9][0-9]{0,9})\Z")
_USERNAME = re.compile(r"\A[\w.\-]{1,60}\Z", re.ASCII)


# ---- inbound ---------------------------------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by its lower-case name (Starlette's headers ignore case; a plain dict may not)."""
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def delivery_id(body: bytes, headers: Mapping[str, str]) -> str:
    """The de-duplication key: the same on Discourse's retries of one event, different for another event."""
    event = _header(headers, "x-discourse-event") or _header(headers, "x-discourse-event-type") or ""
    event = event if _EVENT_NAME.match(event) else "unnamed"
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not readable: parse() will say why, with a 422
        document = None
    post = document.get("post") if isinstance(document, dict) else None
    if isinstance(post, dict):
        post_id, version = post.get("id"), post.get("version", 1)
        stamp = post.get("deleted_at") or post.get("updated_at") or post.get("created_at")
        if (
            type(post_id) is int  # not a bool, which is an int too
            and type(version) is int
            and isinstance(stamp, str)
            and _STAMP.match(stamp)
            and 0 < post_id < 10**19
            and 0 <= version < 10**9
        ):
            return f"discourse:{post_id}:{event}:{version}:{stamp}"
    return f"discourse:{event}:sha256:{hashlib.sha256(body).hexdigest()}"


def verify(
    *,
    body: bytes,
    headers: Mapping[str, str],
    secrets: Sequence[str],
    tolerance_seconds: int,  # noqa: ARG001  (Discourse signs no timestamp: nothing to hold it against)
    now: datetime,  # noqa: ARG001  (likewise)
) -> str:
    """Check `X-Discourse-Event-Signature` over the raw body with each secret; return the delivery id.

    Total over its input: whatever the headers hold, the answer is the delivery id or InvalidSignature.
    """
    header = _header(headers, SIGNATURE_HEADER)
    if not header:
        raise InvalidSignature(
            "The X-Discourse-Event-Signature header is missing: set the webhook's Secret in Discourse to the "
            "source's signing secret."
        )
    scheme, _, encoded = header.strip().partition("=")
    try:
        given = bytes.fromhex(encoded) if scheme == "sha256" and encoded.isascii() else b""
    except ValueError:
        given = b""
    if len(given) != hashlib.sha256().digest_size:
        raise InvalidSignature("The X-Discourse-Event-Signature header must be `sha256=<64 hex digits>`.")
    matched = False
    for secret in secrets:  # every secret, without stopping early: timing says nothing about which one matched
        matched |= hmac.compare_digest(hmac.new(secret.encode(), body, hashlib.sha256).digest(), given)
    if not matched:
        raise InvalidSignature("The X-Discourse-Event-Signature does not match this body and the source's secret.")
    return delivery_id(body, headers)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")  # Discourse and its plugins add fields; we read what we need


class _Post(_Lenient):
    """The fields of Discourse's WebHookPostSerializer that Switchboard reads."""

    id: int = Field(ge=1, strict=True)  # strict: Discourse sends JSON integers, never true or "1"
    topic_id: int = Field(ge=1, strict=True)
    post_number: int = Field(ge=1, strict=True)
    post_type: int = Field(REGULAR_POST, strict=True)
    reply_to_post_number: int | None = Field(None, ge=1, strict=True)
    username: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=1000)
    raw: str = Field("", max_length=1_000_000)  # the request body limit is the real bound
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    version: int = Field(1, ge=0, strict=True)
    deleted_at: AwareDatetime | None = None
    user_deleted: bool = False
    topic_title: str | None = Field(None, max_length=10_000)
    category_id: int | None = Field(None, strict=True)
    category_slug: str | None = Field(None, max_length=1000)
    topic_archetype: str | None = Field(None, max_length=100)


def _clip(value: str | None, length: int) -> str | None:
    """A platform's text cut to the column that keeps it (Discourse allows longer names than we store)."""
    return value[:length] if value else None


def username_key(username: str) -> str:
    """A Discourse username as Switchboard keeps it: NFC, lower case, as Discourse's `username_lower`."""
    return unicodedata.normalize("NFC", username).lower()


def _person(post: _Post) -> Person | None:
    if not post.username:
        return None
    return Person(external_id=_clip(username_key(post.username), 200), name=_clip(post.name or post.username, 200))


def external_id(topic_id: int, post_number: int) -> str:
    """A post's external id: `<topic id>:<post number>` (see the module docstring)."""
    return f"{topic_id}:{post_number}"


def _thread(post: _Post, *, with_author: bool) -> ThreadRef:
    channel = post.category_slug or (str(post.category_id) if post.category_id is not None else None)
    return ThreadRef(
        external_id=str(post.topic_id),
        title=_clip(post.topic_title, 500),
        kind="forum",
        channel=_clip(channel, 200),
        author=_person(post) if with_author else None,
    )


def _ignored(event_type: str, thread: ThreadRef | None = None, external: str = "-") -> CommentEvent:
    return CommentEvent(action="ignored", event_type=event_type, external_id=external, thread=thread)


def _invalid(exc: ValidationError) -> InvalidPayload:
    errors = [
        {"loc": ["post", *e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]
    return InvalidPayload("The post does not match Discourse's webhook format.", errors=errors)


def parse(body: bytes) -> CommentEvent:
    """A Discourse webhook body as a CommentEvent (see the module docstring for what each post becomes)."""
    try:
        document = parse_json(body)
    except InvalidJson as exc:
        error = {"loc": list(exc.loc), "msg": exc.message, "type": exc.kind}
        raise InvalidPayload(exc.message, errors=[error]) from None
    if not isinstance(document, dict) or not document:
        error = {"loc": [], "msg": 'Discourse sends an object such as {"post": {...}}.', "type": "dict_type"}
        raise InvalidPayload("The body is not a Discourse webhook payload.", errors=[error])
    if "post" not in document:  # a ping, a topic, user or other event: nothing about a comment
        name = next(iter(document))
        return _ignored(name if len(document) == 1 and _EVENT_NAME.match(name) and len(name) <= 50 else "other")
    try:
        post = _Post.model_validate(document["post"])
    except ValidationError as exc:
        raise _invalid(exc) from None
    external = external_id(post.topic_id, post.post_number)
    if post.topic_archetype == "private_message":
        return _ignored("post:private_message", external=external)
    if post.post_type != REGULAR_POST:
        return _ignored(f"post:type_{post.post_type}"[:50], external=external)
    deleted = post.deleted_at is not None or post.user_deleted
    if post.post_number == 1:  # the topic's opening post: the story, not a comment on it
        return _ignored("post:opening", thread=None if deleted else _thread(post, with_author=True), external=external)
    if deleted:
        return CommentEvent(action="deleted", event_type="post_destroyed", external_id=external)
    marker = _MARKER_AT_END.search(post.raw)
    body_text = post.raw[: marker.start()] if marker else post.raw
    parent = post.reply_to_post_number
    fresh = post.version <= 1 and (post.updated_at is None or post.updated_at == post.created_at)
    return CommentEvent(
        action="created" if fresh else "updated",
        event_type="post_created" if fresh else "post_edited",
        external_id=external,
        thread=_thread(post, with_author=False),  # the opening post's event names the topic's author
        parent_external_id=external_id(post.topic_id, parent) if parent is not None and parent > 1 else None,
        author=_person(post),
        body=body_text,
        posted_at=to_utc(post.created_at),
        edited_at=None if fresh else to_utc(post.updated_at or post.created_at),
        reply_marker=marker.group(1).lower() if marker else None,
    )


class DiscourseAdapter:
    """Inbound: Discourse's own signature and payloads."""

    def verify(
        self,
        *,
        body: bytes,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        tolerance_seconds: int,
        now: datetime,
    ) -> str:
        """`X-Discourse-Event-Signature`; the delivery id survives Discourse's retries."""
        return verify(body=body, headers=headers, secrets=secrets, tolerance_seconds=tolerance_seconds, now=now)

    def parse(self, body: bytes) -> CommentEvent:
        """Discourse's webhook payload."""
        return parse(body)


# ---- outbound --------------------------------------------------------------------------------------------------


def _document(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return document if isinstance(document, dict) else {}


def _judged(response: httpx.Response, now: datetime) -> Outcome:
    """`judge`, plus Discourse's `extras.wait_seconds` when a 429 comes without `Retry-After`."""
    outcome = judge(response, now)
    if response.status_code == 429 and outcome.retry_after is None:
        extras = _document(response).get("extras")
        wait = extras.get("wait_seconds") if isinstance(extras, dict) else None
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait >= 0:
            return Outcome(
                delivered=False,
                status=429,
                error=outcome.error,
                retry_after=min(float(wait), MAX_RETRY_AFTER_SECONDS),
                permanent=False,
            )
    return outcome


@dataclass(frozen=True, slots=True)
class _PostState:
    id: int
    hidden: bool
    deleted: bool


@dataclass(frozen=True, slots=True)
class DiscourseForum:
    """The REST API of one Discourse site, as `api_username` (or, for replies, a mapped member)."""

    base_url: str
    api_username: str
    api_key: str = field(repr=False)
    reject_as: str = "hide"

    def _url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def _headers(self, username: str | None = None) -> dict[str, str]:
        return {
            "Api-Key": self.api_key,
            "Api-Username": username or self.api_username,
            "Accept": "application/json",
            "user-agent": USER_AGENT,
        }

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:
        """Carry one event to the forum."""
        data: dict[str, Any] = message.payload.get("data", {})
        comment = str(data.get("comment", {}).get("id", ""))
        found = _EXTERNAL_ID.match(comment)
        if found is None:
            return Outcome(delivered=False, permanent=True, error=f"{comment!r} is not a Discourse post (topic:number)")
        topic, number = int(found.group(1)), int(found.group(2))
        try:
            if message.kind == "reply.created":
                return await self._reply(client, topic, number, data.get("reply", {}), now)
            if message.kind == "comment.held" or (message.kind == "comment.rejected" and self.reject_as == "hide"):
                return await self._hide(client, topic, number, now)
            if message.kind == "comment.released":
                return await self._unhide(client, topic, number, now)
            if message.kind == "comment.rejected":
                return await self._delete(client, topic, number, now)
            return Outcome(delivered=True, status=None, error=f"Discourse has no use for {message.kind}")
        except httpx.HTTPError as exc:
            return Outcome(delivered=False, error=scrubbed(exc, self.base_url))

    # -- replies

    async def _reply(
        self, client: httpx.AsyncClient, topic: int, number: int, reply: Mapping[str, Any], now: datetime
    ) -> Outcome:
        reply_id = str(reply["id"])
        marker = MARKER.format(reply_id)
        existing = await self._find_reply(client, topic, number, reply_id, now)
        if existing is not None:
            return existing
        author = reply.get("author") or {}
        user = author.get("platform_user_id")
        as_member = isinstance(user, str) and _USERNAME.match(user) is not None
        raw = str(reply.get("body", "")).rstrip()
        if not as_member:
            raw += f"\n\n— {author.get('name') or 'Switchboard'}"
        raw += "\n\n" + marker
        response = await client.post(
            self._url("/posts.json"),
            json={"topic_id": topic, "raw": raw, "reply_to_post_number": number},
            headers=self._headers(user if as_member else None),
        )
        outcome = _judged(response, now)
        if not outcome.delivered:
            return outcome
        posted = _document(response)
        if posted.get("action") == "enqueued":  # waiting for approval: its post_created webhook carries the marker
            return Outcome(delivered=True, status=response.status_code)
        post_topic, post_number = posted.get("topic_id"), posted.get("post_number")
        if isinstance(post_topic, int) and isinstance(post_number, int):
            return Outcome(
                delivered=True, status=response.status_code, external_id=external_id(post_topic, post_number)
            )
        return Outcome(delivered=True, status=response.status_code)

    async def _find_reply(
        self, client: httpx.AsyncClient, topic: int, number: int, reply_id: str, now: datetime
    ) -> Outcome | None:
        """An earlier attempt's reply (a later post of the topic ending with the marker), delivered; else None."""
        after = number
        for _ in range(REPLY_LOOKUP_PAGES):
            response = await client.get(
                self._url(f"/t/{topic}/posts.json"),
                params={"post_number": str(after), "asc": "true", "include_raw": "true"},
                headers=self._headers(),
            )
            if response.status_code != 200:
                outcome = _judged(response, now)
                return None if outcome.delivered else outcome
            stream = _document(response).get("post_stream")
            posts = stream.get("posts") if isinstance(stream, dict) else None
            if not isinstance(posts, list) or not posts:
                return None
            numbers = []
            for post in posts:
                if not isinstance(post, dict) or not isinstance(post.get("post_number"), int):
                    continue
                numbers.append(post["post_number"])
                found = _MARKER_AT_END.search(str(post.get("raw") or ""))
                if found is not None and found.group(1).lower() == reply_id:
                    return Outcome(delivered=True, status=200, external_id=external_id(topic, post["post_number"]))
            if not numbers or max(numbers) <= after:
                return None
            after = max(numbers)
        return None

    # -- moderation

    async def _state(
        self, client: httpx.AsyncClient, topic: int, number: int, now: datetime
    ) -> tuple[_PostState | None, Outcome | None]:
        """The post as Discourse has it now (None: it no longer exists), or the failed look-up's outcome."""
        response = await client.get(self._url(f"/posts/by_number/{topic}/{number}.json"), headers=self._headers())
        if response.status_code == 404 and _document(response).get("error_type") == "not_found":
            return None, None
        outcome = _judged(response, now)
        if not outcome.delivered:
            return None, outcome
        post = _document(response)
        post_id = post.get("id")
        if not isinstance(post_id, int) or isinstance(post_id, bool):
            return None, Outcome(delivered=False, status=response.status_code, error="Discourse sent no post id")
        deleted = post.get("deleted_at") is not None or bool(post.get("user_deleted"))
        return _PostState(id=post_id, hidden=bool(post.get("hidden")), deleted=deleted), None

    async def _hide(self, client: httpx.AsyncClient, topic: int, number: int, now: datetime) -> Outcome:
        post, failed = await self._state(client, topic, number, now)
        if failed is not None:
            return failed
        done = Outcome(delivered=True, status=200, external_id=external_id(topic, number))
        if post is None or post.hidden or post.deleted:
            return done
        response = await client.post(
            self._url("/post_actions.json"),
            json={"id": post.id, "post_action_type_id": FLAG_INAPPROPRIATE, "take_action": "true"},
            headers=self._headers(),
        )
        outcome = _judged(response, now)
        if outcome.delivered:
            return done
        if outcome.permanent:  # e.g. already flagged: what matters is whether the post is hidden now
            again, failed = await self._state(client, topic, number, now)
            if failed is not None:
                return failed
            if again is None or again.hidden or again.deleted:
                return done
        return outcome

    async def _unhide(self, client: httpx.AsyncClient, topic: int, number: int, now: datetime) -> Outcome:
        post, failed = await self._state(client, topic, number, now)
        if failed is not None:
            return failed
        done = Outcome(delivered=True, status=200, external_id=external_id(topic, number))
        if post is None or post.deleted or not post.hidden:
            return done  # gone, or visible already
        response = await client.put(self._url(f"/posts/{post.id}/unhide"), headers=self._headers())
        outcome = _judged(response, now)
        return done if outcome.delivered else outcome

    async def _delete(self, client: httpx.AsyncClient, topic: int, number: int, now: datetime) -> Outcome:
        post, failed = await self._state(client, topic, number, now)
        if failed is not None:
            return failed
        done = Outcome(delivered=True, status=200, external_id=external_id(topic, number))
        if post is None or post.deleted:
            return done
        response = await client.delete(self._url(f"/posts/{post.id}.json"), headers=self._headers())
        outcome = _judged(response, now)
        if outcome.delivered:
            return done
        if outcome.permanent:  # e.g. deleted meanwhile: what matters is whether the post is deleted now
            again, failed = await self._state(client, topic, number, now)
            if failed is not None:
                return failed
            if again is None or again.deleted:
                return done
        return outcome


# ---- the connector ---------------------------------------------------------------------------------------------


class DiscourseConnector:
    """Kind `discourse`: settings `base_url`, `api_username`, `reject_as` (`hide` or `delete`); credentials
    `api_key`."""

    kind = KIND
    adapter = DiscourseAdapter()

    def check(self, settings: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        """Known keys only, of the right shapes."""
        refuse_unknown(
            "Discourse",
            settings,
            credentials,
            setting_keys={"base_url", "api_username", "reject_as"},
            credential_keys={"api_key"},
        )
        base = settings.get("base_url")
        if base is not None and not (
            isinstance(base, str) and base.startswith(("http://", "https://")) and len(base) <= 2000
        ):
            raise InvalidPayload("`base_url` must be the Discourse site's http(s) address.")
        if settings.get("reject_as", "hide") not in REJECT_AS:
            raise InvalidPayload("`reject_as` must be `hide` or `delete`.")
        user = settings.get("api_username")
        if user is not None and not (isinstance(user, str) and _USERNAME.match(user)):
            raise InvalidPayload("`api_username` must be a Discourse username (letters, digits, `_`, `.`, `-`).")
        key = credentials.get("api_key")
        if key is not None and not (isinstance(key, str) and 0 < len(key) <= 200 and key.isascii()):
            raise InvalidPayload("`api_key` must be a non-empty string (the key Discourse shows once).")

    def _forum(self, source: Source) -> DiscourseForum | None:
        settings = source.settings or {}
        credentials = credentials_of(source)
        base, user, key = settings.get("base_url"), settings.get("api_username"), credentials.get("api_key")
        if not (base and user and key):
            return None
        return DiscourseForum(
            base_url=base, api_username=user, api_key=key, reject_as=settings.get("reject_as", "hide")
        )

    def capabilities(self, source: Source) -> list[Capability]:
        """Receiving always; replies and moderation once the site, the API user and the key are set."""
        if self._forum(source) is None:
            return ["receive"]
        return ["receive", "reply", "hold", "release", "reject"]

    def endpoint(self, source: Source) -> DiscourseForum | None:
        """The forum's REST API, or None before it is configured."""
        return self._forum(source)
