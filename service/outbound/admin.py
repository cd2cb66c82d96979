"""Admin use cases over the outbox: list deliveries (e.g. the dead ones) and retry one."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.errors import InvalidState, NotFound
from service.models import Reply, ReplyDelivery
from service.models.base import to_schema
from service.outbound import outbox
from service.outbound.tables import DeliveryState, MessageKind, OutboundMessage
from service.pagination import ColumnInt, decode_cursor, encode_cursor

MAX_PAGE = 500
RETRYABLE = (DeliveryState.dead, DeliveryState.failed)
# A page's cursor: the last delivery's id (newest first).
_CURSOR: TypeAdapter[int] = TypeAdapter(ColumnInt)


class DeliveryPublic(BaseModel):
    """An outbound message as admins see it (its payload is not shown: it may hold a reply's text)."""

    id: int
    key: str = Field(description="The idempotency key, sent as `webhook-id` (or Idempotency-Key) on every attempt.")
    kind: MessageKind
    target: str = Field(description="`source:<slug>` (a platform's callback) or `channel:<id>` (notifications).")
    state: DeliveryState
    attempts: int
    max_attempts: int
    comment_id: uuid.UUID | None
    item_id: uuid.UUID | None
    reply_id: uuid.UUID | None
    external_id: str | None = Field(description="The id the receiver gave what was sent (a reply on the platform).")
    last_status: int | None = Field(description="The receiver's last HTTP (or SMTP) status.")
    last_error: str | None
    created_at: datetime
    available_at: datetime = Field(description="When the next attempt is due (pending and failed deliveries).")
    last_attempt_at: datetime | None
    delivered_at: datetime | None


class DeliveryPage(BaseModel):
    """One page of deliveries, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[DeliveryPublic]
    next_cursor: str | None


class DeliveryFilter(BaseModel):
    """Which deliveries to list."""

    state: DeliveryState | None = None
    kind: MessageKind | None = None
    target: str | None = Field(None, max_length=100)
    comment: uuid.UUID | None = None


def _public(row: OutboundMessage, max_attempts: int) -> DeliveryPublic:
    return to_schema(DeliveryPublic, row, max_attempts=max_attempts)


async def list_deliveries(
    session: AsyncSession, *, filters: DeliveryFilter, limit: int, cursor: str | None, max_attempts: int
) -> DeliveryPage:
    """Deliveries newest first, filtered by state, kind, target and comment."""
    stmt = sa.select(OutboundMessage).order_by(col(OutboundMessage.id).desc()).limit(min(limit, MAX_PAGE) + 1)
    conditions: list[Any] = []
    if filters.state is not None:
        conditions.append(col(OutboundMessage.state) == filters.state.value)
    if filters.kind is not None:
        conditions.append(col(OutboundMessage.kind) == filters.kind.value)
    if filters.target is not None:
        conditions.append(col(OutboundMessage.target) == filters.target)
    if filters.comment is not None:
        conditions.append(col(OutboundMessage.comment_id) == filters.comment)
    if cursor is not None:
        conditions.append(col(OutboundMessage.id) < decode_cursor(_CURSOR, cursor))
    rows = list((await session.execute(stmt.where(*conditions))).scalars())
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(_CURSOR, page[-1].id) if more and page[-1].id is not None else None
    return DeliveryPage(items=[_public(r, max_attempts) for r in page], next_cursor=next_cursor)


async def retry(
    session: AsyncSession, *, delivery_id: int, actor: str, now: datetime, max_attempts: int
) -> DeliveryPublic:
    """Give a dead (or failing) delivery a fresh set of attempts, due now, with the same idempotency key."""
    row = (
        await session.execute(
            sa.select(OutboundMessage).where(col(OutboundMessage.id) == delivery_id).with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"There is no delivery {delivery_id}.")
    if row.state not in RETRYABLE:
        raise InvalidState(f"Only dead or failed deliveries can be retried; this one is {row.state}.")
    before = {"state": row.state, "attempts": row.attempts}
    row.state = DeliveryState.pending.value
    row.attempts = 0
    row.available_at = row.updated_at = now
    row.started_at = None
    session.add(row)
    if row.reply_id is not None:
        reply = await session.get(Reply, row.reply_id)
        if reply is not None:
            reply.delivery_state = ReplyDelivery.pending.value
            session.add(reply)
    await session.flush()
    outbox.hand_over(session, [delivery_id])
    await audit.record(
        session, now=now, actor=actor, action="delivery.retried", target_type="delivery", target_id=str(row.id),
        before=before, after={"state": row.state, "attempts": 0},
    )  # fmt: skip
    return _public(row, max_attempts)
