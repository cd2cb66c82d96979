"""Platform adapters: each verifies its platform's signature scheme and turns its payload into a CommentEvent.

Only Switchboard's own format (`standard`, signed with Standard Webhooks) exists so far; Discourse, Coral Talk
and WordPress adapters plug in here with the same two functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

EventAction = Literal["created", "updated", "deleted"]


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
