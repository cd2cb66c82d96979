"""Property: for random rulesets and histories, reroute does exactly what the simulation showed.

Each example builds a directory (round-robin and least-loaded teams, capacities, an away member), a live ruleset and
a history under it (items placed by the real dispatcher; some claimed, snoozed, reassigned, approved or resolved by
people), then simulates a random draft, applies it and reroutes the same window. The service functions are driven
with sessions directly to keep each example fast; tests/api/test_rerouting.py covers the same property over HTTP.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import col

from service.audit.tables import AuditEvent
from service.database import create_engine, create_session_factory, transaction
from service.models import ItemState, Member, QueueItem, Source, Team, TeamMember
from service.models.base import utcnow
from service.routing import RulesetIn, compile_ruleset, dispatch, replay, rules, simulation
from service.routing.rules import RulesetVersionIn
from service.settings import Settings
from tests.queue_seed import classification, seed_processed

MEMBERS = ("m0", "m1", "m2", "m3", "m4")
TEAMS = {"t0": ("m0", "m1", "m2"), "t1": ("m2", "m3", "m4"), "t2": ("m4",)}
TOPICS = ("pay", "it", "other")
WINDOW = 10_000

conditions = st.sampled_from(
    [
        *({"field": "topic", "op": "eq", "value": t} for t in TOPICS),
        *({"field": "sentiment", "op": "eq", "value": s} for s in ("negative", "neutral", "positive")),
        {"field": "needs_answer", "op": "is", "value": True},
        {"field": "flag", "op": "has", "value": "offensive"},
        {"not": {"field": "topic", "op": "eq", "value": "pay"}},
    ]
)
assignments = st.one_of(
    st.none(),
    st.builds(
        lambda team, strategy: {"to": "team", "team": team, **({"strategy": strategy} if strategy else {})},
        st.sampled_from(sorted(TEAMS)),
        st.sampled_from([None, "round_robin", "least_loaded"]),
    ),
    st.builds(
        lambda member, team: {"to": "member", "member": member, **({"team": team} if team else {})},
        st.sampled_from(MEMBERS),
        st.sampled_from([None, *sorted(TEAMS)]),
    ),
)


@st.composite
def actions(draw: st.DrawFn, *, hold: bool = True) -> dict[str, Any]:
    then: dict[str, Any] = {
        "priority": draw(st.sampled_from(["urgent", "high", "normal", "low"])),
        "hold": hold and draw(st.booleans()),
    }
    assign = draw(assignments)
    if assign is not None:
        then["assign"] = assign
    sla = draw(st.sampled_from([None, "PT1H", "PT4H"]))
    if sla is not None:
        then["sla"] = sla
    return then


@st.composite
def rulesets(draw: st.DrawFn) -> list[dict[str, Any]]:
    found = [
        {"id": f"r{i}", "name": f"Rule {i}", "when": draw(conditions), "then": draw(actions())}
        for i in range(draw(st.integers(0, 4)))
    ]
    return [*found, {"id": "default", "name": "Default", "then": draw(actions(hold=False))}]


docs = st.builds(
    lambda topic, sentiment, needs_answer, offensive: classification(
        topic=topic, sentiment=sentiment, needs_answer=needs_answer, offensive=offensive
    ),
    st.sampled_from(TOPICS),
    st.sampled_from(["negative", "neutral", "positive"]),
    st.sampled_from([0.1, 0.9]),
    st.sampled_from([0.1, 0.1, 0.9]),
)
PERSON_ACTS = ("none", "none", "none", "claim", "snooze", "reassign", "approve", "resolve")


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 14))
    return {
        "capacity": {m: draw(st.integers(1, 4)) for m in MEMBERS},
        "away": draw(st.sampled_from([None, *MEMBERS])),
        "strategy": {t: draw(st.sampled_from(["round_robin", "least_loaded"])) for t in TEAMS},
        "live": draw(rulesets()),
        "draft": draw(rulesets()),
        "docs": draw(st.lists(docs, min_size=n, max_size=n)),
        "acts": draw(st.lists(st.sampled_from(PERSON_ACTS), min_size=n, max_size=n)),
    }


def placement(item: QueueItem) -> tuple[Any, ...]:
    return item.member_id, item.team_id, item.priority, item.rule_id, item.state == ItemState.held


def owner(placed: tuple[Any, ...]) -> str:
    return f"member:{placed[0]}" if placed[0] else f"team:{placed[1]}" if placed[1] else "unassigned"


async def snapshot(factory: Any) -> dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]]:
    async with factory() as session:
        found = (await session.execute(sa.select(QueueItem))).scalars().all()
        return {str(i.comment_id): (placement(i), (i.state, i.due_at, i.sla_seconds, tuple(i.tags))) for i in found}


async def rerouted_events(factory: Any) -> int:
    async with factory() as session:
        stmt = sa.select(sa.func.count()).where(
            col(AuditEvent.action) == "queue_item.rerouted", col(AuditEvent.actor).startswith("reroute:")
        )
        return int((await session.execute(stmt)).scalar_one())


async def build(factory: Any, world: dict[str, Any]) -> None:
    """The directory, the live rules and the history under them (people acting on some items)."""
    now = utcnow()
    async with transaction(factory) as session:
        session.add(Source(slug="s", name="S", kind="standard", secret="whsec_AAAA"))
        for m in MEMBERS:
            away = now + timedelta(days=2) if world["away"] == m else None
            session.add(Member(id=m, name=m.upper(), capacity=world["capacity"][m], away_until=away))
        for t in TEAMS:
            session.add(Team(id=t, name=t.upper(), strategy=world["strategy"][t]))
        await session.flush()
        for t, members in TEAMS.items():
            for position, m in enumerate(members):
                session.add(TeamMember(team_id=t, member_id=m, position=position))
        await rules.replace(
            session, data=RulesetVersionIn.model_validate({"rules": world["live"]}), actor="test", now=now
        )
    async with transaction(factory) as session:
        comment_ids = await seed_processed(session, source="s", docs=world["docs"], now=now)
    async with transaction(factory) as session:
        for comment_id, act in zip(comment_ids, world["acts"], strict=True):
            item = (
                await session.execute(sa.select(QueueItem).where(col(QueueItem.comment_id) == comment_id))
            ).scalar_one()
            if not (item.state in (ItemState.open, ItemState.held) and act != "none"):
                continue
            if act == "approve" and item.state == ItemState.held:
                await dispatch.release(session, item, actor="member:m0", now=now)
            elif act == "claim" and item.state == ItemState.open:
                item.state, item.claimed_by, item.claim_expires_at = ItemState.claimed.value, "m1", now + timedelta(1)
            elif act == "snooze":
                item.snoozed_until = now + timedelta(hours=3)
            elif act == "reassign":
                item.member_id, item.team_id, item.manually_assigned = "m3", "t1", True
            elif act == "resolve":
                item.state, item.resolution = ItemState.resolved.value, "spam"
        await session.flush()


async def scenario(url: str, world: dict[str, Any]) -> None:
    engine = create_engine(url)
    factory = create_session_factory(engine)
    try:
        await build(factory, world)
        now = utcnow()
        async with factory() as session:  # the simulation: reads only
            live = await rules.current(session)
            draft = compile_ruleset(RulesetIn.model_validate({"rules": world["draft"]}), version=live.version + 1)
            ids = await replay.window_ids(session, {"last": WINDOW}, limit=WINDOW)
            shown = await replay.difference(session, ids, draft, now=now, keep_decisions=True)
        before = await snapshot(factory)
        async with transaction(factory) as session:  # apply the draft, then reroute the same window
            await rules.replace(
                session, data=RulesetVersionIn.model_validate({"rules": world["draft"]}), actor="test", now=now
            )
            done = await simulation.reroute(
                session, data=simulation.RerouteIn(window=replay.WindowIn(last=WINDOW)), actor="admin",
                settings=Settings(simulation_sync_max_comments=WINDOW), now=now,
            )  # fmt: skip
        after = await snapshot(factory)

        assert (done.rerouted, done.moved, done.kept) == (shown["rerouted"], shown["moved"], shown["kept"])
        decisions = shown["decisions"]
        assert {c: p for c, (p, _) in after.items()} == {
            c: (d["member"], d["team"], d["priority"], d["rule_id"], d["hold"]) for c, d in decisions.items()
        }
        changed = {c for c in after if after[c] != before[c]}
        assert changed == {c for c, d in decisions.items() if d["rerouted"]}
        moved = {c for c in after if owner(after[c][0]) != owner(before[c][0])}
        assert len(moved) == done.moved
        assert await rerouted_events(factory) == done.rerouted  # a no-op is neither counted nor audited

        async with transaction(factory) as session:  # and once more: nothing left to do
            again = await simulation.reroute(
                session, data=simulation.RerouteIn(window=replay.WindowIn(last=WINDOW)), actor="admin",
                settings=Settings(simulation_sync_max_comments=WINDOW), now=now,
            )  # fmt: skip
        assert (again.rerouted, again.moved) == (0, 0)
    finally:
        await engine.dispose()


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds())
def test_reroute_moves_exactly_what_the_simulation_showed(world: dict[str, Any], sqlite_template: Path) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"{uuid.uuid4().hex}.db"
        shutil.copy(sqlite_template, path)
        asyncio.run(scenario(f"sqlite+aiosqlite:///{path}", world))


@pytest.mark.parametrize("examples", [10])
def test_reroute_moves_exactly_what_the_simulation_showed_on_postgresql(examples: int, postgres_database: str) -> None:
    from tests.conftest import truncate_all

    @settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(world=worlds())
    def check(world: dict[str, Any]) -> None:
        asyncio.run(truncate_all(postgres_database))
        asyncio.run(scenario(postgres_database, world))

    check()
