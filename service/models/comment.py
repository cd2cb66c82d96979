"""Threads (stories, forum topics), comments with their edit history, and what processing found."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column, utcnow


class Thread(SQLModel, table=True):
    """The story or forum topic a comment was posted under."""

    __tablename__ = "thread"
    __table_args__ = (sa.UniqueConstraint("source_id", "external_id", name="uq_thread_source_external"),)

    id: int | None = Field(default=None, primary_key=True)
    source_id: int = Field(foreign_key="source.id", index=True)
    external_id: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    title: str | None = Field(default=None, sa_column=sa.Column(sa.String(500), nullable=True))
    url: str | None = Field(default=None, sa_column=sa.Column(sa.String(2000), nullable=True))
    kind: str | None = Field(default=None, sa_column=sa.Column(sa.String(50), nullable=True))
    channel: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True, index=True))
    author_external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    author_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    author_email: str | None = Field(default=None, sa_column=sa.Column(sa.String(320), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())


class Comment(SQLModel, table=True):
    """One comment or reply, as last seen; earlier bodies live in comment_version."""

    __tablename__ = "comment"
    __table_args__ = (sa.UniqueConstraint("source_id", "external_id", name="uq_comment_source_external"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    source_id: int = Field(foreign_key="source.id", index=True)
    thread_id: int | None = Field(default=None, foreign_key="thread.id", index=True)
    external_id: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    parent_external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    author_external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    author_name: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    author_department: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    body: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False))
    version: int = Field(default=1)
    posted_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    edited_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    received_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(index=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    deleted_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    # Set when this comment is a reply Switchboard posted (the platform echoed it back): it gets no queue item.
    echo_of_reply_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True))


class CommentVersion(SQLModel, table=True):
    """Every body a comment has had, oldest first (version 1 is the body it was created with)."""

    __tablename__ = "comment_version"
    __table_args__ = (sa.UniqueConstraint("comment_id", "version", name="uq_comment_version"),)

    id: int | None = Field(default=None, primary_key=True)
    comment_id: uuid.UUID = Field(foreign_key="comment.id", index=True)
    version: int
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    edited_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    received_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())


class CommentAnalysis(SQLModel, table=True):
    """What processing found for a comment's current version; one row per comment, upserted."""

    __tablename__ = "comment_analysis"

    comment_id: uuid.UUID = Field(foreign_key="comment.id", primary_key=True)
    comment_version: int
    model_version: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    embedding: bytes = Field(sa_column=sa.Column(sa.LargeBinary, nullable=False))  # float32, little-endian
    pii: list[dict[str, Any]] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    # Head results, language and topic with its explanation, exactly as POST /v1/classify returns them.
    classification: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    duration_ms: float = 0.0
    processed_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
