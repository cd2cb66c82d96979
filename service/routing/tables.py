"""Routing's tables: the versions of the ruleset, and the simulations of drafts."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column, utcnow


class RulesetVersion(SQLModel, table=True):
    """One version of the routing rules; the highest version is the live one. Never updated."""

    __tablename__ = "ruleset_version"

    version: int = Field(primary_key=True)
    rules: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    note: str | None = Field(default=None, sa_column=sa.Column(sa.String(500), nullable=True))
    # The simulation the admin looked at before applying this version ("applied after simulation N").
    simulation_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True))
    created_by: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())


class SimulationState(StrEnum):
    """Where a rule simulation is."""

    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class Simulation(SQLModel, table=True):
    """A draft ruleset replayed over stored comments against the live one; never changes live data."""

    __tablename__ = "simulation"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    draft: list[dict[str, Any]] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    base_version: int = 0  # the live version it was compared with
    window: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    comments: int = 0  # how many comments the window held
    result: dict[str, Any] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_by: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(index=True))
    started_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    finished_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
