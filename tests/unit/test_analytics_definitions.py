"""Known answers for the analytics definitions (service.analytics, docs/analytics.md), on SQLite and PostgreSQL.

Histories are written straight into the tables (comments, analyses, items, audit events) as the queue, routing,
the SLA clock and deliveries leave them; `History` is shared with the property test in tests/api/test_analytics.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from service.analytics import figures, upkeep
from service.analytics.scope import Scope
from service.analytics.tables import AnalyticsFact
from service.audit.tables import AuditEvent
from service.auth.keys import Principal
from service.database import SessionFactory, create_engine, create_session_factory, table, transaction
from service.errors import Forbidden, InvalidPayload
from service.models import Comment, CommentAnalysis, QueueItem, Role, Source, Thread
from service.models.queue import NO_DUE, PRIORITY_RANK, Priority
from service.queue.viewer import Viewer

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday
HOUR = timedelta(hours=1)
THREADS = (("intranet", "story-1", "news", "Canteen hours"), ("intranet", "story-2", "hr", "Pay day"),
           ("forum", "topic-9", None, None))  # fmt: skip


def doc(*, needs: str | None = "needs_answer", sentiment: str | None = "neutral", emotion: str | None = None,
        topic: str | None = "other") -> dict[str, Any]:  # fmt: skip
    """A classification document (labels only: what the figures read)."""

    def head(label: str | None) -> dict[str, Any] | None:
        return None if label is None else {"label": label, "scores": {label: 0.9}}

    return {"needs_answer": head(needs), "sentiment": head(sentiment), "emotion": head(emotion),
            "topic": head(topic), "pii": []}  # fmt: skip


@dataclass
class Event:
    """An audit event of an item: action (without `queue_item.`), when, the state before and after."""

    action: str
    at: datetime
    before: str | None
    after: str
    resolution: str | None = None


@dataclass
class Item:
    """A queue item as the queue leaves it."""

    state: str = "open"
    resolution: str | None = None
    member_id: str | None = None
    team_id: str | None = None
    claimed_by: str | None = None
    no_reply: bool = False
    sla_seconds: int | None = None
    due_at: datetime | None = None
    first_response_at: datetime | None = None
    answered_by: str | None = None
    topic: str | None = None
    sentiment: str | None = None
    events: list[Event] = field(default_factory=list)
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class Row:
    """A comment, its analysis (None: not processed) and its item (None: none)."""

    received_at: datetime
    thread: int = 0
    doc: dict[str, Any] | None = field(default_factory=doc)
    analysed: bool = True
    pii: int = 0
    item: Item | None = None
    deleted_at: datetime | None = None
    echo: bool = False
    body: str = "Will the canteen open earlier? Mail me at jo@example.com"
    id: uuid.UUID = field(default_factory=uuid.uuid4)


async def insert(session: Any, rows: list[Row], *, orm: bool = False) -> None:
    """Write the rows (and the sources and threads they name) into an empty database: in bulk, then the analytics
    facts rebuilt; or (`orm`) as ORM objects, whose facts the upkeep writes when the transaction commits."""
    source_ids: dict[str, int] = {}
    for slug in sorted({s for s, *_ in THREADS}):
        source = Source(slug=slug, name=slug.title(), kind="standard", secret="whsec_test", created_at=T0,
                        updated_at=T0)  # fmt: skip
        session.add(source)
        await session.flush()
        assert source.id is not None
        source_ids[slug] = source.id
    thread_ids = []
    for slug, external_id, channel, title in THREADS:
        thread = Thread(source_id=source_ids[slug], external_id=external_id, channel=channel, title=title,
                        created_at=T0, updated_at=T0)  # fmt: skip
        session.add(thread)
        await session.flush()
        thread_ids.append(thread.id)
    comments, analyses, items, events = [], [], [], []
    for n, row in enumerate(rows):
        slug = THREADS[row.thread][0]
        comments.append({
            "id": row.id, "source_id": source_ids[slug], "thread_id": thread_ids[row.thread], "external_id": f"c-{n}",
            "body": row.body, "version": 1, "received_at": row.received_at, "updated_at": row.received_at,
            "deleted_at": row.deleted_at, "echo_of_reply_id": uuid.uuid4() if row.echo else None,
        })  # fmt: skip
        if row.analysed:
            spans = [{"kind": "email", "start": i, "end": i + 1} for i in range(row.pii)]
            analyses.append({"comment_id": row.id, "comment_version": 1, "model_version": "t", "embedding": b"",
                             "pii": spans, "classification": row.doc, "duration_ms": 0.0,
                             "processed_at": row.received_at})  # fmt: skip
        item = row.item
        if item is None:
            continue
        items.append({
            "id": item.id, "comment_id": row.id, "source_id": source_ids[slug], "thread_id": thread_ids[row.thread],
            "state": item.state, "priority": "normal", "priority_rank": PRIORITY_RANK[Priority.normal],
            "member_id": item.member_id, "team_id": item.team_id, "claimed_by": item.claimed_by, "rule_id": "r",
            "ruleset_version": 1, "reason": "", "tags": [], "no_reply": item.no_reply, "manually_assigned": False,
            "sla_seconds": item.sla_seconds, "due_at": item.due_at, "sort_due": item.due_at or NO_DUE,
            "resolution": item.resolution, "first_response_at": item.first_response_at,
            "answered_by": item.answered_by, "topic": item.topic, "sentiment": item.sentiment, "reopen_count": 0,
            "channel": THREADS[row.thread][2], "created_at": row.received_at, "updated_at": row.received_at,
        })  # fmt: skip
        for e in item.events:
            events.append({
                "at": e.at, "actor": "test", "action": f"queue_item.{e.action}", "target_type": "queue_item",
                "target_id": str(item.id), "before": None if e.before is None else {"state": e.before},
                "after": {"state": e.after, "resolution": e.resolution},
            })  # fmt: skip
    tables: list[tuple[type[Any], list[dict[str, Any]]]] = [
        (Comment, comments), (CommentAnalysis, analyses), (QueueItem, items), (AuditEvent, events),
    ]  # fmt: skip
    for model, values in tables:
        if orm:
            session.add_all(model(**one) for one in values)
            await session.flush()
        elif values:
            await session.execute(sa.insert(table(model)), values)
    if not orm:
        await upkeep.rebuild(session)


async def facts_table(session: Any) -> list[tuple[Any, ...]]:
    """Every analytics fact row, in comment id order."""
    found = await session.execute(sa.select(table(AnalyticsFact)).order_by(table(AnalyticsFact).c.comment_id))
    return [tuple(row) for row in found]


async def clear(session: Any) -> None:
    """Remove what `insert` wrote."""
    for model in (AnalyticsFact, AuditEvent, QueueItem, CommentAnalysis, Comment, Thread, Source):
        await session.execute(sa.delete(table(model)))


def responder(member: str, teams: list[str]) -> Scope:
    """A responder's scope (member `member` of `teams`)."""
    viewer = Viewer(Principal(key_id=1, name="r", role=Role.responder, member_id=member), teams)
    return Scope(viewer.condition(), everything=False)


@pytest.fixture
async def factory(database_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(database_url)
    yield create_session_factory(engine)
    await engine.dispose()


async def summary_of(factory: SessionFactory, rows: list[Row], *, scope: Scope | None = None,
                     now: datetime | None = None) -> Any:  # fmt: skip
    async with transaction(factory) as session:
        await insert(session, rows)
    async with transaction(factory) as session:
        return await figures.summary(session, scope=scope or Scope.all(), since=T0, until=T0 + timedelta(days=7),
                                     now=now or T0 + timedelta(days=1))  # fmt: skip


def answered(after: timedelta, *, sla: timedelta | None = 4 * HOUR, **fields: Any) -> Item:
    """An item answered `after` the comment's receipt at T0."""
    due = T0 + sla if sla is not None else None
    sla_seconds = int(sla.total_seconds()) if sla is not None else None
    return Item(state="answered", resolution="answered", team_id="hr", sla_seconds=sla_seconds, due_at=due,
                first_response_at=T0 + after, answered_by="anna", **fields)  # fmt: skip


async def test_an_answer_after_3_hours_with_a_4_hour_sla_is_within_the_sla(factory: SessionFactory) -> None:
    found = await summary_of(factory, [Row(T0, item=answered(3 * HOUR))])
    assert (found.needs_answer, found.answered, found.response_rate, found.within_sla) == (1, 1, 1.0, 1.0)
    assert found.first_response_seconds.p50 == found.first_response_seconds.p90 == 3 * 3600


async def test_an_answer_after_5_hours_with_a_4_hour_sla_misses_it(factory: SessionFactory) -> None:
    found = await summary_of(factory, [Row(T0, item=answered(5 * HOUR)), Row(T0, item=answered(HOUR))])
    assert found.within_sla == 0.5


async def test_an_unanswered_comment_counts_against_the_sla_only_once_it_is_past_due(factory: SessionFactory) -> None:
    waiting = Item(team_id="hr", sla_seconds=4 * 3600, due_at=T0 + 4 * HOUR)
    rows = [Row(T0, item=answered(HOUR)), Row(T0, item=waiting)]
    assert (await summary_of(factory, rows, now=T0 + 2 * HOUR)).within_sla == 1.0
    async with transaction(factory) as session:
        late = await figures.summary(session, scope=Scope.all(), since=T0, until=T0 + HOUR, now=T0 + 5 * HOUR)
    assert late.within_sla == 0.5
    assert (late.backlog.open, late.backlog.oldest_seconds) == (1, 5 * 3600)


async def test_a_no_reply_item_does_not_lower_the_response_rate(factory: SessionFactory) -> None:
    no_reply = Item(state="resolved", resolution="no_reply_needed", team_id="hr", no_reply=True)
    closed_by_hand = Item(state="resolved", resolution="no_reply_needed", member_id="anna")
    rows = [Row(T0, item=answered(HOUR)), Row(T0, item=no_reply), Row(T0, item=closed_by_hand)]
    found = await summary_of(factory, rows)
    assert (found.received, found.needs_answer, found.answered, found.response_rate) == (3, 1, 1, 1.0)


async def test_a_comment_deleted_before_its_answer_needs_none_one_deleted_after_stays_answered(
    factory: SessionFactory,
) -> None:
    gone = Item(state="resolved", resolution="comment_deleted", team_id="hr")
    rows = [
        Row(T0, item=gone, deleted_at=T0 + HOUR),
        Row(T0, item=answered(HOUR), deleted_at=T0 + 2 * HOUR),
        Row(T0, deleted_at=T0 + HOUR, analysed=False),  # deleted before it was processed: no item
    ]
    found = await summary_of(factory, rows)
    assert (found.received, found.needs_answer, found.answered, found.backlog.open) == (3, 1, 1, 0)


async def test_needing_an_answer_is_the_label_or_an_owner(factory: SessionFactory) -> None:
    rows = [
        Row(T0, item=Item()),  # labelled needs_answer, in the unassigned pool
        Row(T0, doc=doc(needs="no_answer"), item=Item(member_id="anna")),  # routed to an owner
        Row(T0, doc=doc(needs="no_answer"), item=Item()),  # neither
        Row(T0, doc=doc(needs=None), item=Item()),  # no label
        Row(T0, doc=None, item=Item(team_id="hr")),  # no classification, but an owner
    ]
    found = await summary_of(factory, rows)
    assert (found.received, found.needs_answer, found.answered, found.backlog.open) == (5, 3, 0, 3)
    assert found.response_rate == 0.0


async def test_echoes_of_our_own_replies_are_not_received(factory: SessionFactory) -> None:
    found = await summary_of(factory, [Row(T0, item=answered(HOUR)), Row(T0 + HOUR, echo=True)])
    assert found.received == 1


async def test_percentiles_interpolate_linearly_between_closest_ranks(factory: SessionFactory) -> None:
    rows = [Row(T0, item=answered(timedelta(seconds=s), sla=None)) for s in (10, 20, 30, 40)]
    found = await summary_of(factory, rows)
    assert found.first_response_seconds.p50 == pytest.approx(25, abs=1e-3)
    assert found.first_response_seconds.p90 == pytest.approx(37, abs=1e-3)


async def test_moderation_and_escalation_come_from_the_audit_trail(factory: SessionFactory) -> None:
    def held_then(action: str | None, state: str = "open", resolution: str | None = None) -> Item:
        events = [Event("created", T0, None, "held")]
        if action:
            events.append(Event(action, T0 + HOUR, "held", state, resolution))
        return Item(state=state, resolution=resolution, team_id="mods", events=events)

    late = [Event("created", T0, None, "open"), Event("escalated", T0 + 5 * HOUR, "open", "escalated")]
    escalated = Item(state="escalated", team_id="hr", events=late)
    rows = [
        Row(T0, item=held_then(None, state="held")),
        Row(T0, item=held_then("approved")),
        Row(T0, item=held_then("resolved", "resolved", "spam")),
        Row(T0, item=held_then("resolved", "resolved", "comment_deleted"), deleted_at=T0 + HOUR),
        Row(T0, item=escalated),
    ]
    found = await summary_of(factory, rows)
    assert (found.held, found.approved, found.rejected, found.escalated) == (4, 1, 1, 1)


async def test_labels_mixes_and_personal_data(factory: SessionFactory) -> None:
    rows = [
        Row(
            T0,
            doc=doc(sentiment="negative", emotion="anger", topic="pay"),
            pii=2,
            item=Item(sentiment="negative", topic="pay"),
        ),
        # corrected by a responder: the item's labels count
        Row(T0, doc=doc(sentiment="negative", emotion="anger"), item=Item(sentiment="positive", topic="it")),
        Row(T0, doc=doc(sentiment="positive", emotion="joy", topic="pay")),  # no item: the classifier's
        Row(T0, doc={"sentiment": {"label": ""}, "emotion": {"label": 3}, "topic": "pay"}),  # not labels
    ]
    found = await summary_of(factory, rows)
    assert found.pii == 1
    assert found.sentiment.model_dump() == {"negative": 1, "neutral": 0, "positive": 2, "net": pytest.approx(1 / 3)}
    assert found.emotions == {"anger": 2, "joy": 1}
    assert [t.model_dump() for t in found.topics] == [{"topic": "pay", "count": 2}, {"topic": "it", "count": 1}]


async def test_a_responder_sees_the_comments_of_their_items_and_their_teams(factory: SessionFactory) -> None:
    rows = [
        Row(T0, item=answered(HOUR)),  # team hr
        Row(T0, item=Item(member_id="bo")),
        Row(T0, item=Item(team_id="it", claimed_by="bo")),
        Row(T0, item=Item(team_id="it")),
        Row(T0),  # no item: admins only
    ]
    assert (await summary_of(factory, rows, scope=responder("bo", ["hr"]))).received == 3
    async with transaction(factory) as session:
        everything = await figures.summary(session, scope=Scope.all(), since=T0, until=T0 + HOUR, now=T0)
        with pytest.raises(Forbidden):
            await figures.breakdown(session, by="member", scope=responder("bo", ["hr"]), since=T0,
                                    until=T0 + HOUR, now=T0)  # fmt: skip
    assert everything.received == 5


async def test_weeks_start_on_monday_and_threads_show_their_titles(factory: SessionFactory) -> None:
    rows = [Row(T0 - timedelta(hours=9, seconds=1)), Row(T0), Row(T0 + timedelta(days=6, hours=14), thread=2)]
    async with transaction(factory) as session:
        await insert(session, rows)
    async with transaction(factory) as session:
        weeks = await figures.breakdown(session, by="week", scope=Scope.all(), since=T0 - timedelta(days=1),
                                        until=T0 + timedelta(days=8), now=T0)  # fmt: skip
        threads = await figures.breakdown(session, by="thread", scope=Scope.all(), since=T0 - timedelta(days=1),
                                          until=T0 + timedelta(days=8), now=T0)  # fmt: skip
    assert [(g.key, g.received) for g in weeks.groups] == [("2026-02-23", 1), ("2026-03-02", 2)]
    assert [(g.key, g.label, g.received) for g in threads.groups] == [("story-1", "Canteen hours", 2),
                                                                      ("topic-9", None, 1)]  # fmt: skip


async def test_an_empty_window_has_zero_counts_and_no_rates(factory: SessionFactory) -> None:
    found = await summary_of(factory, [])
    assert (found.received, found.response_rate, found.within_sla, found.sentiment.net) == (0, None, None, None)
    assert (found.first_response_seconds.p50, found.backlog.oldest_seconds) == (None, None)


async def test_a_window_must_be_ordered_and_at_most_a_year(factory: SessionFactory) -> None:
    async with transaction(factory) as session:
        with pytest.raises(InvalidPayload):
            await figures.summary(session, scope=Scope.all(), since=T0, until=T0, now=T0)
        with pytest.raises(InvalidPayload):
            await figures.summary(session, scope=Scope.all(), since=T0 - timedelta(days=367), until=T0, now=T0)
