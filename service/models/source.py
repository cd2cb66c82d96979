"""Sources: the platforms that send comments, each with its own signing secret."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from service.crypto import EncryptedText
from service.models.base import ts_column, utcnow

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
SLUG_RE = re.compile(SLUG_PATTERN)
ThresholdName = Literal["offensive", "hate", "needs_answer"]


class SourceKind(StrEnum):
    """Payload format and signature scheme of a source."""

    standard = "standard"  # Switchboard's generic format, signed with Standard Webhooks
    wordpress = "wordpress"  # the Switchboard Connector plugin in; the WordPress REST API out
    discourse = "discourse"  # Discourse's own webhooks in; its REST API out


class Source(SQLModel, table=True):
    """A platform (intranet, forum) that posts comment events to /v1/webhooks/{slug}."""

    __tablename__ = "source"

    id: int | None = SQLField(default=None, primary_key=True)
    slug: str = SQLField(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    name: str = SQLField(sa_column=sa.Column(sa.String(200), nullable=False))
    kind: str = SQLField(sa_column=sa.Column(sa.String(32), nullable=False))
    active: bool = SQLField(default=True)
    # Signing secrets must be readable to verify HMACs, so they cannot be hashed: they are encrypted, and never
    # leave the database except once, in the response that creates or rotates them.
    secret: str = SQLField(sa_column=sa.Column(EncryptedText(), nullable=False))  # encrypted at rest
    previous_secret: str | None = SQLField(default=None, sa_column=sa.Column(EncryptedText(), nullable=True))
    previous_secret_expires_at: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    deleted_at: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))
    # Per-source decision thresholds of the binary heads, e.g. {"offensive": 0.8}; absent ones use the settings.
    thresholds: dict[str, float] | None = SQLField(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    # Where Switchboard POSTs this platform's events (replies, moderation decisions); None: nothing is sent.
    callback_url: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(2000), nullable=True))
    # The platform connector's settings (e.g. a WordPress site's address and user) and credentials (a JSON object,
    # encrypted at rest; never shown again once set).
    settings: dict[str, Any] | None = SQLField(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    credentials: str | None = SQLField(default=None, sa_column=sa.Column(EncryptedText(), nullable=True))
