"""The directory routing assigns to: members (people who answer) and teams, with their external ids per source."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from service.inputs import UtcDatetime
from service.models.base import ts_column, utcnow

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_CAPACITY = 10_000


class Strategy(StrEnum):
    """How a team's items are shared among its members."""

    round_robin = "round_robin"
    least_loaded = "least_loaded"


class Member(SQLModel, table=True):
    """A person who answers comments: a story author, an HR partner, a community manager."""

    __tablename__ = "member"

    id: str = SQLField(sa_column=sa.Column(sa.String(64), primary_key=True))
    name: str = SQLField(sa_column=sa.Column(sa.String(200), nullable=False))
    email: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(320), nullable=True))
    capacity: int = SQLField(default=20)
    away_until: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))
    delegate_id: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    deleted_at: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))


class MemberIdentity(SQLModel, table=True):
    """A member's user id on one source, so that a platform's author id maps to a member."""

    __tablename__ = "member_identity"
    __table_args__ = (sa.UniqueConstraint("source_id", "external_id", name="uq_member_identity_source_external"),)

    id: int | None = SQLField(default=None, primary_key=True)
    member_id: str = SQLField(
        sa_column=sa.Column(sa.String(64), sa.ForeignKey("member.id"), nullable=False, index=True)
    )
    source_id: int = SQLField(foreign_key="source.id")
    external_id: str = SQLField(sa_column=sa.Column(sa.String(200), nullable=False))


class Team(SQLModel, table=True):
    """A group of members that shares a queue (HR, IT, the community managers)."""

    __tablename__ = "team"

    id: str = SQLField(sa_column=sa.Column(sa.String(64), primary_key=True))
    name: str = SQLField(sa_column=sa.Column(sa.String(200), nullable=False))
    lead_id: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    strategy: str = SQLField(default=Strategy.round_robin, sa_column=sa.Column(sa.String(32), nullable=False))
    # The member round robin picked last (routing state, not configuration).
    last_assigned_id: str | None = SQLField(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    created_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = SQLField(default_factory=utcnow, sa_column=ts_column())
    deleted_at: datetime | None = SQLField(default=None, sa_column=ts_column(nullable=True))


class TeamMember(SQLModel, table=True):
    """Membership of a team, in round-robin order."""

    __tablename__ = "team_member"

    team_id: str = SQLField(sa_column=sa.Column(sa.String(64), sa.ForeignKey("team.id"), primary_key=True))
    member_id: str = SQLField(
        sa_column=sa.Column(sa.String(64), sa.ForeignKey("member.id"), primary_key=True, index=True)
    )
    position: int = SQLField(default=0)


class ExternalIdIn(BaseModel):
    """A member's user id on a source."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=64, description="The source's slug.")
    id: str = Field(min_length=1, max_length=200, description="The user id the platform sends as author id.")


class MemberIn(BaseModel):
    """Body of POST /v1/admin/members."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Stable id: lower-case letters, digits, '.', '_' and '-'.")
    name: str = Field(min_length=1, max_length=200)
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    capacity: int = Field(
        20, ge=1, le=MAX_CAPACITY, strict=True, description="Open items this member can hold at once."
    )
    away_until: UtcDatetime | None = Field(None, description="Away (no new items) until this time (UTC if no offset).")
    delegate: str | None = Field(None, pattern=ID_PATTERN, description="Who takes this member's items while away.")
    external_ids: list[ExternalIdIn] = Field(default_factory=list, max_length=50)


class MemberUpdate(BaseModel):
    """Body of PATCH /v1/admin/members/{id}; absent fields stay as they are, `external_ids` replaces the list."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    email: str | None = Field(None, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    capacity: int | None = Field(None, ge=1, le=MAX_CAPACITY, strict=True)
    away_until: UtcDatetime | None = None
    delegate: str | None = Field(None, pattern=ID_PATTERN)
    external_ids: list[ExternalIdIn] | None = Field(None, max_length=50)


class MemberPublic(BaseModel):
    """A member as admins see it."""

    id: str
    name: str
    email: str | None
    capacity: int
    away_until: datetime | None
    delegate: str | None
    external_ids: list[ExternalIdIn]
    teams: list[str]
    created_at: datetime
    updated_at: datetime


class TeamIn(BaseModel):
    """Body of POST /v1/admin/teams."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=ID_PATTERN, description="Stable id: lower-case letters, digits, '.', '_' and '-'.")
    name: str = Field(min_length=1, max_length=200)
    members: list[str] = Field(default_factory=list, max_length=500, description="Member ids, in round-robin order.")
    lead: str | None = Field(None, pattern=ID_PATTERN, description="Escalations go to the lead.")
    strategy: Strategy = Strategy.round_robin


class TeamUpdate(BaseModel):
    """Body of PATCH /v1/admin/teams/{id}; absent fields stay as they are, `members` replaces the list."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    members: list[str] | None = Field(None, max_length=500)
    lead: str | None = Field(None, pattern=ID_PATTERN)
    strategy: Strategy | None = None


class TeamPublic(BaseModel):
    """A team as admins see it."""

    id: str
    name: str
    members: list[str]
    lead: str | None
    strategy: Strategy
    created_at: datetime
    updated_at: datetime
