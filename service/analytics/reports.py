"""Reports built on the figures: trends (series for charts), the threads with the most unanswered questions, and
responders' workload (admins only)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.analytics.facts import Answers, Key, q, s, t
from service.analytics.figures import GroupKey, figures_of, percentiles, totals
from service.analytics.schemas import (
    Bucket,
    Metric,
    PercentilesPublic,
    PointPublic,
    ResponderPublic,
    SeriesPublic,
    ThreadPublic,
    TrendGroup,
    TrendsPublic,
    UnansweredPublic,
    WorkloadPublic,
)
from service.analytics.scope import Scope, window
from service.database import table
from service.models import Comment, ItemState, Member
from service.models.queue import WAITING_STATES

c = table(Comment)


def _value(figures: dict[str, Any], metric: Metric) -> float | None:
    """One metric out of a group's figures."""
    special: dict[str, Any] = {
        "first_response_p50": figures["first_response_seconds"].p50,
        "first_response_p90": figures["first_response_seconds"].p90,
        "backlog": figures["backlog"].open,
        "sentiment_net": figures["sentiment"].net,
        "negative": figures["sentiment"].negative,
        "neutral": figures["sentiment"].neutral,
        "positive": figures["sentiment"].positive,
    }
    found = special[metric] if metric in special else figures[metric]
    return None if found is None else float(found)


def buckets(since: datetime, until: datetime, by: Bucket) -> list[str]:
    """Every bucket the window touches, named by its first day (weeks start on Monday, UTC)."""
    first, last = since.date(), (until - timedelta(microseconds=1)).date()
    step = timedelta(days=1)
    if by == "week":
        first, last, step = first - timedelta(days=first.weekday()), last - timedelta(days=last.weekday()), 7 * step
    found: list[str] = []
    day: date = first
    while day <= last:
        found.append(day.isoformat())
        day += step
    return found


async def trends(
    session: AsyncSession,
    *,
    metric: Metric,
    by: Bucket = "week",
    group: TrendGroup | None = None,
    scope: Scope,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
    limit: int = 10,
) -> TrendsPublic:
    """A metric per week or day; with `group`, one series per group (the `limit` with the most comments)."""
    if group == "member":
        scope.require_everything("the figures per member")
    w = window(session, scope=scope, since=since, until=until, now=now)
    keys: tuple[Key, ...] = (by,) if group is None else (by, group)
    found = await totals(session, w, keys)
    names = buckets(w.since, w.until, by)
    if group is None:
        chosen: list[Any] = [None]
    else:
        sizes: dict[Any, int] = {}
        for (_, g), total in found.items():
            sizes[g] = sizes.get(g, 0) + total.received
        chosen = sorted(sizes, key=lambda g: (-sizes[g], g is None, str(g)))[:limit]
    series = []
    for g in chosen:
        points = []
        for bucket in names:
            key: GroupKey = (bucket,) if group is None else (bucket, g)
            points.append(PointPublic(bucket=bucket, value=_value(figures_of(found.get(key)), metric)))
        series.append(SeriesPublic(key=None if g is None else str(g), points=points))
    return TrendsPublic(metric=metric, by=by, group=group, since=w.since, until=w.until, buckets=names, series=series)


async def unanswered_threads(
    session: AsyncSession, *, scope: Scope, since: datetime | None, until: datetime | None, now: datetime,
    limit: int = 20,
) -> UnansweredPublic:  # fmt: skip
    """The stories and threads whose comments of the window most often needed an answer and got none."""
    w = window(session, scope=scope, since=since, until=until, now=now)
    cte, per = w.base((), ("thread",))
    unanswered = per.needs - per.answered()
    age = sa.case((unanswered == 1, w.seconds(w.now_value(), per.received)), else_=sa.null())
    rows = sa.select(cte.c.k0, per.needs.label("needs"), unanswered.label("unanswered"), age.label("age")).subquery()
    per_thread = (
        sa.select(
            rows.c.k0.label("thread_id"),
            sa.func.count().label("received"),
            sa.func.sum(rows.c.needs).label("needs"),
            sa.func.sum(rows.c.unanswered).label("unanswered"),
            sa.func.max(rows.c.age).label("oldest"),
        )
        .where(rows.c.k0.is_not(None))
        .group_by(rows.c.k0)
        .having(sa.func.sum(rows.c.unanswered) > 0)
        .subquery()
    )
    stmt = (
        sa.select(per_thread, t.c.external_id, t.c.title, t.c.url, t.c.channel, s.c.slug)
        .join(t, t.c.id == per_thread.c.thread_id)
        .join(s, s.c.id == t.c.source_id)
        .order_by(per_thread.c.unanswered.desc(), per_thread.c.oldest.desc(), t.c.id)
        .limit(limit)
    )
    threads = [
        ThreadPublic(
            source=row.slug,
            external_id=row.external_id,
            title=row.title,
            url=row.url,
            channel=row.channel,
            received=int(row.received),
            needs_answer=int(row.needs),
            unanswered=int(row.unanswered),
            oldest_unanswered_seconds=None if row.oldest is None else round(float(row.oldest), 3),
        )
        for row in await session.execute(stmt)
    ]
    return UnansweredPublic(since=w.since, until=w.until, threads=threads)


async def workload(
    session: AsyncSession, *, scope: Scope, since: datetime | None, until: datetime | None, now: datetime
) -> WorkloadPublic:
    """Every member's open load now and, over the window, the comments they answered first and how fast."""
    scope.require_everything("responders' workload")
    w = window(session, scope=scope, since=since, until=until, now=now)
    waiting = q.c.state.in_([st.value for st in WAITING_STATES])
    who = sa.func.coalesce(q.c.claimed_by, q.c.member_id)
    load = await session.execute(
        sa.select(
            who.label("member"),
            sa.func.count(),
            sa.func.sum(sa.case((q.c.state == ItemState.claimed.value, 1), else_=0)),
            sa.func.sum(sa.case((q.c.state == ItemState.escalated.value, 1), else_=0)),
            sa.func.max(w.seconds(w.now_value(), c.c.received_at)),
        )
        .select_from(q.join(c, c.c.id == q.c.comment_id))
        .where(waiting, who.is_not(None))
        .group_by(who)
    )
    open_load = {row[0]: (int(row[1]), int(row[2]), int(row[3]), row[4]) for row in load}
    cte, per = w.base((), ("answered_by",))
    answered = {
        row[0]: int(row[1])
        for row in await session.execute(sa.select(cte.c.k0, sa.func.sum(per.answered())).group_by(cte.c.k0))
    }
    speed = await percentiles(session, w, Answers.first_response, ("answered_by",), (0.5, 0.9))
    members = await session.execute(
        sa.select(col(Member.id), col(Member.name)).where(col(Member.deleted_at).is_(None)).order_by(col(Member.id))
    )
    responders = []
    for member_id, name in members:
        n_open, claimed, escalated, oldest = open_load.get(member_id, (0, 0, 0, None))
        p50, p90 = speed.get((member_id,), [None, None])
        responders.append(
            ResponderPublic(
                member=member_id, name=name, open=n_open, claimed=claimed, escalated=escalated,
                oldest_open_seconds=None if oldest is None else round(float(oldest), 3),
                answered=answered.get(member_id, 0),
                first_response_seconds=PercentilesPublic(
                    p50=None if p50 is None else round(p50, 3), p90=None if p90 is None else round(p90, 3)
                ),
            )
        )  # fmt: skip
    return WorkloadPublic(since=w.since, until=w.until, responders=responders)
