"""The directory routing assigns to: members (people who answer) and teams, with their external ids per source."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

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
