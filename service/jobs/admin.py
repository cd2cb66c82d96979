"""Admin use cases over the job table: list (e.g. the dead letters) and retry."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.errors import InvalidState, NotFound
from service.models import Job, JobState
from service.pagination import decode_cursor, encode_cursor

MAX_PAGE = 500
# A page's cursor: the last job's (created_at, id).
_CURSOR: TypeAdapter[tuple[datetime, uuid.UUID]] = TypeAdapter(tuple[AwareDatetime, uuid.UUID])


class JobPublic(BaseModel):
    """A job row as admins see it."""

    id: uuid.UUID
    kind: str
    comment_id: uuid.UUID
    comment_version: int
    state: JobState
    attempts: int
    max_attempts: int
    last_error: str | None
    created_at: datetime
    available_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobPage(BaseModel):
    """One page of jobs, newest first; pass `next_cursor` as `cursor` for the next page."""

    items: list[JobPublic]
    next_cursor: str | None


def _public(job: Job) -> JobPublic:
    return JobPublic.model_validate(job, from_attributes=True)


async def list_jobs(session: AsyncSession, *, state: JobState | None, limit: int, cursor: str | None) -> JobPage:
    """Jobs, newest first, optionally in one state."""
    stmt = sa.select(Job).order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(min(limit, MAX_PAGE) + 1)
    if state is not None:
        stmt = stmt.where(col(Job.state) == state)
    if cursor is not None:
        at, job_id = decode_cursor(_CURSOR, cursor)
        stmt = stmt.where(sa.tuple_(col(Job.created_at), col(Job.id)) < sa.tuple_(at, job_id))
    rows = list((await session.execute(stmt)).scalars())
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(_CURSOR, (page[-1].created_at, page[-1].id)) if more else None
    return JobPage(items=[_public(j) for j in page], next_cursor=next_cursor)


async def retry(
    session: AsyncSession, *, job_id: uuid.UUID, actor: str, now: datetime
) -> tuple[JobPublic, list[uuid.UUID]]:
    """Give a dead job a fresh set of attempts; returns it and the ids to enqueue after commit."""
    job = (await session.execute(sa.select(Job).where(col(Job.id) == job_id).with_for_update())).scalar_one_or_none()
    if job is None:
        raise NotFound(f"There is no job {job_id}.")
    if job.state != JobState.dead:
        raise InvalidState(f"Only dead jobs can be retried; this one is {job.state}.")
    job.state = JobState.pending
    job.attempts = 0
    job.available_at = job.enqueued_at = now
    job.finished_at = None
    await session.flush()
    await audit.record(
        session,
        now=now,
        actor=actor,
        action="job.retried",
        target_type="job",
        target_id=str(job.id),
        before={"state": JobState.dead},
        after={"state": JobState.pending},
    )
    return _public(job), [job.id]
