"""Kind `standard`: Switchboard's generic event format, signed with Standard Webhooks v1
(https://www.standardwebhooks.com), for any platform or bridge that speaks it.

Inbound, the generic format below. Outbound, Switchboard's own events (`service.outbound.platform`) POSTed to the
source's `callback_url`, signed with the source's signing secret: every capability once a callback URL is set.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from service.connectors.base import Capability, CommentEvent, Person, ThreadRef
from service.connectors.http import SignedWebhook
from service.errors import InvalidPayload, InvalidSignature
from service.inputs import InvalidJson, parse_json, to_utc
from service.models import Source
from service.signing import digest

MAX_WEBHOOK_ID_LENGTH = 200
MAX_TIMESTAMP_DIGITS = 12  # seconds since the epoch: 12 digits reach the year 33658


def _required_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if not value:
        raise InvalidSignature(f"The {name} header is missing.")
    return value


def verify(
    *, body: bytes, headers: Mapping[str, str], secrets: Sequence[str], tolerance_seconds: int, now: datetime
) -> str:
    """Verify a Standard Webhooks delivery over the raw body bytes; return its webhook-id.

    Total over its input: whatever the headers hold, the answer is the webhook-id or InvalidSignature.
    """
    webhook_id = _required_header(headers, "webhook-id")
    timestamp = _required_header(headers, "webhook-timestamp")
    signatures = _required_header(headers, "webhook-signature")
    if len(webhook_id) > MAX_WEBHOOK_ID_LENGTH:
        raise InvalidSignature("The webhook-id header is too long.")
    if not webhook_id.isascii() or not webhook_id.isprintable():
        raise InvalidSignature("The webhook-id header must be printable ASCII.")
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > MAX_TIMESTAMP_DIGITS:
        raise InvalidSignature("The webhook-timestamp header must be integer seconds since the epoch.")
    skew = int(timestamp) - int(now.timestamp())  # integers: no float overflow, whatever the digits
    if abs(skew) > tolerance_seconds:
        raise InvalidSignature(
            f"The webhook-timestamp is {abs(skew)} s {'ahead of' if skew > 0 else 'behind'} this server's "
            f"clock (tolerance {tolerance_seconds} s)."
        )
    expected = [digest(s, webhook_id=webhook_id, timestamp=timestamp, body=body) for s in secrets]
    matched = False
    for candidate in signatures.split(" "):
        version, _, encoded = candidate.partition(",")
        if version != "v1" or not encoded:
            continue
        try:
            given = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        # Compare against every secret without stopping early, so timing says nothing about which matched.
        for mac in expected:
            matched |= hmac.compare_digest(mac, given)
    if not matched:
        raise InvalidSignature("No v1 signature matches this body and the source's signing secret.")
    return webhook_id


UtcAware = Annotated[AwareDatetime, AfterValidator(to_utc)]
"""A platform timestamp: the offset is required, the value is normalised to UTC (or refused out of range)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PersonIn(_Strict):
    """A person on the platform."""

    id: str = Field(min_length=1, max_length=200)
    name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)
    department: str | None = Field(None, max_length=200)


class ThreadIn(_Strict):
    """The story or forum topic."""

    id: str = Field(min_length=1, max_length=200)
    title: str | None = Field(None, max_length=500)
    url: str | None = Field(None, max_length=2000)
    kind: str | None = Field(None, max_length=50, description="e.g. news, forum, page")
    channel: str | None = Field(None, max_length=200, description="e.g. news/facilities")
    author: PersonIn | None = None


class CommentDataIn(_Strict):
    """A comment as the platform knows it."""

    id: str = Field(min_length=1, max_length=200)
    thread: ThreadIn
    parent_id: str | None = Field(None, max_length=200, description="Set on replies: the comment replied to.")
    author: PersonIn | None = None
    body: str = Field(max_length=50_000)
    switchboard_reply_id: str | None = Field(
        None,
        max_length=64,
        description="Set when this comment is a reply Switchboard asked the platform to post: the `data.reply.id` of "
        "that reply.created event. Such a comment opens no queue item (the platform's reply id works too).",
    )
    created_at: UtcAware
    updated_at: UtcAware | None = Field(None, description="When the body was last edited on the platform.")


class DeletedDataIn(_Strict):
    """A deleted comment: only its id is needed."""

    id: str = Field(min_length=1, max_length=200)
    deleted_at: UtcAware | None = None


class CommentCreated(_Strict):
    type: Literal["comment.created"]
    data: CommentDataIn


class CommentUpdated(_Strict):
    type: Literal["comment.updated"]
    data: CommentDataIn


class CommentDeleted(_Strict):
    type: Literal["comment.deleted"]
    data: DeletedDataIn


StandardEvent = Annotated[CommentCreated | CommentUpdated | CommentDeleted, Field(discriminator="type")]
_EVENT = TypeAdapter[StandardEvent](StandardEvent)


def event_json_schema(ref_template: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON Schema of a generic-format body, and the definitions it refers to by `ref_template`."""
    schema = _EVENT.json_schema(ref_template=ref_template)
    return schema, schema.pop("$defs", {})


def _person(p: PersonIn | None) -> Person | None:
    return None if p is None else Person(external_id=p.id, name=p.name, email=p.email, department=p.department)


def parse(body: bytes) -> CommentEvent:
    """Validate a generic-format body (strict: unknown fields are errors) into a CommentEvent."""
    try:
        document = parse_json(body)
    except InvalidJson as exc:
        error = {"loc": list(exc.loc), "msg": exc.message, "type": exc.kind}  # [] is the whole body
        raise InvalidPayload(exc.message, errors=[error]) from None
    try:
        event = _EVENT.validate_python(document)
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]) or ["type"], "msg": e["msg"], "type": e["type"]}  # an empty loc: the tag
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise InvalidPayload("The event does not match the Switchboard event schema.", errors=errors) from None
    if isinstance(event, CommentDeleted):
        return CommentEvent(action="deleted", event_type=event.type, external_id=event.data.id)
    data = event.data
    thread = ThreadRef(
        external_id=data.thread.id,
        title=data.thread.title,
        url=data.thread.url,
        kind=data.thread.kind,
        channel=data.thread.channel,
        author=_person(data.thread.author),
    )
    return CommentEvent(
        action="created" if isinstance(event, CommentCreated) else "updated",
        event_type=event.type,
        external_id=data.id,
        thread=thread,
        parent_external_id=data.parent_id,
        author=_person(data.author),
        body=data.body,
        posted_at=data.created_at,
        edited_at=data.updated_at,
        reply_marker=data.switchboard_reply_id,
    )


class StandardAdapter:
    """Adapter for kind `standard`."""

    def verify(
        self,
        *,
        body: bytes,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        tolerance_seconds: int,
        now: datetime,
    ) -> str:
        """Standard Webhooks v1."""
        return verify(body=body, headers=headers, secrets=secrets, tolerance_seconds=tolerance_seconds, now=now)

    def parse(self, body: bytes) -> CommentEvent:
        """Switchboard's generic format."""
        return parse(body)


class StandardConnector:
    """Kind `standard`: no platform settings or credentials; the callback URL and the signing secret suffice."""

    kind = "standard"
    adapter = StandardAdapter()

    def check(self, settings: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        """Nothing to set."""
        if settings or credentials:
            raise InvalidPayload("A standard source takes no `settings` or `credentials` (only a `callback_url`).")

    def capabilities(self, source: Source) -> list[Capability]:
        """Everything once it has a callback URL; without one it only receives."""
        if not source.callback_url:
            return ["receive"]
        return ["receive", "reply", "hold", "release", "reject", "resolve"]

    def endpoint(self, source: Source) -> SignedWebhook | None:
        """The callback URL, signed with the source's secret."""
        return SignedWebhook(url=source.callback_url, secret=source.secret) if source.callback_url else None
