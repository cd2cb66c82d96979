"""The responder queue, read: the caller's items most urgent first (one page at a time), and one item in full.

Responders see their own items and their teams' (`service.queue.viewer`); admins see every item.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pii import redact
from service.audit.tables import AuditEvent
from service.auth.keys import Principal
from service.database import table
from service.models import Comment, CommentAnalysis, ItemState, QueueItem, Reply, Source, Thread
from service.models.base import to_schema
from service.models.queue import WAITING_STATES, Priority
from service.pagination import ColumnInt, decode_cursor, encode_cursor
from service.queue.viewer import Scope, Viewer, visible
from service.queue.views import (
    EXCERPT_CHARS,
    ContextCommentPublic,
    HistoryEntryPublic,
    QueueCommentPublic,
    QueueItemDetail,
    QueuePage,
    QueueThreadPublic,
    ReplyPublic,
    source_and_comment,
    to_public,
)
from service.routing import context

MAX_PAGE = 200
CONTEXT_COMMENTS = 20
DEFAULT_STATES = (ItemState.open, ItemState.claimed, ItemState.escalated)  # and held items the caller moderates


class QueueFilter(BaseModel):
    """Query of GET /v1/queue."""

    model_config = ConfigDict(extra="forbid")

    scope: Scope = "all"
    state: list[ItemState] | None = Field(
        None,
        description="Only items in these states. Default: open, claimed and escalated items, and the items held "
        "for moderation for one of your teams (or assigned to you).",
    )
    priority: list[Priority] | None = None
    topic: str | None = None
    sentiment: str | None = None
    source: str | None = None
    channel: str | None = None
    overdue: bool | None = None
    include_snoozed: bool = False
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    cursor: str | None = None


_SORT_DUE_TYPE = table(QueueItem).c.sort_due.type


# The list's order: held items first (moderation blocks everything else about them), then priority and due time.
_NOT_HELD = sa.case((col(QueueItem.state) == ItemState.held.value, 0), else_=1)


# A page's cursor: the last item's sort key (not held, priority rank, due time, id).
_CURSOR: TypeAdapter[tuple[int, int, datetime, uuid.UUID]] = TypeAdapter(
    tuple[ColumnInt, ColumnInt, AwareDatetime, uuid.UUID]
)


def _encode_cursor(item: QueueItem) -> str:
    not_held = int(item.state != ItemState.held.value)
    return encode_cursor(_CURSOR, (not_held, item.priority_rank, item.sort_due, item.id))


def _decode_cursor(cursor: str) -> tuple[int, int, datetime, uuid.UUID]:
    return decode_cursor(_CURSOR, cursor)


async def list_items(session: AsyncSession, *, principal: Principal, query: QueueFilter, now: datetime) -> QueuePage:
    """The caller's queue, most urgent first (held items first), one page at a time.

    By default: open, claimed and escalated items, and the held items the caller moderates (`Viewer.moderates`).
    """
    viewer = await Viewer.of(session, principal)
    shown: sa.ColumnElement[bool]
    if query.state:
        shown = col(QueueItem.state).in_([s.value for s in query.state])
    else:
        shown = sa.or_(
            col(QueueItem.state).in_([s.value for s in DEFAULT_STATES]),
            sa.and_(col(QueueItem.state) == ItemState.held.value, viewer.moderates()),
        )
    stmt = (
        sa.select(QueueItem, col(Source.slug), col(Comment.body))
        .join(Source, col(Source.id) == col(QueueItem.source_id))
        .join(Comment, col(Comment.id) == col(QueueItem.comment_id))
        .where(viewer.condition(query.scope), shown)
    )
    if query.priority:
        stmt = stmt.where(col(QueueItem.priority).in_([p.value for p in query.priority]))
    for column, value in (
        (QueueItem.topic, query.topic),
        (QueueItem.sentiment, query.sentiment),
        (QueueItem.channel, query.channel),
        (Source.slug, query.source),
    ):
        if value is not None:
            stmt = stmt.where(col(column) == value)
    if query.overdue is not None:
        late = sa.and_(
            col(QueueItem.due_at).is_not(None),
            col(QueueItem.due_at) < now,
            col(QueueItem.state).in_([s.value for s in WAITING_STATES]),
        )
        stmt = stmt.where(late if query.overdue else sa.not_(late))
    if not query.include_snoozed:
        stmt = stmt.where(sa.or_(col(QueueItem.snoozed_until).is_(None), col(QueueItem.snoozed_until) <= now))
    if query.cursor:
        not_held, rank, due, item_id = _decode_cursor(query.cursor)
        key = sa.tuple_(_NOT_HELD, col(QueueItem.priority_rank), col(QueueItem.sort_due), col(QueueItem.id))
        stmt = stmt.where(
            key
            > sa.tuple_(
                sa.literal(not_held),
                sa.literal(rank),
                sa.literal(due, _SORT_DUE_TYPE),
                sa.literal(item_id, sa.Uuid()),
            )
        )
    stmt = stmt.order_by(_NOT_HELD, col(QueueItem.priority_rank), col(QueueItem.sort_due), col(QueueItem.id)).limit(
        query.limit + 1
    )
    rows = (await session.execute(stmt)).all()
    page = [to_public(item, source=slug, body=body, now=now) for item, slug, body in rows[: query.limit]]
    next_cursor = _encode_cursor(rows[query.limit - 1][0]) if len(rows) > query.limit else None
    return QueuePage(items=page, next_cursor=next_cursor)


async def _as_corrected(
    session: AsyncSession, comment_id: uuid.UUID, doc: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The classification with responders' corrections applied (what routing used)."""
    labels = (await context.labels_of(session, [comment_id])).get(comment_id, [])
    shown, _ = context.corrected(doc, labels)
    return None if shown is None else dict(shown)


async def read(session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, now: datetime) -> QueueItemDetail:
    """One item with everything a responder needs to answer it."""
    viewer = await Viewer.of(session, principal)
    item = await visible(session, viewer, item_id)
    slug, comment = await source_and_comment(session, item)
    thread = await session.get(Thread, comment.thread_id) if comment.thread_id is not None else None
    context: list[ContextCommentPublic] = []
    if thread is not None:
        nearby = (
            await session.execute(
                sa.select(Comment)
                .where(
                    col(Comment.thread_id) == thread.id,
                    col(Comment.id) != comment.id,
                    col(Comment.deleted_at).is_(None),
                )
                .order_by(col(Comment.received_at).desc())
                .limit(CONTEXT_COMMENTS)
            )
        ).scalars()
        context = sorted(
            (to_schema(ContextCommentPublic, c, excerpt=redact(c.body)[:EXCERPT_CHARS]) for c in nearby),
            key=lambda c: (c.posted_at is None, c.posted_at),
        )
    analysis = await session.get(CommentAnalysis, comment.id)
    replies = (
        await session.execute(sa.select(Reply).where(col(Reply.item_id) == item.id).order_by(col(Reply.created_at)))
    ).scalars()
    history = (
        await session.execute(
            sa.select(AuditEvent)
            .where(col(AuditEvent.target_type) == "queue_item", col(AuditEvent.target_id) == str(item.id))
            .order_by(col(AuditEvent.id))
        )
    ).scalars()
    return QueueItemDetail(
        **to_public(item, source=slug, body=comment.body, now=now).model_dump(),
        comment=QueueCommentPublic.model_validate(comment, from_attributes=True),
        thread=QueueThreadPublic.model_validate(thread, from_attributes=True) if thread is not None else None,
        thread_context=context,
        classification=None if analysis is None else await _as_corrected(session, comment.id, analysis.classification),
        replies=[to_schema(ReplyPublic, r, member=r.member_id) for r in replies],
        history=[HistoryEntryPublic.model_validate(e, from_attributes=True) for e in history],
    )
