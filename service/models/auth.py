"""API keys (stored as SHA-256 hashes)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column, utcnow


class Role(StrEnum):
    """What an API key may do."""

    admin = "admin"
    responder = "responder"


class ApiKey(SQLModel, table=True):
    """An API key. Only its hash is stored; `prefix` identifies it in lists and logs."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    key_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    prefix: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    role: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    member_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    last_used_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    expires_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    revoked_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
