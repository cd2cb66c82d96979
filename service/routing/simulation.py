"""Simulate a rule or threshold change on stored comments before applying it, and re-route for real after.

A simulation replays the items of a window with the draft (`service.routing.replay`) and stores where they are
now and where re-routing them would put them; closed items and those a person has in hand stay where they are,
as they would. It reads only: the result is stored in its own row. `reroute` applies exactly the plans a
simulation shows with the live rules, so once a simulated draft is live, reroute over the same window and live
state does what the simulation showed, item for item (`rerouted`, `moved`, `kept` and each placement).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.database import SessionFactory, transaction
from service.errors import InvalidPayload, NotFound, summarise
from service.routing import RulesetIn, compile_ruleset, context, rules
from service.routing.context import load_directory
from service.routing.placement import Placer
from service.routing.replay import Difference, WindowIn, difference, replan, resolve_window, window_ids
from service.routing.tables import Simulation, SimulationState
from service.settings import Settings

log = logging.getLogger(__name__)

REROUTE_ACTOR_PREFIX = "reroute"


# --- schemas -----------------------------------------------------------------------------------------------


Thresholds = dict[Literal["offensive", "hate", "needs_answer"], StrictFloat]


class SimulateIn(BaseModel):
    """Body of POST /v1/admin/rules/simulate: a draft ruleset and/or draft thresholds, over a window."""

    model_config = ConfigDict(extra="forbid")

    rules: RulesetIn | None = Field(None, description="The draft (same schema as PUT /v1/admin/rules); default: live.")
    thresholds: Thresholds | None = Field(
        None, description="Draft decision thresholds of the binary heads, applied to the stored scores."
    )
    window: WindowIn = Field(default_factory=WindowIn)

    @model_validator(mode="after")
    def _something_to_try(self) -> SimulateIn:
        if self.rules is None and not self.thresholds:
            raise ValueError("give a draft `rules`, draft `thresholds`, or both")
        for name, value in (self.thresholds or {}).items():
            if not 0 <= value <= 1:
                raise ValueError(f"threshold {name} must be between 0 and 1")
        return self


class SimulationPublic(BaseModel):
    """A simulation and, once done, its result."""

    id: uuid.UUID
    state: SimulationState
    base_version: int = Field(description="The live rules version the draft was compared with.")
    window: dict[str, Any]
    comments: int
    result: dict[str, Any] | None = Field(
        description="Where the window's items are (`before`) and where re-routing them with the draft puts them "
        "(`after`): `rerouted`, `moved` and `kept` are what POST /v1/admin/rules/reroute reports once the draft is "
        "live (closed items and those a person claimed, snoozed, approved or reassigned stay where they are)."
    )
    error: str | None
    created_by: str
    created_at: datetime
    finished_at: datetime | None


class RerouteIn(BaseModel):
    """Body of POST /v1/admin/rules/reroute: re-route the waiting items of a window with the live rules."""

    model_config = ConfigDict(extra="forbid")

    window: WindowIn = Field(default_factory=WindowIn)


class ReroutePublic(BaseModel):
    """What a re-route changed."""

    ruleset_version: int
    comments: int
    rerouted: int = Field(
        description="Items whose handling changed (owner, team, priority, due time, hold, no-reply or tags; another "
        "rule alone is no change), each with one audit event; a simulation's `rerouted` predicts it."
    )
    moved: int = Field(description="... of which changed owner (a simulation's `moved`).")
    kept: int = Field(
        description="Waiting items left alone: claimed, snoozed, approved, reassigned by a person, or escalated."
    )


# --- use cases ---------------------------------------------------------------------------------------------


def _public(row: Simulation) -> SimulationPublic:
    return SimulationPublic.model_validate(row, from_attributes=True)


async def create(
    session: AsyncSession, *, data: SimulateIn, actor: str, settings: Settings, now: datetime
) -> tuple[SimulationPublic, bool]:
    """Store a simulation; run it now if the window is small. Returns it and whether it still has to run."""
    if data.rules is not None:
        await rules.check_references(session, data.rules)
    live = await rules.current(session)
    window = resolve_window(data.window, now=now)
    ids = await window_ids(session, window, limit=settings.simulation_max_comments)
    draft = data.rules.model_dump(mode="json")["rules"] if data.rules is not None else None
    row = Simulation(
        state=SimulationState.pending.value,
        draft=[{"rules": draft, "thresholds": data.thresholds}],
        base_version=live.version,
        window=window,
        comments=len(ids),
        created_by=actor,
        created_at=now,
    )
    session.add(row)
    await session.flush()
    if len(ids) <= settings.simulation_sync_max_comments:
        # Within the request: started and finished at the request's `now`.
        return _public(await _execute(session, row, settings=settings, now=now, clock=lambda: now)), False
    return _public(row), True


async def read(session: AsyncSession, *, simulation_id: uuid.UUID) -> SimulationPublic:
    """One simulation."""
    row = await session.get(Simulation, simulation_id)
    if row is None:
        raise NotFound(f"There is no simulation {simulation_id}.")
    return _public(row)


def draft_of(row: Simulation) -> tuple[RulesetIn | None, dict[str, float] | None]:
    """The draft rules and thresholds a simulation tried."""
    spec = row.draft[0]
    draft = RulesetIn.model_validate({"rules": spec["rules"]}) if spec.get("rules") is not None else None
    return draft, spec.get("thresholds")


async def _execute(
    session: AsyncSession, row: Simulation, *, settings: Settings, now: datetime, clock: Callable[[], datetime]
) -> Simulation:
    row.started_at = row.started_at or clock()
    live = await rules.current(session)
    live_compiled = compile_ruleset(RulesetIn(rules=live.rules), version=live.version)
    draft, thresholds = draft_of(row)
    draft_compiled = compile_ruleset(draft, version=live.version + 1) if draft is not None else live_compiled
    ids = await window_ids(session, row.window, limit=settings.simulation_max_comments)
    result = await difference(
        session, ids, draft_compiled, now=now, thresholds=thresholds,
        keep_decisions=len(ids) <= settings.simulation_sync_max_comments,
    )  # fmt: skip
    row = await session.merge(row)  # the chunked replan expunged it
    row.result = result
    row.comments, row.base_version = result["comments"], live.version
    row.state, row.finished_at = SimulationState.done.value, clock()
    await session.flush()
    return row


async def run(
    factory: SessionFactory, simulation_id: uuid.UUID, *, settings: Settings, clock: Callable[[], datetime]
) -> None:
    """Run a stored simulation (a background job: idempotent; one runner at a time, by a conditional UPDATE).

    `clock` is the caller's; a run can be long, so its start and end each read it.
    """
    now = clock()
    lease = timedelta(seconds=settings.simulation_lease_seconds)
    async with transaction(factory) as session:
        claimed = (
            await session.execute(
                sa.update(Simulation)
                .where(
                    col(Simulation.id) == simulation_id,
                    sa.or_(
                        col(Simulation.state) == SimulationState.pending.value,
                        sa.and_(
                            col(Simulation.state) == SimulationState.running.value,
                            col(Simulation.started_at) < now - lease,
                        ),
                    ),
                )
                .values(state=SimulationState.running.value, started_at=now)
                .returning(col(Simulation.created_at))
            )
        ).first()
    if claimed is None:
        return
    try:
        async with transaction(factory) as session:
            row = await session.get(Simulation, simulation_id)
            assert row is not None
            await _execute(session, row, settings=settings, now=claimed[0], clock=clock)
    except Exception as exc:
        log.exception("simulation %s failed", simulation_id)
        async with transaction(factory) as session:
            failed = await session.get(Simulation, simulation_id)
            if failed is not None:
                failed.state, failed.finished_at = SimulationState.failed.value, clock()
                failed.error = summarise(exc)  # the traceback is in the log


async def pending(factory: SessionFactory, *, settings: Settings, now: datetime) -> list[uuid.UUID]:
    """Simulations that should be running but are not (the reconciler hands them out again)."""
    async with factory() as session:
        stmt = sa.select(col(Simulation.id)).where(
            sa.or_(
                sa.and_(
                    col(Simulation.state) == SimulationState.pending.value,
                    col(Simulation.created_at) < now - timedelta(seconds=settings.job_requeue_seconds),
                ),
                sa.and_(
                    col(Simulation.state) == SimulationState.running.value,
                    col(Simulation.started_at) < now - timedelta(seconds=settings.simulation_lease_seconds),
                ),
            )
        )
        return list((await session.execute(stmt)).scalars())


async def reroute(
    session: AsyncSession, *, data: RerouteIn, actor: str, settings: Settings, now: datetime
) -> ReroutePublic:
    """Re-route the waiting items of a window with the live rules: exactly the plans a simulation shows."""
    window = resolve_window(data.window, now=now)
    cap = settings.simulation_sync_max_comments
    ids = await window_ids(session, window, limit=cap + 1)
    if len(ids) > cap:  # doing part of the window would not be what its simulation showed
        raise InvalidPayload(f"The window holds more than {cap} comments; re-route a narrower one.")
    ruleset = await rules.compiled(session)
    placer = Placer(await load_directory(session), ruleset, now=now)
    result = Difference(keep_decisions=False)
    for ctx, plan in replan(placer, await context.load(session, ids, lock=True)):
        result.add(ctx, plan)
        if plan is not None:
            await placer.apply(session, plan, actor=f"{REROUTE_ACTOR_PREFIX}:{actor}")
    return ReroutePublic(
        ruleset_version=ruleset.version, comments=result.comments, rerouted=result.rerouted,
        moved=sum(result.moves.values()), kept=result.kept,
    )  # fmt: skip
