"""Simulate a rule or threshold change on stored comments before applying it, and re-route for real after.

A simulation replays the comments of a window (last N, or a time range; default the last 30 days) through the
live rules and through the draft, both from the same starting directory, and reports the difference: items
moving between owners, load per owner and team, SLA hours committed, held and no-reply items, a sample of moved
comments with both reasons. It reads only: the result is stored in its own row.

`replay` is the one function that turns a sequence of comments into decisions (round-robin positions and loads
evolve as the items are placed); `reroute` uses it too, so what a simulation shows is what applying it does.
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pii import redact
from service import items, rules
from service.classification import BINARY_HEADS, decide
from service.database import SessionFactory, transaction
from service.dispatch import Context, due_at, load_directory
from service.errors import InvalidPayload, NotFound
from service.models import (
    Comment,
    CommentAnalysis,
    ItemState,
    QueueItem,
    Simulation,
    SimulationState,
    Source,
    Thread,
)
from service.models.base import utcnow
from service.models.queue import NO_DUE, PRIORITY_RANK, WAITING_STATES, Priority
from service.routing import CompiledRuleset, Decision, Directory, RulesetIn, compile_ruleset, route
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

    last: int | None = Field(None, ge=1, description="The most recent N processed comments.")
    since: datetime | None = Field(None, description="Comments received from this time (default: 30 days ago).")
    until: datetime | None = Field(None, description="... up to this time (default: now).")

    @model_validator(mode="after")
    def _one_kind(self) -> Window:
        if self.last is not None and (self.since is not None or self.until is not None):
            raise ValueError("give either `last` or a time range (`since` / `until`), not both")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times need a time zone, e.g. 2026-11-01T00:00:00Z")
        return self


Thresholds = dict[Literal["offensive", "hate", "needs_answer"], float]


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
    result: dict[str, Any] | None
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
    rerouted: int = Field(description="Items whose owner, team, priority or due time changed.")
    kept: int = Field(description="Waiting items left as they were: claimed, escalated or assigned by a person.")


# --- replay ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A comment of the window, with its queue item as it is now (None: not placed yet)."""

    ctx: Context
    item: QueueItem | None

    @property
    def movable(self) -> bool:
        """Re-routing may give it a new owner: waiting, and neither claimed, escalated nor assigned by a person."""
        item = self.item
        if item is None:
            return True
        return (
            item.state in (ItemState.held.value, ItemState.open.value)
            and not item.manually_assigned
            and item.claimed_by is None
        )

    @property
    def waiting(self) -> bool:
        """Counts in its owner's load."""
        return self.item is None or self.item.state in [s.value for s in WAITING_STATES]


def with_thresholds(doc: Mapping[str, Any] | None, thresholds: Mapping[str, float] | None) -> Mapping[str, Any] | None:
    """The classification as it would read under other thresholds of the binary heads (from the stored scores)."""
    if doc is None or not thresholds:
        return doc
    changed = dict(doc)
    for name in BINARY_HEADS:
        head = doc.get(name)
        if name in thresholds and isinstance(head, Mapping) and isinstance(head.get("scores"), Mapping):
            changed[name] = {**head, "label": decide(name, str(head.get("label")), head["scores"], thresholds)}
    return changed


def replay(
    entries: Sequence[Entry],
    ruleset: CompiledRuleset,
    directory: Directory,
    *,
    now: datetime,
    thresholds: Mapping[str, float] | None = None,
) -> tuple[list[Decision], Directory]:
    """Route the entries in order, placing each as re-routing would (loads and round robin evolve)."""
    from service.dispatch import facts_of

    decisions = []
    for entry in entries:
        ctx = entry.ctx
        if thresholds:
            ctx = replace(ctx, classification=with_thresholds(ctx.classification, thresholds))
        decision = route(facts_of(ctx), ruleset, directory, now=now)
        decisions.append(decision)
        if entry.movable and entry.waiting and decision.member:
            load = dict(directory.load)
            load[decision.member] = load.get(decision.member, 0) + 1
            last = dict(directory.last_assigned)
            if decision.team and decision.assigned_by == "round_robin":
                last[decision.team] = decision.member
            directory = replace(directory, load=load, last_assigned=last)
    return decisions, directory


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


async def load_entries(session: AsyncSession, comment_ids: Sequence[uuid.UUID]) -> list[Entry]:
    """The comments with their thread, source, stored classification and queue item, in the given order."""
    found: dict[uuid.UUID, Entry] = {}
    for start in range(0, len(comment_ids), CHUNK):
        chunk = comment_ids[start : start + CHUNK]
        rows = await session.execute(
            sa.select(Comment, Thread, col(Source.slug), col(CommentAnalysis.classification), QueueItem)
            .join(Source, col(Source.id) == col(Comment.source_id))
            .join(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
            .outerjoin(Thread, col(Thread.id) == col(Comment.thread_id))
            .outerjoin(QueueItem, col(QueueItem.comment_id) == col(Comment.id))
            .where(col(Comment.id).in_(chunk))
        )
        for comment, thread, slug, classification, item in rows.all():
            ctx = Context(comment=comment, thread=thread, source_slug=slug, classification=classification)
            found[comment.id] = Entry(ctx=ctx, item=item)
    return [found[i] for i in comment_ids if i in found]


# --- the comparison ----------------------------------------------------------------------------------------


def owner(decision: Decision) -> str:
    """Who an item would belong to: a member, a team's pool, or nobody."""
    if decision.member:
        return f"member:{decision.member}"
    if decision.team:
        return f"team:{decision.team}"
    return "unassigned"


def _side(decision: Decision) -> dict[str, Any]:
    return {
        "owner": owner(decision),
        "member": decision.member,
        "team": decision.team,
        "priority": decision.priority,
        "sla_seconds": int(decision.sla.total_seconds()) if decision.sla is not None else None,
        "hold": decision.hold,
        "no_reply": decision.no_reply,
        "rule_id": decision.rule_id,
        "reason": decision.reason,
    }


def _sla_hours(decisions: Iterable[Decision]) -> float:
    return round(sum(d.sla.total_seconds() for d in decisions if d.sla and not d.no_reply) / 3600, 2)


class Difference:
    """The difference between two replays of the same comments, accumulated comment by comment."""

    def __init__(self, *, keep_decisions: bool) -> None:
        self.comments = 0
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

    def add(self, entry: Entry, before: Decision, after: Decision) -> None:
        """Count one comment."""
        self.comments += 1
        for side, decision in enumerate((before, after)):
            self.owners[side][owner(decision)] += 1
            if decision.team:
                self.teams[side][decision.team] += 1
            self.rules[side][decision.rule_id] += 1
            self.priority[side][decision.priority] += 1
            if decision.sla is not None and not decision.no_reply:
                self.sla_seconds[side] += decision.sla.total_seconds()
            self.held[side] += decision.hold
            self.no_reply[side] += decision.no_reply
        if owner(before) != owner(after):
            self.moves[(owner(before), owner(after))] += 1
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append({
                    "comment_id": str(entry.ctx.comment.id),
                    "excerpt": redact(entry.ctx.comment.body)[:200],
                    "before": _side(before),
                    "after": _side(after),
                })  # fmt: skip
        if self.decisions is not None:
            self.decisions[str(entry.ctx.comment.id)] = _side(after)

    @staticmethod
    def _pairs(counts: tuple[Counter[str], Counter[str]], key: str) -> list[dict[str, Any]]:
        before, after = counts
        return [
            {key: k, "before": before.get(k, 0), "after": after.get(k, 0)} for k in sorted(set(before) | set(after))
        ]

    def result(self) -> dict[str, Any]:
        """The summary admins read (and, for small windows, every comment's new decision)."""
        result: dict[str, Any] = {
            "comments": self.comments,
            "moved": sum(self.moves.values()),
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


async def window_base(session: AsyncSession, comment_ids: Sequence[uuid.UUID]) -> Directory:
    """The live directory with the load of the window's movable items taken out (they are about to be re-decided)."""
    directory = await load_directory(session)
    load = Counter(directory.load)
    for start in range(0, len(comment_ids), CHUNK):
        rows = await session.execute(
            sa.select(col(QueueItem.member_id), sa.func.count())
            .where(
                col(QueueItem.comment_id).in_(comment_ids[start : start + CHUNK]),
                col(QueueItem.state).in_([ItemState.held.value, ItemState.open.value]),
                col(QueueItem.manually_assigned).is_(False),
                col(QueueItem.claimed_by).is_(None),
                col(QueueItem.member_id).is_not(None),
            )
            .group_by(col(QueueItem.member_id))
        )
        for member_id, count in rows.all():
            if member_id is not None:
                load[member_id] -= count
    return replace(directory, load={k: max(v, 0) for k, v in load.items()})


async def difference(
    session: AsyncSession,
    comment_ids: Sequence[uuid.UUID],
    live: CompiledRuleset,
    draft: CompiledRuleset,
    *,
    now: datetime,
    thresholds: Mapping[str, float] | None = None,
    keep_decisions: bool = False,
) -> dict[str, Any]:
    """Replay the comments through the live rules and through the draft, a chunk at a time (bounded memory)."""
    base = await window_base(session, comment_ids)
    diff = Difference(keep_decisions=keep_decisions)
    directories = (base, base)
    for start in range(0, len(comment_ids), CHUNK):
        entries = await load_entries(session, comment_ids[start : start + CHUNK])
        before, live_dir = replay(entries, live, directories[0], now=now)
        after, draft_dir = replay(entries, draft, directories[1], now=now, thresholds=thresholds)
        directories = (live_dir, draft_dir)
        for entry, b, a in zip(entries, before, after, strict=True):
            diff.add(entry, b, a)
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
        session, ids, live_compiled, draft_compiled, now=now, thresholds=thresholds,
        keep_decisions=len(ids) <= settings.simulation_sync_max_comments,
    )  # fmt: skip
    row = await session.merge(row)  # the chunked replay expunged it
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
    except Exception:
        log.exception("simulation %s failed", simulation_id)
        async with transaction(factory) as session:
            failed = await session.get(Simulation, simulation_id)
            if failed is not None:
                failed.state, failed.finished_at = SimulationState.failed.value, utcnow()
                failed.error = traceback.format_exc()[-2000:]


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
    """Re-route the movable waiting items of a window with the live rules (as a simulation would show)."""
    window = resolve_window(data.window, now=now)
    ids = await window_ids(session, window, limit=settings.simulation_sync_max_comments)
    base = await window_base(session, ids)
    entries = await load_entries(session, ids)
    ruleset = await rules.compiled(session)
    decisions, _ = replay(entries, ruleset, base, now=now)
    rerouted = kept = 0
    for entry, decision in zip(entries, decisions, strict=True):
        item = entry.item
        if item is None or not entry.waiting:
            continue
        if not entry.movable:
            kept += 1
            continue
        due = due_at(entry.ctx.comment.received_at, decision.sla)
        priority = Priority(decision.priority)
        changes: dict[str, Any] = {
            "member_id": decision.member, "team_id": decision.team, "priority": priority.value,
            "priority_rank": PRIORITY_RANK[priority], "rule_id": decision.rule_id,
            "ruleset_version": decision.ruleset_version, "reason": decision.reason, "tags": list(decision.tags),
            "no_reply": decision.no_reply, "due_at": due, "sort_due": due or NO_DUE,
            "sla_seconds": int(decision.sla.total_seconds()) if decision.sla is not None else None,
            "state": ItemState.held if decision.hold else ItemState.open,
        }  # fmt: skip
        if all(getattr(item, k) == v for k, v in changes.items()):
            continue
        await items.transition(session, item, actor=f"{REROUTE_ACTOR_PREFIX}:{actor}", action="rerouted", now=now,
                               note=decision.reason, **changes)  # fmt: skip
        rerouted += 1
    if rerouted:
        await _update_round_robin(session, base, decisions, entries)
    return RerouteResult(ruleset_version=ruleset.version, comments=len(entries), rerouted=rerouted, kept=kept)


async def _update_round_robin(
    session: AsyncSession, base: Directory, decisions: Sequence[Decision], entries: Sequence[Entry]
) -> None:
    from service.models import Team

    last: dict[str, str] = {}
    for entry, decision in zip(entries, decisions, strict=True):
        if (
            entry.movable
            and entry.waiting
            and decision.member
            and decision.team
            and decision.assigned_by == "round_robin"
        ):
            last[decision.team] = decision.member
    for team_id, member_id in last.items():
        if base.last_assigned.get(team_id) != member_id:
            await session.execute(sa.update(Team).where(col(Team.id) == team_id).values(last_assigned_id=member_id))
