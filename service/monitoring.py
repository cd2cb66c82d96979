"""What `/metrics` shows: the counters of `service.metrics` and the gauges read from the tables at scrape time."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import metrics
from service.models import Job, JobState
from service.outbound.tables import DeliveryState, OutboundMessage

GAUGED_JOB_STATES = (JobState.pending, JobState.running, JobState.dead)


async def _counts(session: AsyncSession, stmt: sa.Select[str, int]) -> dict[str, int]:
    return {str(key): int(count) for key, count in (await session.execute(stmt)).all()}


async def scrape(session: AsyncSession, *, now: datetime) -> bytes:
    """The Prometheus text exposition at `now`: three grouped queries on indexed columns, then every metric."""
    jobs = await _counts(
        session,
        sa.select(col(Job.state), sa.func.count())
        .where(col(Job.state).in_([s.value for s in GAUGED_JOB_STATES]))
        .group_by(col(Job.state)),
    )
    # Due and not taken: a job waiting out its retry backoff is not late (the (state, available_at) index).
    oldest = (
        await session.execute(
            sa.select(sa.func.min(col(Job.available_at))).where(
                col(Job.state) == JobState.pending.value, col(Job.available_at) <= now
            )
        )
    ).scalar_one_or_none()
    outbound = await _counts(
        session, sa.select(col(OutboundMessage.state), sa.func.count()).group_by(col(OutboundMessage.state))
    )
    gauges = metrics.table_families(
        jobs={s.value: jobs.get(s.value, 0) for s in GAUGED_JOB_STATES},
        oldest_pending_age=max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0,
        outbound={s.value: outbound.get(s.value, 0) for s in DeliveryState},
    )
    return metrics.exposition(gauges)
