"""The outbox (job rows: the source of truth for background work) and remembered webhook deliveries."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column, utcnow


class JobState(StrEnum):
    """Life of a job row. pending -> running -> done | (pending again, with backoff) | dead; or cancelled."""

    pending = "pending"
    running = "running"
    done = "done"
    dead = "dead"
    cancelled = "cancelled"


OPEN_JOB_STATES = (JobState.pending, JobState.running)


class JobKind(StrEnum):
    """What a job does; the name of the function that runs it."""

    process_comment = "process_comment"


class Job(SQLModel, table=True):
    """A unit of background work, written in the same transaction as the change that caused it."""

    __tablename__ = "job"
    __table_args__ = (sa.Index("ix_job_state_available", "state", "available_at"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    kind: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    comment_id: uuid.UUID = Field(foreign_key="comment.id", index=True)
    comment_version: int
    state: str = Field(default=JobState.pending, sa_column=sa.Column(sa.String(16), nullable=False))
    attempts: int = 0
    max_attempts: int = 5
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    available_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    enqueued_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    started_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    # The X-Request-ID of the request that wrote the row (None outside a request): the job's log lines carry it.
    request_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(128), nullable=True))


class Delivery(SQLModel, table=True):
    """A webhook id seen from a source, kept for de-duplication (pruned after the retention period)."""

    __tablename__ = "delivery"
    __table_args__ = (sa.UniqueConstraint("source_id", "webhook_id", name="uq_delivery_source_webhook"),)

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="source.id", index=True)
    webhook_id: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    event_type: str = Field(sa_column=sa.Column(sa.String(50), nullable=False))
    comment_id: uuid.UUID | None = Field(default=None)
    outcome: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    received_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(index=True))
