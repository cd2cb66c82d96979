"""The figures of `service.analytics`, per group, computed in SQL: a few GROUP BY queries over the per-comment
rows of `facts.Window` (counts and sums; percentiles; the label mixes), assembled here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from service.analytics.facts import SENTIMENTS, Answers, Key, Window, t
from service.analytics.schemas import (
    BacklogPublic,
    BreakdownPublic,
    GroupBy,
    GroupPublic,
    PercentilesPublic,
    SentimentPublic,
    SummaryPublic,
    TopicCount,
)
from service.analytics.scope import Scope, window

GroupKey = tuple[Any, ...]
TOP_TOPICS = 10
WORK_MEM = "64MB"  # PostgreSQL: a breakdown sorts the window's rows by group for its percentiles
_COUNTS = ("needs", "answered", "sla_decided", "sla_met", "escalated", "waiting", "held", "approved", "rejected", "pii")


@dataclass(slots=True)
class Totals:
    """One group's raw aggregates, before they become figures."""

    received: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    oldest: float | None = None
    sentiment: dict[str, int] = field(default_factory=dict)
    first_response: tuple[float | None, float | None] = (None, None)
    age_p50: float | None = None
    emotions: dict[str, int] = field(default_factory=dict)
    topics: dict[str, int] = field(default_factory=dict)


def _pg_percentiles(per: Answers) -> list[sa.ColumnElement[Any]]:
    """The percentiles PostgreSQL computes with the sums: first response p50 and p90 (one sort for both), backlog age
    p50."""
    both = sa.func.percentile_cont(postgresql.array([0.5, 0.9]), type_=postgresql.ARRAY(sa.Float))
    return [both.within_group(per.first_response()), sa.func.percentile_cont(0.5).within_group(per.age())]


def _keys(sub: sa.Subquery | sa.CTE, n: int) -> list[sa.ColumnElement[Any]]:
    return [sub.c[f"k{i}"] for i in range(n)]


def _key_of(row: Sequence[Any], n: int) -> GroupKey:
    return tuple(row[i] for i in range(n))


async def percentiles(
    session: AsyncSession,
    w: Window,
    value: Callable[[Answers], sa.ColumnElement[Any]],
    keys: Sequence[Key],
    ps: Sequence[float],
) -> dict[GroupKey, list[float | None]]:
    """Linear-interpolation percentiles of `value` (NULLs left out) per group: `percentile_cont` on PostgreSQL,
    the same formula over ranks from window functions on SQLite."""
    cte, per = w.base((), keys)
    rows = sa.select(*_keys(cte, len(keys)), value(per).label("v")).subquery()
    ks = _keys(rows, len(keys))
    stmt: sa.Select[Any]
    if w.dialect == "postgresql":
        stmt = (
            sa.select(*ks, *(sa.func.percentile_cont(p).within_group(rows.c.v) for p in ps))
            .where(rows.c.v.is_not(None))
            .group_by(*ks)
        )
    else:
        partition = ks or None
        ranked = (
            sa.select(
                *ks,
                rows.c.v,
                (sa.func.row_number().over(partition_by=partition, order_by=rows.c.v) - 1).label("i"),
                sa.func.count().over(partition_by=partition).label("n"),
            )
            .where(rows.c.v.is_not(None))
            .subquery()
        )
        rk = _keys(ranked, len(keys))
        parts = []
        for p in ps:
            h = (ranked.c.n - 1) * sa.literal(p, sa.Float)
            lo = sa.cast(h, sa.Integer)
            frac = h - lo
            parts.append(
                sa.func.sum(
                    sa.case(
                        (ranked.c.i == lo, ranked.c.v * (1 - frac)),
                        (ranked.c.i == lo + 1, ranked.c.v * frac),
                        else_=0.0,
                    )
                )
            )
        stmt = sa.select(*rk, *parts).group_by(*rk)
    found: dict[GroupKey, list[float | None]] = {}
    for row in await session.execute(stmt):
        found[_key_of(row, len(keys))] = [None if v is None else float(v) for v in row[len(keys) :]]
    return found


async def _mixes(session: AsyncSession, w: Window, keys: Sequence[Key]) -> dict[str, dict[GroupKey, dict[str, int]]]:
    """Counts per emotion and per topic, per group: one pass, counting each (emotion, topic) pair per group."""
    rows = w.rows([w.emotion().label("emotion"), w.topic().label("topic")], keys).subquery("labels")
    ks = _keys(rows, len(keys))
    stmt = sa.select(*ks, rows.c.emotion, rows.c.topic, sa.func.count()).group_by(*ks, rows.c.emotion, rows.c.topic)
    found: dict[str, dict[GroupKey, dict[str, int]]] = {"emotion": defaultdict(dict), "topic": defaultdict(dict)}
    n = len(keys)
    for row in await session.execute(stmt):
        key, emotion, topic, count = tuple(row[:n]), row[n], row[n + 1], int(row[n + 2])
        for kind, label in (("emotion", emotion), ("topic", topic)):
            if label is not None:
                group = found[kind][key]
                group[label] = group.get(label, 0) + count
    return found


async def totals(session: AsyncSession, w: Window, keys: Sequence[Key]) -> dict[GroupKey, Totals]:
    """Every group's aggregates (groups with no comment are absent)."""
    if w.dialect == "postgresql":  # the per-group sorts of the percentiles stay in memory (this transaction only)
        await session.execute(sa.text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
    columns: list[sa.ColumnElement[Any]] = [
        w.escalated().label("escalated"), w.held().label("held"), w.approved().label("approved"),
        w.rejected().label("rejected"), w.pii().label("pii"), w.sentiment().label("sentiment"),
    ]  # fmt: skip
    cte, per = w.base(columns, keys)
    ks = _keys(cte, len(keys))
    sums = {
        "needs": per.needs, "answered": per.answered(), "sla_decided": per.sla_decided(), "sla_met": per.sla_met(),
        "escalated": cte.c.escalated, "waiting": per.waiting(), "held": cte.c.held, "approved": cte.c.approved,
        "rejected": cte.c.rejected, "pii": cte.c.pii,
    }  # fmt: skip
    stmt = sa.select(
        *ks,
        sa.func.count(),
        *(sa.func.coalesce(sa.func.sum(sums[name]), 0) for name in _COUNTS),
        sa.func.max(per.age()),
        *(sa.func.coalesce(sa.func.sum(sa.case((cte.c.sentiment == x, 1), else_=0)), 0) for x in SENTIMENTS),
        *(_pg_percentiles(per) if w.dialect == "postgresql" else ()),
    ).group_by(*ks)
    n = len(keys)
    found: dict[GroupKey, Totals] = {}
    for row in await session.execute(stmt):
        values = list(row[n:])
        if not values[0]:
            continue  # the single group of an empty window
        counts = dict(zip(_COUNTS, (int(v) for v in values[1 : 1 + len(_COUNTS)]), strict=True))
        oldest = values[1 + len(_COUNTS)]
        sentiment = dict(zip(SENTIMENTS, (int(v) for v in values[2 + len(_COUNTS) : 5 + len(_COUNTS)]), strict=True))
        found[_key_of(row, n)] = Totals(
            received=int(values[0]),
            counts=counts,
            oldest=None if oldest is None else float(oldest),
            sentiment=sentiment,
        )
        if w.dialect == "postgresql":
            both, age = values[-2:]
            p50, p90 = (None, None) if both is None else (float(both[0]), float(both[1]))
            age = None if age is None else float(age)
            found[_key_of(row, n)].first_response, found[_key_of(row, n)].age_p50 = (p50, p90), age
    if not found:
        return found
    if w.dialect == "sqlite":  # PostgreSQL's came with the sums (percentile_cont)
        for key, (p50, p90) in (await percentiles(session, w, Answers.first_response, keys, (0.5, 0.9))).items():
            if key in found:
                found[key].first_response = (p50, p90)
        for key, (p50,) in (await percentiles(session, w, Answers.age, keys, (0.5,))).items():
            if key in found:
                found[key].age_p50 = p50
    mixes = await _mixes(session, w, keys)
    for key, group in found.items():
        group.emotions = mixes["emotion"].get(key, {})
        group.topics = mixes["topic"].get(key, {})
    return found


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def figures_of(totals: Totals | None) -> dict[str, Any]:
    """A group's aggregates as the fields of FiguresPublic."""
    g = totals or Totals(counts=dict.fromkeys(_COUNTS, 0), sentiment=dict.fromkeys(SENTIMENTS, 0))
    k = g.counts
    classified = sum(g.sentiment.values())
    net = _ratio(g.sentiment["positive"] - g.sentiment["negative"], classified)
    topics = sorted(g.topics.items(), key=lambda item: (-item[1], item[0]))[:TOP_TOPICS]
    return {
        "received": g.received,
        "needs_answer": k["needs"],
        "answered": k["answered"],
        "response_rate": _ratio(k["answered"], k["needs"]),
        "first_response_seconds": PercentilesPublic(p50=_round(g.first_response[0]), p90=_round(g.first_response[1])),
        "within_sla": _ratio(k["sla_met"], k["sla_decided"]),
        "escalated": k["escalated"],
        "backlog": BacklogPublic(open=k["waiting"], oldest_seconds=_round(g.oldest), p50_seconds=_round(g.age_p50)),
        "held": k["held"],
        "approved": k["approved"],
        "rejected": k["rejected"],
        "pii": k["pii"],
        "sentiment": SentimentPublic(**g.sentiment, net=net),
        "emotions": dict(sorted(g.emotions.items())),
        "topics": [TopicCount(topic=name, count=count) for name, count in topics],
    }


async def summary(
    session: AsyncSession, *, scope: Scope, since: datetime | None, until: datetime | None, now: datetime
) -> SummaryPublic:
    """The figures of every comment received in the window that the caller sees."""
    w = window(session, scope=scope, since=since, until=until, now=now)
    found = await totals(session, w, ())
    return SummaryPublic(since=w.since, until=w.until, **figures_of(found.get(())))


async def _thread_names(session: AsyncSession, ids: list[int]) -> dict[int, tuple[str, str | None]]:
    rows = await session.execute(sa.select(t.c.id, t.c.external_id, t.c.title).where(t.c.id.in_(ids)))
    return {row.id: (row.external_id, row.title) for row in rows}


async def breakdown(
    session: AsyncSession,
    *,
    by: GroupBy,
    scope: Scope,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    limit: int = 100,
) -> BreakdownPublic:
    """The figures per channel, topic, team, member (admins only), source, thread or week: the `limit` groups with
    the most comments, most first (weeks: the first `limit`, in order)."""
    if by == "member":
        scope.require_everything("the figures per member")
    w = window(session, scope=scope, since=since, until=until, now=now)
    found = await totals(session, w, (by,))
    if by == "week":
        chosen = sorted(found, key=lambda k: k[0])[:limit]
    else:
        chosen = sorted(found, key=lambda k: (-found[k].received, k[0] is None, str(k[0])))[:limit]
    names = await _thread_names(session, [k[0] for k in chosen if k[0] is not None]) if by == "thread" else {}
    groups = []
    for key in chosen:
        value, label = key[0], None
        if by == "thread" and value is not None:
            value, label = names[value]
        groups.append(GroupPublic(key=None if value is None else str(value), label=label, **figures_of(found[key])))
    return BreakdownPublic(by=by, since=w.since, until=w.until, groups=groups)
