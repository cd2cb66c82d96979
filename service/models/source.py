"""Sources: the platforms that send comments, each with its own signing secret."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from service.models.base import ts_column, utcnow

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
SLUG_RE = re.compile(SLUG_PATTERN)
ThresholdName = Literal["offensive", "hate", "needs_answer"]


class SourceKind(StrEnum):
    """Payload format and signature scheme of a source."""

    standard = "standard"  # Switchboard's generic format, signed with Standard Webhooks


class Source(SQLModel, table=True):
    """A platform (intranet, forum) that posts comment events to /v1/webhooks/{slug}."""

    __tablename__ = "source"

    id: int | None = SQLField(default=None, primary_key=True)
    slug: str = SQLField(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    name: str = SQLField(sa_column=sa.Column(sa.String(200), nullable=False))
    kind: str = SQLField(sa_column=sa.Column(sa.String(32), nullable=False))
    active: bool = SQLField(default=True)
    # Signing secrets must be readable to verify HMACs, so they cannot be hashed; they never leave the
    # database except once, in the response that creates or rotates them.
    secret: str = SQLField(sa_column=sa.Column(sa.String(100), nullable=False))
    previous_secret: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(100), nullable=True))
    previous_secret_expires_at: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    deleted_at: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))
    # Per-source decision thresholds of the binary heads, e.g. {"offensive": 0.8}; absent ones use the settings.
    thresholds: dict[str, float] | None = SQLField(default=None, sa_column=sa.Column(sa.JSON, nullable=True))


class SourceIn(BaseModel):
    """Body of POST /v1/admin/sources."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN, description="URL name: lower-case letters, digits and dashes.")
    name: str = Field(min_length=1, max_length=200)
    kind: SourceKind = SourceKind.standard


class SourceUpdate(BaseModel):
    """Body of PATCH /v1/admin/sources/{slug}; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    active: bool | None = Field(None, strict=True, description="An inactive source's webhooks are refused with 403.")
    thresholds: dict[ThresholdName, Annotated[float, Field(ge=0, le=1, strict=True)]] | None = Field(
        None, description="Replace this source's head thresholds, e.g. {'offensive': 0.8}; {} resets to defaults."
    )


class SourcePublic(BaseModel):
    """A source as admins see it (never its secret)."""

    slug: str
    name: str
    kind: SourceKind
    active: bool
    thresholds: dict[str, float]
    webhook_path: str
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SourceWithSecret(SourcePublic):
    """A source with its signing secret: returned once, on creation and on rotation."""

    secret: str = Field(description="Standard Webhooks signing secret (whsec_...). Shown only this once.")
