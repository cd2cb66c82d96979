"""What the directory API takes and shows: members (with their platform identities) and teams."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from service.inputs import UtcDatetime
from service.models.directory import ID_PATTERN, MAX_CAPACITY, Strategy


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
