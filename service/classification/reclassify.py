"""After the taxonomy or a correction changes the topic model, recent comments are classified again.

This reuses the processing job (the same idempotent path as a new comment): one pending job per recent, live
comment that has no open job already, created in the transaction that changed the taxonomy and enqueued after it
commits. The window and the cap keep a change on a busy intranet from flooding the queue.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.models import OPEN_JOB_STATES, Comment, Job, JobKind, JobState
from service.settings import Settings


async def enqueue_recent(session: AsyncSession, *, settings: Settings, now: datetime) -> list[uuid.UUID]:
    """Create processing jobs for the comments of the last `reclassify_days`; returns the new job ids."""
    open_job = (
        sa.select(col(Job.id))
        .where(col(Job.comment_id) == col(Comment.id), col(Job.state).in_(OPEN_JOB_STATES))
        .exists()
    )
    rows = (
        await session.execute(
            sa.select(col(Comment.id), col(Comment.version))
            .where(
                col(Comment.deleted_at).is_(None),
                col(Comment.received_at) >= now - timedelta(days=settings.reclassify_days),
                ~open_job,
            )
            .order_by(col(Comment.received_at).desc())
            .limit(settings.reclassify_max_comments)
        )
    ).all()
    jobs = [
        Job(
            kind=JobKind.process_comment,
            comment_id=comment_id,
            comment_version=version,
            state=JobState.pending,
            max_attempts=settings.job_max_attempts,
            created_at=now,
            available_at=now,
            enqueued_at=now,
        )
        for comment_id, version in rows
    ]
    session.add_all(jobs)
    await session.flush()
    return [job.id for job in jobs]
