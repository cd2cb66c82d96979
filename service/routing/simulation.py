"""Simulate a rule or threshold change on stored comments before applying it, and re-route for real after.

A simulation takes the items of a window (last N, or a time range; default the last 30 days) and reports where
they are now and where re-routing them with the draft would put them: items re-routed and moved between owners,
load per owner and team, SLA hours committed, held and no-reply items, a sample of moved comments with both
reasons. Closed items and those a person has in hand stay where they are, as they would. It reads only: the
result is stored in its own row.

`replan` is the one function that turns the window into plans (service.placement: the same exclusions, the same
rules for moving an item, round-robin positions and loads evolving as items are placed); `reroute` applies
exactly those plans with the live rules, so once a simulated draft is live, reroute over the same window and
live state does what the simulation showed, item for item (`rerouted`, `moved`, `kept` and each placement).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pii import redact
from service.database import SessionFactory, transaction
from service.errors import InvalidPayload, NotFound, summarise
from service.inputs import UtcDatetime
from service.models import (
    Comment,
    CommentAnalysis,
    QueueItem,
    Simulation,
    SimulationState,
)
from service.models.base import utcnow
from service.routing import CompiledRuleset, RulesetIn, compile_ruleset, placement, rules
from service.routing.placement import Context, Placer, Plan, load_directory
from service.settings import Settings

log = logging.getLogger(__name__)

SAMPLE_SIZE = 20
DEFAULT_DAYS = 30
MAX_DAYS = 366
CHUNK = 2000
REROUTE_ACTOR_PREFIX = "reroute"


# --- schemas -----------------------------------------------------------------------------------------------


class Window(BaseModel):
    """Which stored comments to replay: the last N, or those received in a time range (default: 30 days)."""

    model_config = ConfigDict(extra="forbid")

    last: int | None = Field(None, ge=1, strict=True, description="The most recent N processed comments.")
    since: UtcDatetime | None = Field(None, description="Comments received from this time (default: 30 days ago).")
    until: UtcDatetime | None = Field(None, description="... up to this time (default: now).")

    @model_validator(mode="after")
    def _one_kind(self) -> Window:
        if self.last is not None and (self.since is not None or self.until is not None):
            raise ValueError("give either `last` or a time range (`since` / `until`), not both")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times need a time zone, e.g. 2026-11-01T00:00:00Z")
        return self


Thresholds = dict[Literal["offensive", "hate", "needs_answer"], StrictFloat]


class SimulateIn(BaseModel):
    """Body of POST /v1/admin/rules/simulate: a draft ruleset and/or draft thresholds, over a window."""

    model_config = ConfigDict(extra="forbid")

    rules: RulesetIn | None = Field(None, description="The draft (same schema as PUT /v1/admin/rules); default: live.")
    thresholds: Thresholds | None = Field(
        None, description="Draft decision thresholds of the binary heads, applied to the stored scores."
    )
    window: Window = Field(default_factory=Window)

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

    window: Window = Field(default_factory=Window)


class RerouteResult(BaseModel):
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


# --- replan -----------------------------------------------------------------------------------------------


def replan(placer: Placer, entries: Sequence[tuple[Context, QueueItem | None]]) -> list[tuple[Context, Plan | None]]:
    """Plan the window's items in order (None: a comment without an item); the placer's directory moves on."""
    return [(ctx, None if item is None else placer.plan(item, ctx)) for ctx, item in entries]


# --- the window --------------------------------------------------------------------------------------------


def resolve_window(window: Window, *, now: datetime) -> dict[str, Any]:
    """The window made explicit (stored with the simulation)."""
    if window.last is not None:
        return {"last": window.last}
    until = window.until or now
    since = window.since or until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise InvalidPayload("`since` must be before `until`.")
    if until - since > timedelta(days=MAX_DAYS):
        raise InvalidPayload(f"A window spans at most {MAX_DAYS} days.")
    return {"since": since.isoformat(), "until": until.isoformat()}


def _window_filter(window: Mapping[str, Any]) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = [col(Comment.deleted_at).is_(None)]
    if "since" in window:
        conditions += [
            col(Comment.received_at) >= datetime.fromisoformat(window["since"]),
            col(Comment.received_at) < datetime.fromisoformat(window["until"]),
        ]
    return conditions


async def window_ids(session: AsyncSession, window: Mapping[str, Any], *, limit: int) -> list[uuid.UUID]:
    """The processed comments of the window, oldest first (at most `limit`; the newest are kept)."""
    cap = min(int(window.get("last", limit)), limit)
    stmt = (
        sa.select(col(Comment.id))
        .join(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
        .where(*_window_filter(window))
        .order_by(col(Comment.received_at).desc(), col(Comment.id).desc())
        .limit(cap)
    )
    return list(reversed((await session.execute(stmt)).scalars().all()))


# --- the comparison ----------------------------------------------------------------------------------------


class Difference:
    """Where the window's items are and where they would go, accumulated item by item."""

    def __init__(self, *, keep_decisions: bool) -> None:
        self.comments = 0
        self.rerouted = 0
        self.kept = 0
        self.moves: Counter[tuple[str, str]] = Counter()
        self.sample: list[dict[str, Any]] = []
        self.owners: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.teams: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.rules: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.priority: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.sla_seconds = [0.0, 0.0]
        self.held = [0, 0]
        self.no_reply = [0, 0]
        self.decisions: dict[str, dict[str, Any]] | None = {} if keep_decisions else None

    def add(self, ctx: Context, plan: Plan | None) -> None:
        """Count one comment."""
        self.comments += 1
        if plan is None:
            return
        self.rerouted += bool(plan.changes)
        self.kept += plan.kept
        for side, place in enumerate((plan.before, plan.after)):
            self.owners[side][place.owner] += 1
            if place.team:
                self.teams[side][place.team] += 1
            self.rules[side][place.rule_id] += 1
            self.priority[side][place.priority] += 1
            if place.sla_seconds is not None and not place.no_reply:
                self.sla_seconds[side] += place.sla_seconds
            self.held[side] += place.hold
            self.no_reply[side] += place.no_reply
        if plan.before.owner != plan.after.owner:
            self.moves[(plan.before.owner, plan.after.owner)] += 1
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append({
                    "comment_id": str(ctx.comment.id),
                    "excerpt": redact(ctx.comment.body)[:200],
                    "before": plan.before.public(),
                    "after": plan.after.public(),
                })  # fmt: skip
        if self.decisions is not None:
            self.decisions[str(ctx.comment.id)] = {**plan.after.public(), "rerouted": bool(plan.changes)}

    @staticmethod
    def _pairs(counts: tuple[Counter[str], Counter[str]], key: str) -> list[dict[str, Any]]:
        before, after = counts
        return [
            {key: k, "before": before.get(k, 0), "after": after.get(k, 0)} for k in sorted(set(before) | set(after))
        ]

    def result(self) -> dict[str, Any]:
        """The summary admins read (and, for small windows, every comment's placement after)."""
        result: dict[str, Any] = {
            "comments": self.comments,
            "rerouted": self.rerouted,
            "moved": sum(self.moves.values()),
            "kept": self.kept,
            "moves": [{"from": f, "to": t, "count": n} for (f, t), n in self.moves.most_common()],
            "load": self._pairs(self.owners, "owner"),
            "team_load": self._pairs(self.teams, "team"),
            "sla_hours": {
                "before": round(self.sla_seconds[0] / 3600, 2),
                "after": round(self.sla_seconds[1] / 3600, 2),
            },
            "held": {"before": self.held[0], "after": self.held[1]},
            "no_reply": {"before": self.no_reply[0], "after": self.no_reply[1]},
            "priority": {"before": dict(self.priority[0]), "after": dict(self.priority[1])},
            "rules": self._pairs(self.rules, "rule_id"),
            "sample": self.sample,
        }
        if self.decisions is not None:
            result["decisions"] = self.decisions
        return result


async def difference(
    session: AsyncSession,
    comment_ids: Sequence[uuid.UUID],
    draft: CompiledRuleset,
    *,
    now: datetime,
    thresholds: Mapping[str, float] | None = None,
    keep_decisions: bool = False,
) -> dict[str, Any]:
    """Where the items are and where re-routing them with the draft would put them, a chunk at a time (bounded
    memory). Writes nothing: the plans are reroute's, never applied."""
    placer = Placer(await load_directory(session), draft, now=now, thresholds=thresholds)
    diff = Difference(keep_decisions=keep_decisions)
    for start in range(0, len(comment_ids), CHUNK):
        for ctx, plan in replan(placer, await placement.load(session, comment_ids[start : start + CHUNK])):
            diff.add(ctx, plan)
        session.expunge_all()
    return diff.result()


# --- use cases ---------------------------------------------------------------------------------------------


def _public(row: Simulation) -> SimulationPublic:
    return SimulationPublic(
        id=row.id,
        state=SimulationState(row.state),
        base_version=row.base_version,
        window=row.window,
        comments=row.comments,
        result=row.result,
        error=row.error,
        created_by=row.created_by,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


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
        return _public(await _execute(session, row, settings=settings, now=now)), False
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


async def _execute(session: AsyncSession, row: Simulation, *, settings: Settings, now: datetime) -> Simulation:
    row.started_at = row.started_at or utcnow()
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
    row.state, row.finished_at = SimulationState.done.value, utcnow()
    await session.flush()
    return row


async def run(factory: SessionFactory, simulation_id: uuid.UUID, *, settings: Settings) -> None:
    """Run a stored simulation (a background job: idempotent; one runner at a time, by a conditional UPDATE)."""
    now = utcnow()
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
            await _execute(session, row, settings=settings, now=claimed[0])
    except Exception as exc:
        log.exception("simulation %s failed", simulation_id)
        async with transaction(factory) as session:
            failed = await session.get(Simulation, simulation_id)
            if failed is not None:
                failed.state, failed.finished_at = SimulationState.failed.value, utcnow()
                failed.error = summarise(exc)  # the traceback is in the log


async def pending(factory: SessionFactory, *, settings: Settings) -> list[uuid.UUID]:
    """Simulations that should be running but are not (the reconciler hands them out again)."""
    now = utcnow()
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
) -> RerouteResult:
    """Re-route the waiting items of a window with the live rules: exactly the plans a simulation shows."""
    window = resolve_window(data.window, now=now)
    cap = settings.simulation_sync_max_comments
    ids = await window_ids(session, window, limit=cap + 1)
    if len(ids) > cap:  # doing part of the window would not be what its simulation showed
        raise InvalidPayload(f"The window holds more than {cap} comments; re-route a narrower one.")
    ruleset = await rules.compiled(session)
    placer = Placer(await load_directory(session), ruleset, now=now)
    result = Difference(keep_decisions=False)
    for ctx, plan in replan(placer, await placement.load(session, ids, lock=True)):
        result.add(ctx, plan)
        if plan is not None:
            await placer.apply(session, plan, actor=f"{REROUTE_ACTOR_PREFIX}:{actor}")
    return RerouteResult(
        ruleset_version=ruleset.version, comments=result.comments, rerouted=result.rerouted,
        moved=sum(result.moves.values()), kept=result.kept,
    )  # fmt: skip
