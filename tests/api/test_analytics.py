"""The analytics API (routers/analytics.py) over HTTP, and the property that every figure equals a straightforward
recomputation in Python from the raw rows, on random histories, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routers import analytics as analytics_router
from service.analytics import export as exports
from service.analytics import figures, upkeep
from service.analytics.scope import Scope
from service.database import create_engine, create_session_factory, transaction
from service.models.queue import WAITING_STATES
from service.routing.facts import label_of
from tests.factories import ADMIN, create_member, create_source, create_team, responder_headers
from tests.unit.test_analytics_definitions import (
    HOUR,
    T0,
    THREADS,
    Event,
    Item,
    Row,
    answered,
    clear,
    doc,
    facts_table,
    insert,
    responder,
)

DAY = timedelta(days=1)
SINCE, UNTIL = T0, T0 + 7 * DAY
WINDOW = {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}
NOT_NEEDING = {"no_reply_needed", "duplicate", "spam", "out_of_scope", "follow_up", "staff_reply"}
WAITING = {s.value for s in WAITING_STATES}
BY = ("channel", "topic", "team", "member", "source", "thread", "week")


@pytest.fixture
async def api(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """The test app with the analytics routes (included here until switchboard/app.py includes them)."""
    app = client.app  # type: ignore[attr-defined]
    if not any(getattr(r, "path", "") == "/v1/admin/analytics/summary" for r in app.routes):
        app.include_router(analytics_router.router)
    return client


async def seed(client: httpx.AsyncClient, rows: list[Row]) -> None:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        await insert(session, rows)


def history() -> list[Row]:
    """A small week: two answered in time, one late, one waiting, one held and approved, one no-reply, one deleted."""
    return [
        Row(T0, doc=doc(sentiment="negative", emotion="anger", topic="pay"), pii=1,
            item=answered(3 * HOUR, topic="pay", sentiment="negative")),
        Row(T0 + HOUR, item=answered(HOUR, topic="pay", sentiment="neutral")),
        Row(T0 + 2 * HOUR, thread=1, item=answered(6 * HOUR, sla=4 * HOUR, member_id="bo", topic="it",
            sentiment="positive")),
        Row(T0 + DAY, thread=1, item=Item(member_id="bo", sla_seconds=3600, due_at=T0 + DAY + HOUR)),
        Row(T0 + 2 * DAY, thread=2, item=Item(team_id="mods", events=[Event("created", T0 + 2 * DAY, None, "held"),
            Event("approved", T0 + 2 * DAY + HOUR, "held", "open")])),
        Row(T0 + timedelta(days=2), item=Item(state="resolved", resolution="no_reply_needed", no_reply=True)),
        Row(T0 + timedelta(days=3), item=Item(state="resolved", resolution="comment_deleted", team_id="hr"),
            deleted_at=T0 + timedelta(days=3, hours=1)),
    ]  # fmt: skip


async def test_a_comms_lead_reads_the_summary_and_the_breakdown_by_channel(api: httpx.AsyncClient) -> None:
    await seed(api, history())
    response = await api.get("/v1/admin/analytics/summary", params=WINDOW, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    counts = ("received", "needs_answer", "answered", "escalated", "held", "approved", "pii")
    assert [body[k] for k in counts] == [7, 5, 3, 0, 1, 1, 1]
    assert body["response_rate"] == pytest.approx(0.6)
    assert body["within_sla"] == pytest.approx(2 / 4)  # two in time, one late, one waiting past due
    assert body["first_response_seconds"] == {"p50": 10800.0, "p90": 13680.0}  # 0 s, 3 h, 4 h
    assert body["backlog"]["open"] == 2
    assert body["sentiment"] == {"negative": 1, "neutral": 1, "positive": 1, "net": 0.0}
    assert body["emotions"] == {"anger": 1}
    assert body["topics"] == [{"topic": "pay", "count": 2}, {"topic": "it", "count": 1}]  # the items' labels
    response = await api.get("/v1/admin/analytics/breakdown", params={**WINDOW, "by": "channel"}, headers=ADMIN)
    assert response.status_code == 200, response.text
    groups = {g["key"]: (g["received"], g["needs_answer"], g["answered"]) for g in response.json()["groups"]}
    assert groups == {"news": (4, 2, 2), "hr": (2, 2, 1), None: (1, 1, 0)}


async def test_trends_unanswered_threads_and_workload(api: httpx.AsyncClient) -> None:
    await create_member(api, "bo")
    await seed(api, history())
    response = await api.get("/v1/admin/analytics/trends", params={**WINDOW, "metric": "received", "by": "day"},
                             headers=ADMIN)  # fmt: skip
    assert response.status_code == 200, response.text
    trend = response.json()
    assert trend["buckets"][:4] == ["2026-03-02", "2026-03-03", "2026-03-04", "2026-03-05"]
    assert [p["value"] for p in trend["series"][0]["points"]] == [
        3,
        1,
        2,
        1,
        0,
        0,
        0,
        0,
    ]  # 8 days: the window ends at 9:00
    grouped = await api.get("/v1/admin/analytics/trends", params={**WINDOW, "metric": "response_rate",
                                                                  "group": "channel"}, headers=ADMIN)  # fmt: skip
    assert {s["key"]: s["points"][0]["value"] for s in grouped.json()["series"]} == {"news": 1.0, "hr": 0.5,
                                                                                      None: 0.0}  # fmt: skip
    response = await api.get("/v1/admin/analytics/unanswered", params=WINDOW, headers=ADMIN)
    threads = [(t["external_id"], t["unanswered"]) for t in response.json()["threads"]]
    assert threads == [("story-2", 1), ("topic-9", 1)] or threads == [("topic-9", 1), ("story-2", 1)]
    response = await api.get("/v1/admin/analytics/workload", params=WINDOW, headers=ADMIN)
    assert response.status_code == 200, response.text
    (bo,) = response.json()["responders"]
    assert (bo["member"], bo["open"], bo["answered"]) == ("bo", 1, 0)


async def test_bad_queries_are_refused_with_problem_details(api: httpx.AsyncClient) -> None:
    cases = [
        ("/v1/admin/analytics/breakdown", {"by": "colour"}, "validation_error"),
        ("/v1/admin/analytics/summary", {"since": UNTIL.isoformat(), "until": SINCE.isoformat()}, "invalid_payload"),
        ("/v1/admin/analytics/summary", {"since": "2020-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
         "invalid_payload"),
        ("/v1/admin/analytics/summary", {"colour": "red"}, "validation_error"),
        ("/v1/admin/analytics/trends", {"metric": "happiness"}, "validation_error"),
        ("/v1/admin/analytics/export", {"format": "xlsx"}, "validation_error"),
        ("/v1/admin/analytics/export", {"since": UNTIL.isoformat(), "until": SINCE.isoformat()}, "invalid_payload"),
    ]  # fmt: skip
    for path, params, code in cases:
        response = await api.get(path, params=params, headers=ADMIN)
        assert response.status_code == 422, (path, params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code, (path, params)


async def test_responders_get_the_figures_of_their_items_and_teams_only(api: httpx.AsyncClient) -> None:
    await create_source(api, "other")
    await create_member(api, "bo")
    await create_team(api, "hr", ["bo"])
    await seed(api, history())
    bo = await responder_headers(api, "bo")
    assert (await api.get("/v1/admin/analytics/summary", params=WINDOW, headers=bo)).status_code == 403
    assert (await api.get("/v1/admin/analytics/workload", params=WINDOW, headers=bo)).status_code == 403
    mine = await api.get("/v1/analytics/summary", params=WINDOW, headers=bo)
    assert mine.status_code == 200, mine.text
    # the three answered ones are hr's or bo's, bo's waiting one, and the comment deleted from hr's queue
    assert (mine.json()["received"], mine.json()["needs_answer"]) == (5, 4)
    by_member = await api.get("/v1/analytics/breakdown", params={**WINDOW, "by": "member"}, headers=bo)
    assert by_member.status_code == 403
    everything = await api.get("/v1/analytics/summary", params=WINDOW, headers=ADMIN)
    assert everything.json()["received"] == 7
    rows = list(csv.DictReader(io.StringIO((await api.get("/v1/analytics/export", params=WINDOW, headers=bo)).text)))
    assert len(rows) == 5


async def test_the_export_streams_one_row_per_comment_and_redacts_bodies_when_asked(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exports, "CHUNK", 2)  # several chunks, read one keyset page at a time
    await seed(api, history())
    response = await api.get("/v1/admin/analytics/export", params=WINDOW, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        response.headers["content-disposition"] == 'attachment; filename="switchboard-comments-20260302-20260309.csv"'
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 7
    assert "body" not in rows[0]
    assert "jo@example.com" not in response.text
    assert [r["received_at"] for r in rows] == sorted(r["received_at"] for r in rows)
    assert (rows[0]["answered"], rows[0]["first_response_seconds"]) == ("True", "10800.0")
    assert sum(r["needs_answer"] == "True" for r in rows) == 5
    response = await api.get("/v1/admin/analytics/export", params={**WINDOW, "format": "json", "include_bodies": True},
                             headers=ADMIN)  # fmt: skip
    records = response.json()
    assert len({r["comment_id"] for r in records}) == len(records) == 7
    assert records[0]["body"] == "Will the canteen open earlier? Mail me at [EMAIL]"
    lines = (await api.get("/v1/admin/analytics/export", params={**WINDOW, "format": "jsonl"}, headers=ADMIN)).text
    assert [json.loads(line)["comment_id"] for line in lines.splitlines()] == [r["comment_id"] for r in records]
    nothing = {"format": "json", "since": "2020-01-01T00:00:00Z", "until": "2020-01-02T00:00:00Z"}
    empty = await api.get("/v1/admin/analytics/export", params=nothing, headers=ADMIN)
    assert empty.json() == []


# ---- the property -----------------------------------------------------------------------------------------


def needs(r: Row) -> bool:
    i = r.item
    if i is None or i.no_reply or i.resolution in NOT_NEEDING:
        return False
    if r.deleted_at is not None and i.first_response_at is None:
        return False
    if i.member_id or i.team_id:
        return True
    return r.analysed and label_of(r.doc, "needs_answer") == "needs_answer"


def events(r: Row, *actions: str) -> list[Event]:
    return [e for e in (r.item.events if r.item else []) if e.action in actions and e.at >= SINCE]


def facts(r: Row, now: datetime) -> dict[str, Any]:
    """The definitions of service.analytics, for one comment, in plain Python."""
    i, n = r.item, needs(r)
    answered_ = n and i is not None and i.first_response_at is not None
    due = i.due_at if i else None
    responded = i is not None and i.first_response_at is not None
    decided = n and due is not None and (responded or due <= now)
    waiting = n and i is not None and i.state in WAITING
    doc_ = r.doc if r.analysed else None
    return {
        "needs": n, "answered": answered_,
        "frs": (i.first_response_at - r.received_at).total_seconds() if answered_ and i and i.first_response_at
        else None,
        "decided": decided, "met": bool(answered_ and due and i and i.first_response_at and i.first_response_at <= due),
        "waiting": waiting, "age": (now - r.received_at).total_seconds() if waiting else None,
        "escalated": bool(events(r, "escalated")),
        "held": bool(i and (i.state == "held" or any(e.after == "held" for e in events(r, "created", "rerouted")))),
        "approved": bool(events(r, "approved")),
        "rejected": any(e.before == "held" and e.after in ("answered", "resolved") and e.resolution != "comment_deleted"
                        for e in events(r, "resolved", "answered")),
        "pii": r.analysed and r.pii > 0,
        "sentiment": i.sentiment if i else label_of(doc_, "sentiment"),
        "topic": i.topic if i else label_of(doc_, "topic"),
        "emotion": label_of(doc_, "emotion"),
    }  # fmt: skip


def linear(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    h = (len(v) - 1) * p
    lo = int(h)
    return v[lo] + (h - lo) * (v[lo + 1] - v[lo]) if lo + 1 < len(v) else v[lo]


def expected(rows: list[Row], now: datetime) -> dict[str, Any]:
    f = [facts(r, now) for r in rows]

    def count(name: str) -> int:
        return sum(bool(x[name]) for x in f)

    def ratio(part: int, whole: int) -> float | None:
        return part / whole if whole else None

    sentiments = {s: sum(x["sentiment"] == s for x in f) for s in ("negative", "neutral", "positive")}
    topics: dict[str, int] = {}
    emotions: dict[str, int] = {}
    for x in f:
        if x["topic"]:
            topics[x["topic"]] = topics.get(x["topic"], 0) + 1
        if x["emotion"]:
            emotions[x["emotion"]] = emotions.get(x["emotion"], 0) + 1
    ages = [x["age"] for x in f if x["age"] is not None]
    frs = [x["frs"] for x in f if x["frs"] is not None]
    return {
        "received": len(rows), "needs_answer": count("needs"), "answered": count("answered"),
        "response_rate": ratio(count("answered"), count("needs")),
        "first_response_seconds": {"p50": linear(frs, 0.5), "p90": linear(frs, 0.9)},
        "within_sla": ratio(count("met"), count("decided")), "escalated": count("escalated"),
        "backlog": {"open": count("waiting"), "oldest_seconds": max(ages) if ages else None,
                    "p50_seconds": linear(ages, 0.5)},
        "held": count("held"), "approved": count("approved"), "rejected": count("rejected"), "pii": count("pii"),
        "sentiment": {**sentiments, "net": ratio(sentiments["positive"] - sentiments["negative"],
                                                 sum(sentiments.values()))},
        "emotions": dict(sorted(emotions.items())),
        "topics": [{"topic": k, "count": c} for k, c in sorted(topics.items(), key=lambda kv: (-kv[1], kv[0]))[:10]],
    }  # fmt: skip


def key_of(r: Row, by: str, now: datetime) -> str | None:
    slug, external_id, channel, _ = THREADS[r.thread]
    day = r.received_at.date()
    keys = {"channel": channel, "topic": facts(r, now)["topic"], "team": r.item.team_id if r.item else None,
            "member": r.item.member_id if r.item else None, "source": slug, "thread": external_id,
            "week": (day - timedelta(days=day.weekday())).isoformat()}  # fmt: skip
    found: str | None = keys[by]
    return found


def assert_same(found: dict[str, Any], want: dict[str, Any], where: str) -> None:
    for name, value in want.items():
        got = found[name]
        if isinstance(value, dict) and name not in ("emotions",):
            for sub, v in value.items():
                assert got[sub] == pytest.approx(v, abs=1e-2), (where, name, sub, got, v)
        else:
            assert got == (pytest.approx(value, abs=1e-9) if isinstance(value, float) else value), (where, name)


MINUTES = st.integers(min_value=0, max_value=600).map(lambda m: timedelta(minutes=m))
labels = st.sampled_from([None, "negative", "neutral", "positive"])


@st.composite
def items(draw: st.DrawFn, received: datetime) -> Item:
    state = draw(st.sampled_from(["held", "open", "claimed", "escalated", "answered", "resolved"]))
    resolution = {"answered": "answered", "resolved": draw(st.sampled_from(
        ["answered_on_platform", "no_reply_needed", "duplicate", "spam", "out_of_scope", "follow_up", "staff_reply",
         "comment_deleted"]))}.get(state)  # fmt: skip
    sla = draw(st.sampled_from([None, 3600, 4 * 3600]))
    first = draw(st.one_of(st.none(), MINUTES)) if state not in ("held",) else None
    kinds = draw(st.lists(st.sampled_from(["held", "approved", "rejected", "escalated", "deleted_while_held"]),
                          max_size=3, unique=True))  # fmt: skip
    evs = [Event("created", received, None, "held" if "held" in kinds or state == "held" else "open")]
    at = received + draw(MINUTES)
    if "approved" in kinds:
        evs.append(Event("approved", at, "held", "open"))
    if "rejected" in kinds:
        evs.append(Event("resolved", at, "held", "resolved", draw(st.sampled_from(["spam", "duplicate"]))))
    if "deleted_while_held" in kinds:
        evs.append(Event("resolved", at, "held", "resolved", "comment_deleted"))
    if "escalated" in kinds:
        evs.append(Event("escalated", at, "open", "escalated"))
    return Item(
        state=state, resolution=resolution, member_id=draw(st.sampled_from([None, "bo", "cy"])),
        team_id=draw(st.sampled_from([None, "hr", "it"])), claimed_by=draw(st.sampled_from([None, "bo"])),
        no_reply=draw(st.booleans()), sla_seconds=sla, due_at=received + timedelta(seconds=sla) if sla else None,
        first_response_at=received + first if first is not None else None, answered_by="bo" if first else None,
        topic=draw(st.sampled_from([None, "pay", "it"])), sentiment=draw(labels), events=evs,
    )  # fmt: skip


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Row], datetime]:
    rows = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        received = T0 + timedelta(minutes=draw(st.integers(min_value=-2 * 24 * 60, max_value=9 * 24 * 60)))
        classification = draw(st.sampled_from([
            None, doc(), doc(needs="no_answer", emotion="joy"), doc(needs=None, sentiment="negative", topic="pay"),
            doc(emotion="anger", sentiment="positive", topic="it"), {"sentiment": {"label": ""}, "emotion": "x"},
        ]))  # fmt: skip
        deleted = draw(st.one_of(st.none(), MINUTES))
        rows.append(Row(
            received, thread=draw(st.integers(0, 2)), doc=classification, analysed=draw(st.booleans()),
            pii=draw(st.integers(0, 2)), item=draw(st.one_of(st.none(), items(received))),
            deleted_at=received + deleted if deleted is not None else None, echo=draw(st.integers(0, 9)) == 0,
        ))  # fmt: skip
    return rows, T0 + timedelta(minutes=draw(st.integers(min_value=0, max_value=10 * 24 * 60)))


async def check_history(url: str, rows: list[Row], now: datetime) -> None:
    engine = create_engine(url)
    factory = create_session_factory(engine)
    try:
        async with transaction(factory) as session:
            await clear(session)
            await insert(session, rows, orm=True)  # the facts are kept at commit
        async with transaction(factory) as session:
            kept = await facts_table(session)
            await upkeep.rebuild(session)
            assert await facts_table(session) == kept, "the facts kept at commit differ from a rebuild"
        seen = [r for r in rows if SINCE <= r.received_at < UNTIL and not r.echo]
        async with transaction(factory) as session:
            found = await figures.summary(session, scope=Scope.all(), since=SINCE, until=UNTIL, now=now)
            assert_same(found.model_dump(), expected(seen, now), "summary")
            bo = [
                r for r in seen if r.item and ("bo" in (r.item.member_id, r.item.claimed_by) or r.item.team_id == "hr")
            ]
            mine = await figures.summary(session, scope=responder("bo", ["hr"]), since=SINCE, until=UNTIL, now=now)
            assert_same(mine.model_dump(), expected(bo, now), "responder")
            for by in BY:
                groups: dict[str | None, list[Row]] = {}
                for r in seen:
                    groups.setdefault(key_of(r, by, now), []).append(r)
                got = await figures.breakdown(session, by=by, scope=Scope.all(), since=SINCE, until=UNTIL, now=now)  # type: ignore[arg-type]
                assert {g.key for g in got.groups} == set(groups), by
                for g in got.groups:
                    assert_same(g.model_dump(), expected(groups[g.key], now), f"{by}={g.key}")
    finally:
        await engine.dispose()


def test_every_figure_equals_a_recomputation_from_the_raw_rows(database_url: str) -> None:
    @settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(history=histories())
    def check(history: tuple[list[Row], datetime]) -> None:
        asyncio.run(check_history(database_url, *history))

    check()
