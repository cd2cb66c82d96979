"""What every directory write shares: one writer at a time, ids never reused, nothing the live rules name.

Directory writes are rare and check several rows before changing any (an external id is free, a delegate is
live, a team's members exist), so they are serialised: SQLite's BEGIN IMMEDIATE already does this, and on
PostgreSQL every write takes one transaction-scoped advisory lock first. No check can then race a concurrent
change, and no two directory writes can deadlock on each other's row locks.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from service.database import dialect_name, table
from service.errors import AlreadyExists, InvalidState
from service.models import Member, Team
from service.routing import rules

# pg_advisory_xact_lock key of directory writes (any constant; it only has to be the same everywhere).
DIRECTORY_LOCK_KEY = 0x5357_4449_5245_4354  # "SWDIRECT"


async def serialise(session: AsyncSession) -> None:
    """Wait for any other directory write to commit (PostgreSQL; SQLite already serialises writers)."""
    if dialect_name(session) == "postgresql":
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock(DIRECTORY_LOCK_KEY)))


async def check_id_free(session: AsyncSession, model: type[Member] | type[Team], entity_id: str) -> None:
    """409 if the id is taken, even by a deleted member or team (ids are never reused)."""
    rows = table(model)
    found = (await session.execute(sa.select(rows.c.deleted_at).where(rows.c.id == entity_id))).first()
    if found is None:
        return
    if found.deleted_at is None:
        raise AlreadyExists(f"A {rows.name} '{entity_id}' exists.")
    raise AlreadyExists(f"The id '{entity_id}' belonged to a deleted {rows.name}; ids are never reused.")


async def check_not_in_rules(
    session: AsyncSession, *, member_id: str | None = None, team_id: str | None = None
) -> None:
    """409 while the live routing rules assign to the member or the team."""
    members, teams = await rules.references(session)
    if member_id in members or team_id in teams:
        what = f"member '{member_id}'" if member_id in members else f"team '{team_id}'"
        raise InvalidState(f"The live routing rules assign to {what}: change the rules (PUT /v1/admin/rules) first.")
