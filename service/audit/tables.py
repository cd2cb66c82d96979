"""The audit trail's table: one row per change, never updated, never deleted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column, utcnow


class AuditEvent(SQLModel, table=True):
    """One change made by someone (or the system): never updated, never deleted."""

    __tablename__ = "audit_event"
    __table_args__ = (
        sa.UniqueConstraint("hash", name="uq_audit_event_hash"),
        sa.Index("ix_audit_event_target", "target_type", "target_id"),  # an item's history
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_column=ts_column(index=True))
    actor: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    action: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, index=True))
    target_type: str = Field(sa_column=sa.Column(sa.String(32), nullable=False))
    target_id: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    before: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    after: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    # Tamper evidence: hash = SHA-256(prev_hash + the canonical JSON of this record); prev_hash is the previous
    # record's hash. Editing, deleting or inserting a record breaks the chain from there on.
    prev_hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    hash: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
