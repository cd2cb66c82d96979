"""The organisation's own topic taxonomy, and responders' corrections of labels."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from service.models.base import ts_column, utcnow

MAX_EXAMPLES = 200
MAX_EXAMPLE_LENGTH = 2000


class Topic(SQLModel, table=True):
    """A topic comments can be about, described in the organisation's own words, with example comments."""

    __tablename__ = "topic"

    id: int | None = SQLField(default=None, primary_key=True)
    name: str = SQLField(sa_column=sa.Column(sa.String(100), nullable=False, index=True))
    description: str | None = SQLField(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    examples: list[str] = SQLField(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    deleted_at: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))


class Label(SQLModel, table=True):
    """A responder's correction of what the classifiers said about a comment (kept as a training example)."""

    __tablename__ = "label"

    id: int | None = SQLField(default=None, primary_key=True)
    comment_id: uuid.UUID = SQLField(foreign_key="comment.id", index=True)
    topic: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(100), nullable=True))
    sentiment: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    flags: dict[str, Any] | None = SQLField(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    actor: str = SQLField(sa_column=sa.Column(sa.String(200), nullable=False))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column(index=True))
