"""The definitions in `service.analytics` as SQL: one row per comment received in a window, with the columns a
query asks for (each a 0/1 flag, a label, a duration or a grouping key), on SQLite and PostgreSQL alike.

The rows come from the analytics facts (`service.analytics.tables`, kept by `service.analytics.upkeep`): one
narrow row per comment with the ingredients of every definition. What depends on `now` (the backlog, deadlines
passed) is decided here, when the query runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from service.analytics import upkeep
from service.analytics.tables import AnalyticsFact
from service.database import table
from service.models import QueueItem, Source, Thread
from service.models.base import UTCDateTime

Dialect = Literal["sqlite", "postgresql"]
Key = Literal["channel", "topic", "team", "member", "source", "thread", "week", "day", "answered_by"]

SENTIMENTS = ("negative", "neutral", "positive")

f = table(AnalyticsFact)
q = table(QueueItem)
t = table(Thread)
s = table(Source)


def _flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.case((condition, 1), else_=0)


def _int(flag: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    """A stored boolean as 0 or 1, for sums."""
    return sa.cast(flag, sa.Integer)


@dataclass(frozen=True, slots=True)
class Window:
    """What a query covers: comments received in [since, until) that `scope` (SQL over queue_item; None: every
    comment) lets it see; `now` is the time the backlog and the deadlines are judged at."""

    dialect: Dialect
    since: datetime
    until: datetime
    now: datetime
    scope: sa.ColumnElement[bool] | None

    # ---- time, per dialect ------------------------------------------------------------------------------------

    def seconds(self, later: sa.ColumnElement[Any], earlier: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
        """later - earlier in seconds (a float)."""
        return upkeep.seconds(self.dialect, later, earlier)

    def now_value(self) -> sa.ColumnElement[datetime]:
        return sa.literal(self.now, UTCDateTime())

    def day(self, when: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        """The UTC date, 'YYYY-MM-DD'."""
        if self.dialect == "postgresql":
            return sa.func.to_char(sa.func.timezone("UTC", when), "YYYY-MM-DD")
        return sa.func.date(when)

    def week(self, when: sa.ColumnElement[Any]) -> sa.ColumnElement[str]:
        """The Monday (UTC) that starts the ISO week, 'YYYY-MM-DD'."""
        if self.dialect == "postgresql":
            return sa.func.to_char(sa.func.date_trunc("week", sa.func.timezone("UTC", when)), "YYYY-MM-DD")
        return sa.func.date(when, "weekday 0", "-6 days")

    # ---- the definitions --------------------------------------------------------------------------------------

    def needs(self) -> sa.ColumnElement[int]:
        """1 if the comment needs an answer (decided when its fact row was derived: `upkeep.derive`), else 0."""
        return _int(f.c.needs)

    def escalated(self) -> sa.ColumnElement[int]:
        return _flag(f.c.escalated.is_(True))

    def held(self) -> sa.ColumnElement[int]:
        return _flag(f.c.held.is_(True))

    def approved(self) -> sa.ColumnElement[int]:
        return _flag(f.c.approved.is_(True))

    def rejected(self) -> sa.ColumnElement[int]:
        return _flag(f.c.rejected.is_(True))

    def pii(self) -> sa.ColumnElement[int]:
        return _flag(f.c.pii.is_(True))

    def sentiment(self) -> sa.ColumnElement[str]:
        return f.c.sentiment

    def topic(self) -> sa.ColumnElement[str]:
        return f.c.topic

    def emotion(self) -> sa.ColumnElement[str]:
        return f.c.emotion

    def key(self, name: Key) -> sa.ColumnElement[Any]:
        """A grouping key."""
        keys: dict[str, Any] = {
            "channel": lambda: t.c.channel,
            "topic": self.topic,
            "team": lambda: f.c.team_id,
            "member": lambda: f.c.member_id,
            "answered_by": lambda: f.c.answered_by,
            "source": lambda: s.c.slug,
            "thread": lambda: f.c.thread_id,  # shown as its external id and title
            "week": lambda: self.week(f.c.received_at),
            "day": lambda: self.day(f.c.received_at),
        }
        expression: sa.ColumnElement[Any] = keys[name]()
        return expression

    # ---- the rows ---------------------------------------------------------------------------------------------

    def rows(
        self,
        columns: Sequence[sa.ColumnElement[Any]],
        keys: Sequence[Key] = (),
        *,
        places: bool = False,
        joins: Callable[[sa.FromClause], sa.FromClause] | None = None,
    ) -> sa.Select[Any]:
        """One row per comment in the window and the scope: the grouping keys `k0`, `k1`, ... then `columns`
        (`places`: the thread and the source are joined for the columns to read; `joins` adds more)."""
        joined: sa.FromClause = f
        if self.scope is not None:
            joined = joined.outerjoin(q, q.c.id == f.c.item_id)
        if places or {"channel", "thread"} & set(keys):
            joined = joined.outerjoin(t, t.c.id == f.c.thread_id)
        if places or "source" in keys:
            joined = joined.join(s, s.c.id == f.c.source_id)
        if joins is not None:
            joined = joins(joined)
        labelled = [self.key(k).label(f"k{i}") for i, k in enumerate(keys)]
        conditions = [f.c.received_at >= self.since, f.c.received_at < self.until]
        if self.scope is not None:
            conditions.append(self.scope)
        return sa.select(*labelled, *columns).select_from(joined).where(*conditions)

    def base(
        self,
        columns: Sequence[sa.ColumnElement[Any]] = (),
        keys: Sequence[Key] = (),
        *,
        shape: Callable[[sa.Select[Any]], sa.Select[Any]] | None = None,
        places: bool = False,
        joins: Callable[[sa.FromClause], sa.FromClause] | None = None,
    ) -> tuple[sa.CTE, Answers]:
        """`rows` with what the answer figures derive from (a CTE whose columns the figures read); `shape` may
        order and limit."""
        select = self.rows(
            [
                self.needs().label("needs"), _int(f.c.answered).label("answered"),
                f.c.first_response_seconds.label("frs"), _int(f.c.sla_met).label("sla_met"),
                _int(f.c.waiting).label("waiting"), f.c.first_response_at.label("fr"), f.c.due_at.label("due"),
                f.c.state.label("state"), f.c.received_at.label("received"), *columns,
            ],
            keys,
            places=places,
            joins=joins,
        )  # fmt: skip
        cte = (shape(select) if shape else select).cte("per_comment")
        return cte, Answers(self, cte)


@dataclass(frozen=True, slots=True)
class Answers:
    """The answer figures of one comment, from the columns of `Window.base` (`cte`): those decided when the fact row
    was derived, and those that depend on the window's `now`."""

    w: Window
    cte: sa.CTE

    @property
    def needs(self) -> sa.ColumnElement[int]:
        return self.cte.c.needs

    @property
    def fr(self) -> sa.ColumnElement[datetime]:
        return self.cte.c.fr

    @property
    def due(self) -> sa.ColumnElement[datetime]:
        return self.cte.c.due

    @property
    def state(self) -> sa.ColumnElement[str]:
        return self.cte.c.state

    @property
    def received(self) -> sa.ColumnElement[datetime]:
        return self.cte.c.received

    def answered(self) -> sa.ColumnElement[int]:
        return self.cte.c.answered

    def first_response(self) -> sa.ColumnElement[float]:
        """Seconds from receipt to the first response, for answered comments (else NULL)."""
        return self.cte.c.frs

    def sla_decided(self) -> sa.ColumnElement[int]:
        decided = sa.or_(self.fr.is_not(None), self.due <= self.w.now_value())
        return sa.case((sa.and_(self.due.is_not(None), decided), self.needs), else_=0)

    def sla_met(self) -> sa.ColumnElement[int]:
        return self.cte.c.sla_met

    def waiting(self) -> sa.ColumnElement[int]:
        return self.cte.c.waiting

    def age(self) -> sa.ColumnElement[float]:
        """Seconds since receipt, for the backlog (else NULL)."""
        return sa.case((self.waiting() == 1, self.w.seconds(self.w.now_value(), self.received)), else_=sa.null())
