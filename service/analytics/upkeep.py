"""Keeping the analytics facts (`service.analytics.tables`) in step with the rows they are derived from.

`derive` is the one definition of a fact row, in SQL over the comment, its analysis, its queue item and the item's
audit trail. Two things use it:

- **At commit**, for the comments the transaction changed (`service.models.changes` collects them): their fact rows
  are derived again and upserted, inside the same transaction, before the audit chain takes its lock (so the chain's
  lock stays the last lock a transaction takes). The transaction's own audit events are not written yet at that
  point; they are read from the session and folded in, by the same rules. On PostgreSQL each comment's refresh
  takes a transaction-scoped advisory lock first (in key order), so that two transactions changing different rows of
  one comment refresh it one after the other, each seeing the other's committed change. Advisory locks, not row
  locks: they are taken only here, at the end of a transaction, so a holder never waits for another transaction's
  row locks and no lock cycle can pass through them (a row lock on the comment would wait for the foreign-key locks
  of whoever is writing its analysis).
- **`rebuild`** (the `switchboard rebuild-analytics` command, and the migration that introduced the table) derives
  every row afresh. A rebuild and the upkeep at commit give the same table; a test holds them to it.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.analytics.tables import AnalyticsFact
from service.audit import chain
from service.audit.tables import AuditEvent
from service.database import table
from service.models import Comment, CommentAnalysis, ItemState, QueueItem, Resolution, changes
from service.models.queue import WAITING_STATES

Dialect = Literal["sqlite", "postgresql"]

c = table(Comment)
q = table(QueueItem)
a = table(CommentAnalysis)
ev = table(AuditEvent)
f = table(AnalyticsFact)

CLOSED = (ItemState.answered.value, ItemState.resolved.value)
# Closed this way, an item is marked as needing no reply (by its rule's no_reply, or by a person or routing).
NOT_NEEDING = (
    Resolution.no_reply_needed, Resolution.duplicate, Resolution.spam, Resolution.out_of_scope,
    Resolution.follow_up, Resolution.staff_reply,
)  # fmt: skip
CHUNK = 500  # comments refreshed per statement


# ---- the item's history, from its audit trail ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """An audit event of a queue item that sets a flag: its action, and what its before/after records say."""

    actions: tuple[str, ...]
    before_state: tuple[str, ...] = ()
    after_state: tuple[str, ...] = ()
    after_resolution_not: str | None = None

    def matches(self, event: AuditEvent) -> bool:
        before, after = event.before or {}, event.after or {}
        return (
            event.action in self.actions
            and (not self.before_state or before.get("state") in self.before_state)
            and (not self.after_state or after.get("state") in self.after_state)
            and (self.after_resolution_not is None or (after.get("resolution") or "") != self.after_resolution_not)
        )

    def sql(self, dialect: Dialect) -> sa.ColumnElement[bool]:
        conditions: list[sa.ColumnElement[bool]] = [ev.c.action.in_(self.actions)]
        if self.before_state:
            conditions.append(_field(dialect, ev.c.before, "state").in_(self.before_state))
        if self.after_state:
            conditions.append(_field(dialect, ev.c.after, "state").in_(self.after_state))
        if self.after_resolution_not is not None:
            resolution = sa.func.coalesce(_field(dialect, ev.c.after, "resolution"), "")
            conditions.append(resolution != self.after_resolution_not)
        return sa.and_(*conditions)


# escalated: the SLA clock escalated it; held: created or re-routed into `held`; approved; rejected: closed from
# `held` without approval (an answer or a resolution), unless the comment was deleted on the platform meanwhile.
RULES: dict[str, Rule] = {
    "escalated": Rule(("queue_item.escalated",)),
    "held": Rule(("queue_item.created", "queue_item.rerouted"), after_state=(ItemState.held.value,)),
    "approved": Rule(("queue_item.approved",)),
    "rejected": Rule(
        ("queue_item.resolved", "queue_item.answered"),
        before_state=(ItemState.held.value,),
        after_state=CLOSED,
        after_resolution_not=Resolution.comment_deleted.value,
    ),
}
_ACTIONS = sorted({action for rule in RULES.values() for action in rule.actions})


# ---- JSON and ids, per dialect ----------------------------------------------------------------------------------


def _field(dialect: Dialect, doc: sa.ColumnElement[Any], name: str) -> sa.ColumnElement[str]:
    """A top-level text field of a JSON object (`state`, `resolution` of an audit record)."""
    if dialect == "postgresql":
        return doc.op("->>")(sa.literal_column(f"'{name}'"))
    return sa.func.json_extract(doc, f"$.{name}")


def _label(dialect: Dialect, doc: sa.ColumnElement[Any], head: str) -> sa.ColumnElement[str]:
    """A head's label in a classification document, as `label_of` reads it (a non-empty string, else NULL)."""
    if dialect == "postgresql":
        # One parse of the document: the label as JSON, a string when its text starts with a quote.
        node = sa.func.json_extract_path(doc, sa.literal_column(f"'{head}'"), sa.literal_column("'label'"))
        text: sa.ColumnElement[Any] = node.op("#>>")(sa.literal_column("'{}'"))
        is_string: sa.ColumnElement[bool] = sa.func.left(sa.cast(node, sa.Text), 1) == '"'
    else:
        path = f"$.{head}.label"
        text = sa.func.json_extract(doc, path)
        is_string = sa.func.json_type(doc, path) == "text"
    return sa.case((is_string, sa.func.nullif(text, "")), else_=sa.null())


def seconds(dialect: Dialect, later: sa.ColumnElement[Any], earlier: sa.ColumnElement[Any]) -> sa.ColumnElement[float]:
    """later - earlier in seconds (a float)."""
    if dialect == "postgresql":
        return sa.cast(sa.extract("epoch", later - earlier), sa.Float)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def _item_target(dialect: Dialect) -> sa.ColumnElement[str]:
    """A queue item's id as the audit trail names it (with dashes)."""
    if dialect == "postgresql":
        return sa.cast(q.c.id, sa.Text)
    hexed = sa.func.lower(q.c.id)  # SQLite stores a UUID as 32 hex digits
    parts = [sa.func.substr(hexed, start, length) for start, length in ((1, 8), (9, 4), (13, 4), (17, 4), (21, 12))]
    return parts[0] + "-" + parts[1] + "-" + parts[2] + "-" + parts[3] + "-" + parts[4]


# ---- the definition of a fact row -------------------------------------------------------------------------------


def derive(dialect: Dialect, comment_ids: Collection[uuid.UUID] | None = None) -> sa.Select[Any]:
    """The fact rows of the comments `comment_ids` (None: of every comment), in the columns of `analytics_fact`."""
    flags = sa.select(
        ev.c.target_id.label("target"),
        *(sa.func.max(sa.case((rule.sql(dialect), 1), else_=0)).label(name) for name, rule in RULES.items()),
    ).where(ev.c.target_type == "queue_item", ev.c.action.in_(_ACTIONS))
    if comment_ids is not None:
        items = sa.select(_item_target(dialect)).where(q.c.comment_id.in_(comment_ids))
        flags = flags.where(ev.c.target_id.in_(items.scalar_subquery()))
    history = flags.group_by(ev.c.target_id).subquery("history")

    def flag(name: str) -> sa.ColumnElement[bool]:
        return sa.func.coalesce(history.c[name], 0) == 1

    has_item = q.c.id.is_not(None)
    needs_label = sa.func.coalesce(_label(dialect, a.c.classification, "needs_answer") == "needs_answer", sa.false())
    # Needs an answer: see the package's definitions.
    needs = sa.case(
        (q.c.id.is_(None), sa.false()),
        (sa.func.coalesce(q.c.no_reply, sa.false()).is_(True), sa.false()),
        (sa.func.coalesce(q.c.resolution, "").in_([r.value for r in NOT_NEEDING]), sa.false()),
        (sa.and_(c.c.deleted_at.is_not(None), q.c.first_response_at.is_(None)), sa.false()),
        (sa.or_(q.c.member_id.is_not(None), q.c.team_id.is_not(None)), sa.true()),
        else_=needs_label,
    )
    answered = sa.and_(needs, q.c.first_response_at.is_not(None))
    waiting = sa.and_(needs, sa.func.coalesce(q.c.state, "").in_([st.value for st in WAITING_STATES]))
    joined = (
        c.outerjoin(q, q.c.comment_id == c.c.id)
        .outerjoin(a, a.c.comment_id == c.c.id)
        .outerjoin(history, history.c.target == _item_target(dialect))
    )
    select = (
        sa.select(
            c.c.id.label("comment_id"),
            c.c.received_at.label("received_at"),
            c.c.source_id.label("source_id"),
            c.c.thread_id.label("thread_id"),
            c.c.deleted_at.is_not(None).label("deleted"),
            q.c.id.label("item_id"),
            q.c.state.label("state"),
            q.c.resolution.label("resolution"),
            sa.func.coalesce(q.c.no_reply, sa.false()).label("no_reply"),
            q.c.member_id.label("member_id"),
            q.c.team_id.label("team_id"),
            q.c.answered_by.label("answered_by"),
            q.c.first_response_at.label("first_response_at"),
            q.c.due_at.label("due_at"),
            sa.case((has_item, q.c.sentiment), else_=_label(dialect, a.c.classification, "sentiment")).label(
                "sentiment"
            ),
            sa.case((has_item, q.c.topic), else_=_label(dialect, a.c.classification, "topic")).label("topic"),
            _label(dialect, a.c.classification, "emotion").label("emotion"),
            needs_label.label("needs_label"),
            (sa.func.coalesce(sa.func.json_array_length(a.c.pii), 0) > 0).label("pii"),
            flag("escalated").label("escalated"),
            sa.or_(sa.func.coalesce(q.c.state, "") == ItemState.held.value, flag("held")).label("held"),
            flag("approved").label("approved"),
            flag("rejected").label("rejected"),
            needs.label("needs"),
            answered.label("answered"),
            sa.case((answered, seconds(dialect, q.c.first_response_at, c.c.received_at)), else_=sa.null()).label(
                "first_response_seconds"
            ),
            sa.func.coalesce(sa.and_(answered, q.c.first_response_at <= q.c.due_at), sa.false()).label("sla_met"),
            waiting.label("waiting"),
        )
        .select_from(joined)
        .where(c.c.echo_of_reply_id.is_(None))
    )
    if comment_ids is not None:
        select = select.where(c.c.id.in_(comment_ids))
    return select


COLUMNS = [column.name for column in f.columns]


# ---- at commit ----------------------------------------------------------------------------------------------------


def refresh(session: Session, comment_ids: Iterable[uuid.UUID], events: Sequence[AuditEvent] = ()) -> None:
    """Derive the fact rows of `comment_ids` again and write them (echoes and vanished comments lose theirs);
    `events` are audit events recorded in this transaction but not yet written."""
    dialect: Dialect = "postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"
    ids = sorted(set(comment_ids))
    insert: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(f)
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        if dialect == "postgresql":  # one refresh of a comment at a time, locks taken in key order (module doc)
            for key in sorted({_lock_key(one) for one in chunk}):
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
        rows = [dict(row._mapping) for row in session.execute(derive(dialect, chunk))]
        _fold(rows, events)
        if rows:
            stmt = insert.values(rows)
            stmt = stmt.on_conflict_do_update(
                index_elements=["comment_id"], set_={name: stmt.excluded[name] for name in COLUMNS[1:]}
            )
            session.execute(stmt)
        kept = {row["comment_id"] for row in rows}
        gone = [one for one in chunk if one not in kept]
        if gone:
            session.execute(sa.delete(f).where(f.c.comment_id.in_(gone)))


def _lock_key(comment_id: uuid.UUID) -> int:
    """The transaction-scoped advisory lock of a comment's fact row (a signed 64-bit number from its id)."""
    return int.from_bytes(comment_id.bytes[:8], "big", signed=True)


def _fold(rows: list[dict[str, Any]], events: Sequence[AuditEvent]) -> None:
    """Add what the unwritten audit events say to the flags their items' rows took from the written ones."""
    by_item = {str(row["item_id"]): row for row in rows if row["item_id"] is not None}
    for one in events:
        row = by_item.get(one.target_id) if one.target_type == "queue_item" else None
        if row is None:
            continue
        for name, rule in RULES.items():
            if rule.matches(one):
                row[name] = True


@event.listens_for(Session, "before_commit", insert=True)  # before the audit chain appends (its lock is last)
def _refresh_changed(session: Session) -> None:
    session.flush()
    comment_ids, item_ids = changes.take(session)
    events = chain.pending(session)
    item_ids |= {uuid.UUID(one.target_id) for one in events if one.target_type == "queue_item"}
    if item_ids:
        found = session.execute(sa.select(q.c.comment_id).where(q.c.id.in_(sorted(item_ids))))
        comment_ids |= set(found.scalars())
    if comment_ids:
        refresh(session, comment_ids, events)


# ---- afresh -------------------------------------------------------------------------------------------------------


async def rebuild(session: AsyncSession) -> int:
    """Derive every fact row afresh in the caller's transaction; the number of rows."""
    dialect: Dialect = "postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"
    await session.execute(sa.delete(f))
    select = derive(dialect)
    await session.execute(sa.insert(f).from_select([one.name for one in select.selected_columns], select))
    changes.take(session.sync_session)  # the rebuild covers whatever this transaction changed
    count = await session.scalar(sa.select(sa.func.count()).select_from(f))
    return int(count or 0)
