"""The responder queue, acted on: claim, claim-next, release, answer, resolve, reassign, snooze, approve.

Every action is on an item the caller sees (`service.queue.viewer`). Claims are conditional UPDATEs, so exactly
one of any number of concurrent callers wins; claim-next skips rows another transaction has locked
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises writers).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.auth.keys import Principal
from service.database import dialect_name
from service.directory import members as directory
from service.errors import InvalidPayload, InvalidState, ItemAlreadyClaimed, NotFound
from service.inputs import UtcDatetime
from service.items import transitions as items
from service.models import (
    ItemState,
    QueueItem,
    Reply,
    ReplyDelivery,
    Resolution,
    Team,
    changes,
)
from service.outbound import platform
from service.queue.viewer import Scope, Viewer, visible
from service.queue.views import QueueItemPublic, public_of
from service.routing import dispatch
from service.settings import Settings

MAX_SNOOZE = timedelta(days=30)
CLAIMABLE = (ItemState.open, ItemState.escalated)
ResolveReason = Literal["answered_on_platform", "no_reply_needed", "duplicate", "spam", "out_of_scope"]


# --- schemas -----------------------------------------------------------------------------------------------


class AnswerIn(BaseModel):
    """Body of POST /v1/queue/{id}/answer."""

    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=10_000, description="The reply, posted back to the platform.")


class ResolveIn(BaseModel):
    """Body of POST /v1/queue/{id}/resolve."""

    model_config = ConfigDict(extra="forbid")

    reason: ResolveReason
    note: str | None = Field(None, max_length=1000)


class ReassignIn(BaseModel):
    """Body of POST /v1/queue/{id}/reassign: a member, a team, or a member within a team."""

    model_config = ConfigDict(extra="forbid")

    member: str | None = Field(None, max_length=64)
    team: str | None = Field(None, max_length=64)
    note: str | None = Field(None, max_length=1000)


class SnoozeIn(BaseModel):
    """Body of POST /v1/queue/{id}/snooze."""

    model_config = ConfigDict(extra="forbid")

    until: UtcDatetime = Field(description="Hidden from the queue and claim-next until then (at most 30 days).")


# --- acting ------------------------------------------------------------------------------------------------


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    """Open or escalated, or claimed with a lease that ran out."""
    return sa.or_(
        col(QueueItem.state).in_([s.value for s in CLAIMABLE]),
        sa.and_(col(QueueItem.state) == ItemState.claimed.value, col(QueueItem.claim_expires_at) <= now),
    )


async def _take(
    session: AsyncSession, viewer: Viewer, item_id: uuid.UUID, *, now: datetime, lease: timedelta
) -> QueueItem | None:
    """The conditional UPDATE that decides a claim race: the item, or None if it was not claimable."""
    member = viewer.member_id
    stmt = (
        sa.update(QueueItem)
        .where(col(QueueItem.id) == item_id, _claimable(now))
        .values(
            state=ItemState.claimed.value,
            claimed_by=member,
            claim_expires_at=now + lease,
            snoozed_until=None,
            updated_at=now,
        )
        .returning(col(QueueItem.id))
    )
    if (await session.execute(stmt)).first() is None:
        return None
    changes.touch(session, items=[item_id])  # written outside the ORM
    item = await session.get(QueueItem, item_id, populate_existing=True)
    assert item is not None
    return item


def _not_claimable(item: QueueItem, viewer: Viewer) -> Exception:
    if item.state == ItemState.claimed.value:
        who = "You already hold" if item.claimed_by == viewer.member_id else f"{item.claimed_by} holds"
        return ItemAlreadyClaimed(f"{who} this item until {item.claim_expires_at}.", claimed_by=item.claimed_by)
    if item.state == ItemState.held.value:
        return InvalidState("The item is held for moderation; approve it first.")
    return InvalidState(f"The item is {item.state}; reopen it by reassigning it.")


async def _audit_claim(
    session: AsyncSession, item: QueueItem, viewer: Viewer, before: dict[str, Any], action: str, *, now: datetime
) -> None:
    await audit.record(
        session, actor=viewer.actor, action=f"queue_item.{action}", target_type="queue_item", target_id=str(item.id),
        now=now, before=before, after=items.audit_view(item),
    )  # fmt: skip


async def claim(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, settings: Settings, now: datetime
) -> QueueItemPublic:
    """Claim an item; exactly one concurrent caller wins, the others get 409 item_already_claimed."""
    viewer = await Viewer.of(session, principal)
    _needs_member(viewer, "claim")
    item = await visible(session, viewer, item_id)
    before = items.audit_view(item)
    taken = await _take(session, viewer, item_id, now=now, lease=timedelta(seconds=settings.claim_lease_seconds))
    if taken is None:
        await session.refresh(item)
        raise _not_claimable(item, viewer)
    await _audit_claim(session, taken, viewer, before, "claimed", now=now)
    return await public_of(session, taken, now)


async def claim_next(
    session: AsyncSession, *, principal: Principal, settings: Settings, now: datetime, scope: Scope = "all"
) -> QueueItemPublic | None:
    """Claim the most urgent claimable item in the caller's queues (None when there is none)."""
    viewer = await Viewer.of(session, principal)
    _needs_member(viewer, "claim")
    lease = timedelta(seconds=settings.claim_lease_seconds)
    candidates = (
        sa.select(col(QueueItem.id))
        .where(
            viewer.condition(scope),
            _claimable(now),
            sa.or_(col(QueueItem.snoozed_until).is_(None), col(QueueItem.snoozed_until) <= now),
        )
        .order_by(col(QueueItem.priority_rank), col(QueueItem.sort_due), col(QueueItem.id))
        .limit(8)
    )
    if dialect_name(session) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    for _ in range(5):  # another responder may win a candidate between our read and our update
        ids = list((await session.execute(candidates)).scalars())
        if not ids:
            return None
        for item_id in ids:
            item = await session.get(QueueItem, item_id)
            assert item is not None
            before = items.audit_view(item)
            taken = await _take(session, viewer, item_id, now=now, lease=lease)
            if taken is not None:
                await _audit_claim(session, taken, viewer, before, "claimed", now=now)
                return await public_of(session, taken, now)
    return None


def _needs_member(viewer: Viewer, verb: str) -> None:
    if viewer.member_id is None:
        raise InvalidState(f"Only a key bound to a member can {verb} items (create one with --member).")


def _check_holder(item: QueueItem, viewer: Viewer, now: datetime) -> None:
    """Someone else's live claim blocks acting on the item (admins may override)."""
    held_by_other = (
        item.state == ItemState.claimed.value
        and item.claimed_by != viewer.member_id
        and item.claim_expires_at is not None
        and item.claim_expires_at > now
    )
    if held_by_other and not viewer.is_admin:
        raise ItemAlreadyClaimed(f"{item.claimed_by} holds this item.", claimed_by=item.claimed_by)


async def release(session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, now: datetime) -> QueueItemPublic:
    """Give a claimed item back to the queue."""
    viewer = await Viewer.of(session, principal)
    item = await visible(session, viewer, item_id, lock=True)
    if item.state != ItemState.claimed.value:
        raise InvalidState(f"The item is {item.state}, not claimed.")
    _check_holder(item, viewer, now)
    back = ItemState.escalated if item.escalated_at is not None else ItemState.open
    await items.transition(
        session, item, actor=viewer.actor, action="released", now=now, state=back, claimed_by=None,
        claim_expires_at=None,
    )  # fmt: skip
    return await public_of(session, item, now)


async def _acting_on(
    session: AsyncSession, principal: Principal, item_id: uuid.UUID, *, now: datetime, waiting: bool
) -> tuple[Viewer, QueueItem]:
    """The caller and the item they act on, locked: visible to them, not held by someone else, and (if
    `waiting`) not closed."""
    viewer = await Viewer.of(session, principal)
    item = await visible(session, viewer, item_id, lock=True)
    if waiting and not items.is_waiting(item):
        raise InvalidState(f"The item is already {item.state} ({item.resolution}).")
    _check_holder(item, viewer, now)
    return viewer, item


async def answer(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: AnswerIn, now: datetime
) -> QueueItemPublic:
    """Record a reply, queue it for the platform (`reply.created` to the source's callback) and mark the item
    answered."""
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=True)
    reply = Reply(item_id=item.id, comment_id=item.comment_id, member_id=viewer.member_id, actor=viewer.actor,
                  body=data.body, created_at=now)  # fmt: skip
    session.add(reply)
    await session.flush()
    await platform.reply_created(session, reply, item, now=now)
    # The first response is when the platform has the reply (set on delivery); a reply that goes nowhere (the
    # source has no callback URL) is one as soon as it is written.
    unsent = reply.delivery_state == ReplyDelivery.unsent.value
    await items.transition(
        session, item, actor=viewer.actor, action="answered", now=now, state=ItemState.answered,
        resolution=Resolution.answered.value, resolved_by=viewer.actor, resolved_at=now,
        answered_by=viewer.member_id or viewer.actor,
        first_response_at=(item.first_response_at or now) if unsent else item.first_response_at,
        claimed_by=None, claim_expires_at=None,
    )  # fmt: skip
    return await public_of(session, item, now)


async def resolve(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: ResolveIn, now: datetime
) -> QueueItemPublic:
    """Close an item with a reason (answered on the platform, no reply needed, duplicate, spam, out of scope)."""
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=True)
    answered = data.reason == Resolution.answered_on_platform.value
    await items.transition(
        session, item, actor=viewer.actor, action="resolved", now=now, state=ItemState.resolved, note=data.note,
        resolution=data.reason, resolved_by=viewer.actor, resolved_at=now, claimed_by=None, claim_expires_at=None,
        first_response_at=(item.first_response_at or now) if answered else item.first_response_at,
        answered_by=(viewer.member_id or viewer.actor) if answered else item.answered_by,
    )  # fmt: skip
    return await public_of(session, item, now)


async def reassign(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: ReassignIn, now: datetime
) -> QueueItemPublic:
    """Give an item to another member and/or team (it reopens if it was closed; the note is kept)."""
    if data.member is None and data.team is None:
        raise InvalidPayload("Name a member, a team, or both.")
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=False)
    if data.member is not None:
        await directory.get_member(session, data.member)
    if data.team is not None:
        team = await session.get(Team, data.team)
        if team is None or team.deleted_at is not None:
            raise NotFound(f"There is no team '{data.team}'.")
    if data.member is not None and data.team is None:
        member_teams = await directory.member_teams(session, data.member)
        team_id = item.team_id if item.team_id in member_teams else None
    else:
        team_id = data.team
    state = ItemState(item.state)
    reopened = state in (ItemState.answered, ItemState.resolved)
    if state == ItemState.claimed or reopened:
        state = ItemState.open
    await items.transition(
        session, item, actor=viewer.actor, action="reassigned", now=now, state=state, note=data.note,
        member_id=data.member, team_id=team_id, manually_assigned=True, claimed_by=None, claim_expires_at=None,
        resolution=None, resolved_at=None, resolved_by=None, **(items.restart_clock(item, now) if reopened else {}),
    )  # fmt: skip
    return await public_of(session, item, now)


async def snooze(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: SnoozeIn, now: datetime
) -> QueueItemPublic:
    """Hide an item from the queue until a time (its SLA keeps running)."""
    if data.until.tzinfo is None:
        raise InvalidPayload("Give `until` with a time zone (e.g. 2026-11-23T09:00:00Z).")
    if not now < data.until <= now + MAX_SNOOZE:
        raise InvalidPayload("`until` must be in the future and at most 30 days ahead.")
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=True)
    await items.transition(session, item, actor=viewer.actor, action="snoozed", now=now, snoozed_until=data.until)
    return await public_of(session, item, now)


async def approve(session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, now: datetime) -> QueueItemPublic:
    """Let an item held for moderation into the queue: to where the rules send it if it had not been held (the
    first matching rule that does not hold), its SLA counting from now."""
    viewer = await Viewer.of(session, principal)
    item = await visible(session, viewer, item_id, lock=True)
    if item.state != ItemState.held.value:
        raise InvalidState(f"The item is {item.state}, not held.")
    await dispatch.release(session, item, actor=viewer.actor, now=now)
    return await public_of(session, item, now)
