"""Admin use cases for the routing rules: read the live version, save a new one, read an old one.

Versions are append-only: `PUT` writes version n+1 and never touches n, so a queue item's `ruleset_version`
always points at the rules that placed it. Before any version is saved the live rules are version 0: a single
default rule that leaves every comment in the unassigned pool at normal priority.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.errors import InvalidPayload, InvalidState, NotFound
from service.models import Member, Team
from service.routing import CompiledRuleset, Rule, RulesetIn, compile_ruleset, referenced_ids
from service.routing.tables import RulesetVersion, Simulation, SimulationState

DEFAULT_RULES: list[dict[str, Any]] = [
    {
        "id": "default",
        "name": "Default: the unassigned pool",
        "description": "Every comment no other rule takes. Edit its actions; it cannot be removed.",
        "when": None,
        "then": {"assign": None, "priority": "normal"},
    }
]


class RulesetPublic(BaseModel):
    """A version of the routing rules."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(description="0: the built-in default, before any version was saved.")
    rules: list[Rule]
    note: str | None
    simulation_id: uuid.UUID | None = Field(description="Applied after this simulation.")
    created_by: str | None
    created_at: datetime | None


class RulesetVersionIn(RulesetIn):
    """Body of PUT /v1/admin/rules: the whole new version (ordered; first match wins; the last is the default)."""

    note: str | None = Field(None, max_length=500, description="Why this change (kept with the version).")
    simulation_id: uuid.UUID | None = Field(
        None, description="The simulation of exactly these rules the change was decided on (kept with the version)."
    )


def _public(row: RulesetVersion | None) -> RulesetPublic:
    if row is None:
        return RulesetPublic(
            version=0, rules=RulesetIn.model_validate({"rules": DEFAULT_RULES}).rules, note=None, simulation_id=None,
            created_by=None, created_at=None,
        )  # fmt: skip
    return RulesetPublic(
        version=row.version,
        rules=RulesetIn.model_validate({"rules": row.rules}).rules,
        note=row.note,
        simulation_id=row.simulation_id,
        created_by=row.created_by,
        created_at=row.created_at,
    )


async def _latest(session: AsyncSession) -> RulesetVersion | None:
    return (
        await session.execute(sa.select(RulesetVersion).order_by(col(RulesetVersion.version).desc()).limit(1))
    ).scalar_one_or_none()


async def current(session: AsyncSession) -> RulesetPublic:
    """The live rules."""
    return _public(await _latest(session))


async def compiled(session: AsyncSession) -> CompiledRuleset:
    """The live rules, compiled for `routing.route`."""
    live = await current(session)
    return compile_ruleset(RulesetIn(rules=live.rules), version=live.version)


async def references(session: AsyncSession) -> tuple[set[str], set[str]]:
    """The member ids and team ids the live rules assign to."""
    live = await current(session)
    return referenced_ids(RulesetIn(rules=live.rules))


async def read_version(session: AsyncSession, *, version: int) -> RulesetPublic:
    """One version, old or live."""
    if version == 0:
        return _public(None)
    row = await session.get(RulesetVersion, version)
    if row is None:
        raise NotFound(f"There is no version {version} of the rules.")
    return _public(row)


async def check_references(session: AsyncSession, ruleset: RulesetIn) -> None:
    """Every member and team a rule assigns to must exist (422 naming the ones that don't)."""
    members, teams = referenced_ids(ruleset)
    known_members = set(
        (
            await session.execute(
                sa.select(col(Member.id)).where(col(Member.id).in_(members), col(Member.deleted_at).is_(None))
            )
        ).scalars()
    )
    known_teams = set(
        (
            await session.execute(
                sa.select(col(Team.id)).where(col(Team.id).in_(teams), col(Team.deleted_at).is_(None))
            )
        ).scalars()
    )
    missing = [f"member '{m}'" for m in sorted(members - known_members)]
    missing += [f"team '{t}'" for t in sorted(teams - known_teams)]
    if missing:
        raise InvalidPayload(f"The rules assign to unknown {', '.join(missing)}.", missing=missing)


async def _check_simulated(session: AsyncSession, data: RulesetVersionIn) -> None:
    """A version that says it was applied after a simulation must be the rules that simulation tried."""
    simulation = await session.get(Simulation, data.simulation_id)
    if simulation is None:
        raise NotFound(f"There is no simulation {data.simulation_id}.")
    if simulation.state != SimulationState.done.value:
        raise InvalidState(f"Simulation {data.simulation_id} is {simulation.state}, not done.")
    tried = simulation.draft[0].get("rules")
    if tried != [r.model_dump(mode="json") for r in data.rules]:
        raise InvalidState(f"These rules are not the draft simulation {data.simulation_id} tried.")


async def replace(session: AsyncSession, *, data: RulesetVersionIn, actor: str, now: datetime) -> RulesetPublic:
    """Save a whole new version of the rules (validated, audited with before and after)."""
    await check_references(session, data)
    if data.simulation_id is not None:
        await _check_simulated(session, data)
    latest = await _latest(session)
    before = _public(latest)
    # Concurrent saves race for the same version number: the primary key lets exactly one of them win.
    row = RulesetVersion(
        version=before.version + 1,
        rules=[r.model_dump(mode="json", exclude_none=False) for r in data.rules],
        note=data.note,
        simulation_id=data.simulation_id,
        created_by=actor,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="rules.replaced", target_type="ruleset", target_id=str(row.version),
        before={"version": before.version, "rules": [r.model_dump(mode="json") for r in before.rules]},
        after={"version": row.version, "rules": row.rules, "note": data.note,
               "simulation_id": str(data.simulation_id) if data.simulation_id else None},
    )  # fmt: skip
    return _public(row)
