"""Writing to the outbox: `emit` adds a message in the caller's transaction; after commit its id is handed over.

The hand-off is a callback the composition root installs on the session factory (`on_commit`): the in-process
runner wakes up, or the ids go to Redis for the workers. It is only a shortcut: the delivery sweep finds every
due message in the table, so a hand-off lost with a crash or a Redis outage only delays a message.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.database import SessionFactory, insert_ignore, table
from service.outbound.tables import DeliveryState, MessageKind, OutboundMessage

log = logging.getLogger(__name__)

_PENDING: Final = "outbound.pending_ids"
_WAKE: Final = "outbound.wake"

Wake = Callable[[Sequence[int]], None]


def key_for(cause: str) -> str:
    """The idempotency key of a cause: stable, so one cause can never carry two keys."""
    digest = hashlib.sha256(cause.encode()).digest()
    return "msg_" + base64.b32encode(digest).decode().rstrip("=").lower()[:32]


async def emit(
    session: AsyncSession,
    *,
    kind: MessageKind,
    target: str,
    cause: str,
    payload: dict[str, Any],
    now: datetime,
    ordering_key: str | None = None,
    comment_id: uuid.UUID | None = None,
    item_id: uuid.UUID | None = None,
    reply_id: uuid.UUID | None = None,
) -> int | None:
    """Add a message to the outbox in the caller's transaction; None if this cause already has its message."""
    values = {
        "key": key_for(cause),
        "cause": cause[:300],
        "kind": kind.value,
        "target": target,
        "ordering_key": ordering_key,
        "comment_id": comment_id,
        "item_id": item_id,
        "reply_id": reply_id,
        "payload": payload,
        "state": DeliveryState.pending.value,
        "attempts": 0,
        "available_at": now,
        "created_at": now,
        "updated_at": now,
    }
    outbox = table(OutboundMessage)
    new_id: int | None = await insert_ignore(session, outbox, values, conflict_columns=["key"], returning=outbox.c.id)
    if new_id is not None:
        hand_over(session, [new_id])
    return new_id


def hand_over(session: AsyncSession, ids: Sequence[int]) -> None:
    """Hand these messages to the runner once the session's transaction commits (forgotten on rollback)."""
    session.info.setdefault(_PENDING, []).extend(ids)


def on_commit(factory: SessionFactory, wake: Wake) -> None:
    """Call `wake(ids)` with the ids of the messages a session of `factory` wrote, once its transaction commits."""
    factory.configure(info={_WAKE: wake})


@sa.event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING, None)
    wake: Wake | None = session.info.get(_WAKE)
    if ids and wake is not None:
        try:
            wake(ids)
        except Exception:  # the sweep delivers them anyway
            log.exception("could not hand %d outbound messages to the runner", len(ids))


@sa.event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)  # those rows do not exist
