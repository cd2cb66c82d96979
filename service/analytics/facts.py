"""The definitions in `service.analytics` as SQL: one row per comment received in a window, with the columns a
query asks for (each a 0/1 flag, a label, a duration or a grouping key), on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from service.audit.tables import AuditEvent
from service.database import table
from service.models import Comment, CommentAnalysis, ItemState, QueueItem, Resolution, Source, Thread
from service.models.base import UTCDateTime
from service.models.queue import WAITING_STATES

Dialect = Literal["sqlite", "postgresql"]
Key = Literal["channel", "topic", "team", "member", "source", "thread", "week", "day", "answered_by"]

# Closed this way, an item is marked as needing no reply (by its rule's no_reply, or by a person or routing).
NOT_NEEDING = (
    Resolution.no_reply_needed, Resolution.duplicate, Resolution.spam, Resolution.out_of_scope,
    Resolution.follow_up, Resolution.staff_reply,
)  # fmt: skip
CLOSED = (ItemState.answered.value, ItemState.resolved.value)
SENTIMENTS = ("negative", "neutral", "positive")

c = table(Comment)
q = table(QueueItem)
a = table(CommentAnalysis)
t = table(Thread)
s = table(Source)
ev = table(AuditEvent)


def _flag(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[int]:
    return sa.case((condition, 1), else_=0)


@dataclass(frozen=True, slots=True)
class Window:
    """What a query covers: comments received in [since, until) that `scope` (SQL over queue_item) lets it see;
    `now` is the time the backlog and the deadlines are judged at."""

    dialect: Dialect
    since: datetime
    until: datetime
    now: datetime
    scope: sa.ColumnElement[bool]

    # ---- JSON, time and text, per dialect ---------------------------------------------------------------------

    def label(self, doc: sa.ColumnElement[Any], head: str) -> sa.ColumnElement[str]:
        """A head's label in a classification document, as `label_of` reads it (a non-empty string, else NULL)."""
        if self.dialect == "postgresql":
            # One parse of the document: the label as JSON, a string when its text starts with a quote.
            node = sa.func.json_extract_path(doc, sa.literal_column(f"'{head}'"), sa.literal_column("'label'"))
            text: sa.ColumnElement[Any] = node.op("#>>")(sa.literal_column("'{}'"))
            is_string: sa.ColumnElement[bool] = sa.func.left(sa.cast(node, sa.Text), 1) == '"'
        else:
            path = f"$.{head}.label"
            text = sa.func.json_extract(doc, path)
            is_string = sa.func.json_type(doc, path) == "text"
        return sa.case((is_string, sa.func.nullif(text, "")), else_=sa.null())

    def field(self, doc: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[str]:
        """A top-level text field of an audit record's JSON (`state`, `resolution`)."""
        if self.dialect == "postgresql":
            return doc.op("->>")(sa.literal_column(f"'{name}'"))
        return sa.func.json_extract(doc, f"$.{name}")

    def seconds(self, later: sa.ColumnElement[Any], earlier: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
        """later - earlier in seconds (a float)."""
        if self.dialect == "postgresql":
            return sa.cast(sa.extract("epoch", later - earlier), sa.Float)
        return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0

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

    def audited(self, *conditions: sa.ColumnElement[bool]) -> sa.Select[Any]:
        """Ids of the queue items with an audit event matching `conditions` (since the window's start)."""
        target: sa.ColumnElement[Any]
        if self.dialect == "postgresql":
            target = sa.cast(ev.c.target_id, sa.Uuid)
        else:  # SQLite stores a UUID as 32 hex digits; the audit trail names it with dashes
            target = sa.func.replace(ev.c.target_id, "-", "")
        return sa.select(target).where(ev.c.target_type == "queue_item", ev.c.at >= self.since, *conditions)

    # ---- the definitions --------------------------------------------------------------------------------------

    def needs(self) -> sa.ColumnElement[int]:
        """1 if the comment needs an answer (see the package's definitions), else 0."""
        routed = sa.or_(q.c.member_id.is_not(None), q.c.team_id.is_not(None))
        return sa.case(
            (q.c.id.is_(None), 0),
            (q.c.no_reply.is_(True), 0),
            (sa.func.coalesce(q.c.resolution, "").in_([r.value for r in NOT_NEEDING]), 0),
            (sa.and_(c.c.deleted_at.is_not(None), q.c.first_response_at.is_(None)), 0),
            (routed, 1),
            (self.label(a.c.classification, "needs_answer") == "needs_answer", 1),
            else_=0,
        )

    def escalated(self) -> sa.ColumnElement[int]:
        return _flag(q.c.id.in_(self.audited(ev.c.action == "queue_item.escalated")))

    def held(self) -> sa.ColumnElement[int]:
        entered = self.audited(
            ev.c.action.in_(["queue_item.created", "queue_item.rerouted"]), self.field(ev.c.after, "state") == "held"
        )
        return _flag(sa.or_(q.c.state == ItemState.held.value, q.c.id.in_(entered)))

    def approved(self) -> sa.ColumnElement[int]:
        return _flag(q.c.id.in_(self.audited(ev.c.action == "queue_item.approved")))

    def rejected(self) -> sa.ColumnElement[int]:
        closed = self.audited(
            ev.c.action.in_(["queue_item.resolved", "queue_item.answered"]),
            self.field(ev.c.before, "state") == ItemState.held.value,
            self.field(ev.c.after, "state").in_(CLOSED),
            sa.func.coalesce(self.field(ev.c.after, "resolution"), "") != Resolution.comment_deleted.value,
        )
        return _flag(q.c.id.in_(closed))

    def pii(self) -> sa.ColumnElement[int]:
        return _flag(sa.func.coalesce(sa.func.json_array_length(a.c.pii), 0) > 0)

    def sentiment(self) -> sa.ColumnElement[str]:
        return sa.case((q.c.id.is_not(None), q.c.sentiment), else_=self.label(a.c.classification, "sentiment"))

    def topic(self) -> sa.ColumnElement[str]:
        return sa.case((q.c.id.is_not(None), q.c.topic), else_=self.label(a.c.classification, "topic"))

    def emotion(self) -> sa.ColumnElement[str]:
        return self.label(a.c.classification, "emotion")

    def key(self, name: Key) -> sa.ColumnElement[Any]:
        """A grouping key."""
        keys: dict[str, Any] = {
            "channel": lambda: t.c.channel,
            "topic": self.topic,
            "team": lambda: q.c.team_id,
            "member": lambda: q.c.member_id,
            "answered_by": lambda: q.c.answered_by,
            "source": lambda: s.c.slug,
            "thread": lambda: t.c.id,  # shown as its external id and title
            "week": lambda: self.week(c.c.received_at),
            "day": lambda: self.day(c.c.received_at),
        }
        expression: sa.ColumnElement[Any] = keys[name]()
        return expression

    # ---- the rows ---------------------------------------------------------------------------------------------

    def rows(
        self, columns: Sequence[sa.ColumnElement[Any]], keys: Sequence[Key] = (), *, places: bool = False
    ) -> sa.Select[Any]:
        """One row per comment in the window and the scope: the grouping keys `k0`, `k1`, ... then `columns`
        (`places`: the thread and the source are joined for the columns to read)."""
        joined = c.outerjoin(q, q.c.comment_id == c.c.id).outerjoin(a, a.c.comment_id == c.c.id)
        if places or {"channel", "thread"} & set(keys):
            joined = joined.outerjoin(t, t.c.id == c.c.thread_id)
        if places or "source" in keys:
            joined = joined.join(s, s.c.id == c.c.source_id)
        labelled = [self.key(k).label(f"k{i}") for i, k in enumerate(keys)]
        return (
            sa.select(*labelled, *columns)
            .select_from(joined)
            .where(
                c.c.received_at >= self.since,
                c.c.received_at < self.until,
                c.c.echo_of_reply_id.is_(None),
                self.scope,
            )
        )

    def base(
        self,
        columns: Sequence[sa.ColumnElement[Any]] = (),
        keys: Sequence[Key] = (),
        *,
        shape: Callable[[sa.Select[Any]], sa.Select[Any]] | None = None,
        places: bool = False,
    ) -> tuple[sa.CTE, Answers]:
        """`rows` with what the answer figures derive from, each computed once per comment (a materialised CTE:
        PostgreSQL would otherwise evaluate `needs` again wherever a figure uses it); `shape` may order and limit."""
        select = self.rows(
            [
                self.needs().label("needs"), q.c.first_response_at.label("fr"), q.c.due_at.label("due"),
                q.c.state.label("state"), c.c.received_at.label("received"), *columns,
            ],
            keys,
            places=places,
        )  # fmt: skip
        cte = (shape(select) if shape else select).cte("per_comment").prefix_with("MATERIALIZED")
        return cte, Answers(self, cte.c.needs, cte.c.fr, cte.c.due, cte.c.state, cte.c.received)


@dataclass(frozen=True, slots=True)
class Answers:
    """The answer figures of one comment, derived from whether it needs an answer, its first response, deadline,
    state and receipt (columns of `Window.base`)."""

    w: Window
    needs: sa.ColumnElement[int]
    fr: sa.ColumnElement[datetime]
    due: sa.ColumnElement[datetime]
    state: sa.ColumnElement[str]
    received: sa.ColumnElement[datetime]

    def answered(self) -> sa.ColumnElement[int]:
        return sa.case((self.fr.is_(None), 0), else_=self.needs)

    def first_response(self) -> sa.ColumnElement[float]:
        """Seconds from receipt to the first response, for answered comments (else NULL)."""
        return sa.case((self.answered() == 1, self.w.seconds(self.fr, self.received)), else_=sa.null())

    def sla_decided(self) -> sa.ColumnElement[int]:
        decided = sa.or_(self.fr.is_not(None), self.due <= self.w.now_value())
        return sa.case((sa.and_(self.due.is_not(None), decided), self.needs), else_=0)

    def sla_met(self) -> sa.ColumnElement[int]:
        return sa.case((self.fr <= self.due, self.answered()), else_=0)

    def waiting(self) -> sa.ColumnElement[int]:
        return sa.case((self.state.in_([st.value for st in WAITING_STATES]), self.needs), else_=0)

    def age(self) -> sa.ColumnElement[float]:
        """Seconds since receipt, for the backlog (else NULL)."""
        return sa.case((self.waiting() == 1, self.w.seconds(self.w.now_value(), self.received)), else_=sa.null())
