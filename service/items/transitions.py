"""Queue item transitions: every change of state or owner goes through `transition` (or `created`), which audits
it and writes what it means outward: the platform's moderation and resolution events (`service.outbound.platform`)
and the notifications owners and moderators subscribed to (`service.notifications.events`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.models import ItemState, QueueItem
from service.models.queue import WAITING_STATES
from service.notifications import events as notify
from service.outbound import platform

_AUDITED = (
    "state", "member_id", "team_id", "claimed_by", "priority", "resolution", "snoozed_until", "due_at", "no_reply",
    "tags", "rule_id",
)  # fmt: skip


def audit_view(item: QueueItem) -> dict[str, Any]:
    """What the audit trail records of an item (never the comment's text)."""
    view: dict[str, Any] = {}
    for name in _AUDITED:
        value = getattr(item, name)
        view[name] = value.isoformat() if isinstance(value, datetime) else value
    return view


async def transition(
    session: AsyncSession,
    item: QueueItem,
    *,
    actor: str,
    action: str,
    now: datetime,
    state: ItemState | None = None,
    note: str | None = None,
    **changes: Any,
) -> QueueItem:
    """Apply `state` and `changes` to the item, flush, and append an audit event with before and after."""
    before = audit_view(item)
    if state is not None:
        item.state = state
    for name, value in changes.items():
        if not hasattr(item, name):
            raise AttributeError(f"queue_item has no field {name!r}")
        setattr(item, name, value)
    item.updated_at = now
    session.add(item)
    await session.flush()
    after = audit_view(item)
    if note:
        after["note"] = note
    await audit.record(
        session, actor=actor, action=f"queue_item.{action}", target_type="queue_item", target_id=str(item.id),
        now=now, before=before, after=after,
    )  # fmt: skip
    await platform.item_changed(session, item, before_state=before["state"], actor=actor, now=now)
    await notify.item_changed(session, item, action=action, before=before, now=now)
    return item


async def created(session: AsyncSession, item: QueueItem, *, actor: str, now: datetime) -> None:
    """Audit the creation of an item (its first state and owner, and the rule that placed it)."""
    await audit.record(
        session, actor=actor, action="queue_item.created", target_type="queue_item", target_id=str(item.id),
        now=now, after={**audit_view(item), "rule_id": item.rule_id, "ruleset_version": item.ruleset_version},
    )  # fmt: skip
    await platform.item_changed(session, item, before_state=None, actor=actor, now=now)
    await notify.item_changed(session, item, action="created", before=None, now=now)


def restart_clock(item: QueueItem, now: datetime) -> dict[str, Any]:
    """A reopened item gets a fresh deadline (its SLA from now), a fresh reminder, and is no longer escalated."""
    from service.models.queue import NO_DUE

    due = now + timedelta(seconds=item.sla_seconds) if item.sla_seconds is not None else None
    return {"due_at": due, "sort_due": due or NO_DUE, "reminded_at": None, "escalated_at": None}


def is_waiting(item: QueueItem) -> bool:
    """Still needs someone (held, open, claimed or escalated)."""
    return item.state in WAITING_STATES


async def unassign(
    session: AsyncSession, *, actor: str, now: datetime, reason: str, member_id: str | None = None,
    team_id: str | None = None,
) -> int:  # fmt: skip
    """Take the waiting items of a member (owned or claimed) or of a team away from them; returns how many.

    A retired member's items go to their team's pool (claims end); a retired team's items to the unassigned pool.
    """
    if member_id is not None:
        who = sa.or_(col(QueueItem.member_id) == member_id, col(QueueItem.claimed_by) == member_id)
    elif team_id is not None:
        who = col(QueueItem.team_id) == team_id
    else:
        raise ValueError("name a member or a team")
    rows = (
        await session.execute(
            sa.select(QueueItem)
            .where(who, col(QueueItem.state).in_([s.value for s in WAITING_STATES]))
            .order_by(col(QueueItem.id))
            .with_for_update()
        )
    ).scalars()
    count = 0
    for item in rows:
        changes: dict[str, Any] = {}
        if member_id is not None:
            if item.member_id == member_id:
                changes["member_id"] = None
            if item.claimed_by == member_id:
                changes.update(claimed_by=None, claim_expires_at=None)
        else:
            changes["team_id"] = None
        state = ItemState.open if item.state == ItemState.claimed and "claimed_by" in changes else None
        await transition(session, item, actor=actor, action="unassigned", now=now, state=state, note=reason, **changes)
        count += 1
    return count
