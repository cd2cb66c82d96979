"""What every platform connector is: inbound, an adapter that verifies the platform's signature and turns its
payload into a CommentEvent; outbound, an endpoint that carries Switchboard's replies and moderation decisions to the
platform; and the capabilities the platform allows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from service.errors import InvalidPayload

if TYPE_CHECKING:
    from service.connectors.http import Endpoint
    from service.models import Source

# "ignored": a verified delivery about no comment (a platform's ping, a forum topic's opening post): answered 2xx,
# nothing stored but the delivery and, if the event names one, its thread.
EventAction = Literal["created", "updated", "deleted", "ignored"]


@dataclass(frozen=True, slots=True)
class Person:
    """Someone on the platform (a comment's or a story's author)."""

    external_id: str | None
    name: str | None = None
    email: str | None = None
    department: str | None = None


@dataclass(frozen=True, slots=True)
class ThreadRef:
    """The story or forum topic a comment belongs to."""

    external_id: str
    title: str | None = None
    url: str | None = None
    kind: str | None = None
    channel: str | None = None
    author: Person | None = None


@dataclass(frozen=True, slots=True)
class CommentEvent:
    """One platform event about one comment, in Switchboard's terms."""

    action: EventAction
    event_type: str
    external_id: str
    thread: ThreadRef | None = None
    parent_external_id: str | None = None
    author: Person | None = None
    body: str | None = None
    posted_at: datetime | None = None
    edited_at: datetime | None = None
    # The id of the Switchboard reply this comment is, when the platform passes it back (echo recognition).
    reply_marker: str | None = None


class Adapter(Protocol):
    """What every platform adapter provides."""

    def verify(
        self,
        *,
        body: bytes,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        tolerance_seconds: int,
        now: datetime,
    ) -> str:
        """Check the signature over the raw body; return the delivery id; raise InvalidSignature."""
        ...

    def parse(self, body: bytes) -> CommentEvent:
        """Turn a verified body into a CommentEvent; raise InvalidPayload."""
        ...


# What Switchboard can do on a platform (a source's `capabilities`): receive its comments; post replies; hold,
# release and reject comments; tell it that an item was resolved.
Capability = Literal["receive", "reply", "hold", "release", "reject", "resolve"]
# The outbound event that needs each capability (the events of `service.outbound.platform`).
NEEDS: Mapping[str, Capability] = {
    "reply.created": "reply",
    "comment.held": "hold",
    "comment.released": "release",
    "comment.rejected": "reject",
    "item.resolved": "resolve",
}


class Connector(Protocol):
    """One platform: a source's `kind` selects it."""

    @property
    def kind(self) -> str:
        """The source kind it serves."""
        ...

    @property
    def adapter(self) -> Adapter:
        """Inbound: the platform's signature and payload."""
        ...

    def capabilities(self, source: Source) -> list[Capability]:
        """What Switchboard can do on this source's platform with its configuration."""
        ...

    def check(self, settings: Mapping[str, Any], credentials: Mapping[str, Any]) -> None:
        """Raise InvalidPayload if the source's platform settings or credentials are not usable."""
        ...

    def endpoint(self, source: Source) -> Endpoint | None:
        """The outbound endpoint of the source (credentials decrypted), or None if it cannot send anything."""
        ...


def credentials_of(source: Source) -> dict[str, Any]:
    """A source's platform credentials (the column type decrypts them)."""
    found: dict[str, Any] = json.loads(source.credentials or "{}")
    return found


def refuse_unknown(
    platform: str,
    settings: Mapping[str, Any],
    credentials: Mapping[str, Any],
    *,
    setting_keys: set[str],
    credential_keys: set[str],
) -> None:
    """InvalidPayload naming the settings and credentials a connector does not know."""
    unknown = sorted(set(settings) - setting_keys) + sorted(set(credentials) - credential_keys)
    if unknown:
        raise InvalidPayload(f"A {platform} source has no setting {', '.join(map(repr, unknown))}.")
