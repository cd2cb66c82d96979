"""The SLA clock: escalate items past their due time, remind owners before it, return expired claims.

Run by an arq cron (unique) in the scaled deployment and by a timer in the embedded one. Each step is a
conditional update keyed by the item's state, so two sweeps racing (or a sweep run twice) act once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import metrics
from service.database import SessionFactory, dialect_name, transaction
from service.items import transitions as items
from service.models import ItemState, Member, QueueItem, Team
from service.settings import Settings

log = logging.getLogger(__name__)

SLA_ACTOR = "sla"
BATCH = 500


@dataclass(slots=True)
class SweepReport:
    """What one sweep did."""

    escalated: int = 0
    reminded: int = 0
    claims_expired: int = 0


async def _due(session: AsyncSession, condition: sa.ColumnElement[bool]) -> list[QueueItem]:
    stmt = sa.select(QueueItem).where(condition).order_by(col(QueueItem.due_at)).limit(BATCH)
    if dialect_name(session) == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    return list((await session.execute(stmt)).scalars())


async def _escalation_owner(session: AsyncSession, item: QueueItem, settings: Settings) -> str | None:
    """The team lead, else the configured escalation member, else nobody new (the item keeps its owner)."""
    if item.team_id is not None:
        team = await session.get(Team, item.team_id)
        if team is not None and team.deleted_at is None and team.lead_id:
            return team.lead_id
    if settings.escalation_member:
        member = await session.get(Member, settings.escalation_member)
        if member is not None and member.deleted_at is None:
            return member.id
    return None


async def sweep_session(session: AsyncSession, *, settings: Settings, now: datetime) -> SweepReport:
    """One pass of the SLA clock in the caller's transaction."""
    report = SweepReport()
    late = await _due(
        session,
        sa.and_(
            col(QueueItem.state).in_([ItemState.open.value, ItemState.claimed.value]),
            col(QueueItem.due_at) <= now,
            col(QueueItem.escalated_at).is_(None),
        ),
    )
    for item in late:
        owner = await _escalation_owner(session, item, settings)
        await items.transition(
            session, item, actor=SLA_ACTOR, action="escalated", now=now, state=ItemState.escalated,
            note=f"SLA of {item.sla_seconds} s passed at {item.due_at.isoformat() if item.due_at else '?'}",
            escalated_at=now, member_id=owner or item.member_id, claimed_by=None, claim_expires_at=None,
        )  # fmt: skip
        report.escalated += 1
    if settings.sla_reminder_minutes > 0:
        soon = await _due(
            session,
            sa.and_(
                col(QueueItem.state).in_([ItemState.open.value, ItemState.claimed.value]),
                col(QueueItem.due_at) > now,
                col(QueueItem.due_at) <= now + timedelta(minutes=settings.sla_reminder_minutes),
                col(QueueItem.reminded_at).is_(None),
            ),
        )
        for item in soon:
            # The notifications work turns this event into a message to the owner.
            await items.transition(session, item, actor=SLA_ACTOR, action="sla_reminder", now=now, reminded_at=now)
            report.reminded += 1
    expired = await _due(
        session,
        sa.and_(col(QueueItem.state) == ItemState.claimed.value, col(QueueItem.claim_expires_at) <= now),
    )
    for item in expired:
        back = ItemState.escalated if item.escalated_at is not None else ItemState.open
        await items.transition(
            session, item, actor=SLA_ACTOR, action="claim_expired", now=now, state=back, claimed_by=None,
            claim_expires_at=None,
        )  # fmt: skip
        report.claims_expired += 1
    return report


async def sweep(factory: SessionFactory, *, settings: Settings, now: datetime) -> SweepReport:
    """One pass of the SLA clock in its own transaction."""
    async with transaction(factory) as session:
        report = await sweep_session(session, settings=settings, now=now)
    metrics.SLA_BREACHES.inc(report.escalated)  # counted once committed
    if report.escalated or report.reminded or report.claims_expired:
        log.info(
            "SLA sweep: %d escalated, %d reminded, %d claims expired",
            report.escalated, report.reminded, report.claims_expired,
        )  # fmt: skip
    return report
