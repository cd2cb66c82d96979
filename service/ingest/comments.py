"""Read use cases over stored comments and their processing (admin views)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.classification.classifier import ClassificationPublic
from service.errors import NotFound
from service.models import Comment, CommentAnalysis, CommentVersion, Job, JobState, Source, Thread

ProcessingState = Literal["received", "processing", "processed", "dead", "deleted"]


class PiiSpanPublic(BaseModel):
    """Personal data found in the body: its kind and character offsets (end exclusive)."""

    kind: str
    start: int
    end: int


class ThreadPublic(BaseModel):
    """The story or topic a comment was posted under."""

    id: str
    title: str | None
    url: str | None
    kind: str | None
    channel: str | None
    author_id: str | None
    author_name: str | None


class ProcessingPublic(BaseModel):
    """Where a comment is in background processing."""

    state: ProcessingState
    job_id: uuid.UUID | None
    attempts: int
    last_error: str | None
    received_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue_seconds: float | None = Field(description="From receipt until processing last started.")


class AnalysisPublic(BaseModel):
    """What processing found for the comment's current version."""

    comment_version: int
    model_version: str
    embedding_dim: int
    pii: list[PiiSpanPublic]
    duration_ms: float
    processed_at: datetime


class CommentPublic(BaseModel):
    """A comment as admins see it."""

    id: uuid.UUID
    source: str
    external_id: str
    thread: ThreadPublic | None
    parent_id: str | None
    author_id: str | None
    author_name: str | None
    author_department: str | None
    body: str
    version: int
    versions: int
    posted_at: datetime | None
    edited_at: datetime | None
    received_at: datetime
    deleted_at: datetime | None
    processing: ProcessingPublic
    analysis: AnalysisPublic | None
    classification: ClassificationPublic | None = Field(
        description="What the classifiers said about the current version (the same shape as POST /v1/classify)."
    )


_STATE_OF_JOB: dict[str, ProcessingState] = {
    JobState.pending: "received",
    JobState.cancelled: "received",
    JobState.running: "processing",
    JobState.done: "processed",
    JobState.dead: "dead",
}


def processing_state(comment: Comment, job: Job | None) -> ProcessingState:
    """The comment's processing state, from its newest job."""
    if comment.deleted_at is not None:
        return "deleted"
    return "received" if job is None else _STATE_OF_JOB[job.state]


async def read(session: AsyncSession, *, comment_id: uuid.UUID) -> CommentPublic:
    """One comment with its thread, processing state and findings."""
    comment = await session.get(Comment, comment_id)
    if comment is None:
        raise NotFound(f"There is no comment {comment_id}.")
    source = await session.get_one(Source, comment.source_id)
    thread = await session.get(Thread, comment.thread_id) if comment.thread_id is not None else None
    job = (
        await session.execute(
            sa.select(Job).where(col(Job.comment_id) == comment_id).order_by(col(Job.created_at).desc()).limit(1)
        )
    ).scalar_one_or_none()
    analysis = await session.get(CommentAnalysis, comment_id)
    versions = (
        await session.execute(sa.select(sa.func.count()).where(col(CommentVersion.comment_id) == comment_id))
    ).scalar_one()
    return CommentPublic(
        id=comment.id,
        source=source.slug,
        external_id=comment.external_id,
        thread=None
        if thread is None
        else ThreadPublic(
            id=thread.external_id,
            title=thread.title,
            url=thread.url,
            kind=thread.kind,
            channel=thread.channel,
            author_id=thread.author_external_id,
            author_name=thread.author_name,
        ),
        parent_id=comment.parent_external_id,
        author_id=comment.author_external_id,
        author_name=comment.author_name,
        author_department=comment.author_department,
        body=comment.body,
        version=comment.version,
        versions=versions,
        posted_at=comment.posted_at,
        edited_at=comment.edited_at,
        received_at=comment.received_at,
        deleted_at=comment.deleted_at,
        processing=ProcessingPublic(
            state=processing_state(comment, job),
            job_id=job.id if job else None,
            attempts=job.attempts if job else 0,
            last_error=job.last_error if job else None,
            received_at=comment.received_at,
            started_at=job.started_at if job else None,
            finished_at=job.finished_at if job else None,
            queue_seconds=(job.started_at - job.created_at).total_seconds() if job and job.started_at else None,
        ),
        analysis=None
        if analysis is None
        else AnalysisPublic(
            comment_version=analysis.comment_version,
            model_version=analysis.model_version,
            embedding_dim=len(analysis.embedding) // 4,
            pii=[PiiSpanPublic(**p) for p in analysis.pii],
            duration_ms=analysis.duration_ms,
            processed_at=analysis.processed_at,
        ),
        classification=None
        if analysis is None or analysis.classification is None
        else ClassificationPublic.model_validate(analysis.classification),
    )
