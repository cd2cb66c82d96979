"""The responder queue: list, read, claim, claim-next, release, answer, resolve, reassign, snooze, approve.

Responders see the items assigned to them, claimed by them, or assigned to one of their teams; any other item
is answered with 404, as if it did not exist. Admins see every item. Claims are conditional UPDATEs, so
exactly one of any number of concurrent callers wins; claim-next skips rows another transaction has locked
(`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite serialises writers).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pii import redact
from service.audit import chain as audit
from service.auth.keys import Principal, require_role
from service.database import dialect_name, table
from service.directory import members as directory
from service.errors import InvalidPayload, InvalidState, ItemAlreadyClaimed, NotFound
from service.inputs import UtcDatetime
from service.items import transitions as items
from service.models import (
    AuditEvent,
    Comment,
    CommentAnalysis,
    ItemState,
    QueueItem,
    Reply,
    Resolution,
    Role,
    Source,
    Team,
    Thread,
)
from service.models.queue import WAITING_STATES, Priority
from service.pagination import ColumnInt, decode_cursor, encode_cursor
from service.routing import dispatch, placement
from service.settings import Settings

EXCERPT_CHARS = 200
MAX_PAGE = 200
MAX_SNOOZE = timedelta(days=30)
CONTEXT_COMMENTS = 20
CLAIMABLE = (ItemState.open, ItemState.escalated)
DEFAULT_STATES = (ItemState.open, ItemState.claimed, ItemState.escalated)  # and held items the caller moderates
ResolveReason = Literal["answered_on_platform", "no_reply_needed", "duplicate", "spam", "out_of_scope"]
Scope = Literal["all", "mine", "teams"]


# --- schemas -----------------------------------------------------------------------------------------------


class QueueItemPublic(BaseModel):
    """A queue item as a responder sees it in a list."""

    id: uuid.UUID
    comment_id: uuid.UUID
    source: str
    state: ItemState
    priority: Priority
    member: str | None = Field(description="The member who owns it (None: the team's pool, or unassigned).")
    team: str | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    due_at: datetime | None = Field(description="When the first response is due (the rule's SLA).")
    overdue: bool
    snoozed_until: datetime | None
    tags: list[str]
    no_reply: bool
    topic: str | None
    sentiment: str | None
    channel: str | None
    rule_id: str
    ruleset_version: int
    reason: str = Field(description="Why it was placed here: the rule that matched and how the owner was chosen.")
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    first_response_at: datetime | None
    answered_by: str | None
    escalated_at: datetime | None
    reopen_count: int
    excerpt: str = Field(description=f"The first {EXCERPT_CHARS} characters of the comment, personal data redacted.")
    created_at: datetime
    updated_at: datetime


class QueuePage(BaseModel):
    """One page of the queue, most urgent first (held items, then priority, then due time)."""

    items: list[QueueItemPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; None on the last page.")


class CommentView(BaseModel):
    """The comment behind an item."""

    id: uuid.UUID
    external_id: str
    parent_external_id: str | None
    author_external_id: str | None
    author_name: str | None
    author_department: str | None
    body: str
    version: int
    posted_at: datetime | None
    received_at: datetime


class ThreadView(BaseModel):
    """The story or forum topic it was posted under."""

    external_id: str
    title: str | None
    url: str | None
    kind: str | None
    channel: str | None
    author_external_id: str | None
    author_name: str | None


class ContextComment(BaseModel):
    """Another comment in the same thread (excerpt, personal data redacted)."""

    id: uuid.UUID
    external_id: str
    parent_external_id: str | None
    author_name: str | None
    excerpt: str
    posted_at: datetime | None


class ReplyView(BaseModel):
    """An answer written through Switchboard."""

    id: uuid.UUID
    member: str | None
    body: str
    delivery_state: str
    created_at: datetime


class HistoryEntry(BaseModel):
    """One transition of the item."""

    at: datetime
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class QueueItemDetail(QueueItemPublic):
    """One item with its comment, thread context, classification explanation, replies and history."""

    comment: CommentView
    thread: ThreadView | None
    thread_context: list[ContextComment]
    classification: dict[str, Any] | None = Field(
        description="As POST /v1/classify returns it (with nearest examples), with responders' corrections applied: "
        "a corrected head names who corrected it in `corrected_by`."
    )
    replies: list[ReplyView]
    history: list[HistoryEntry]


class AnswerIn(BaseModel):
    """Body of POST /v1/queue/{id}/answer."""

    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=10_000, description="The reply, posted back to the platform.")


class ResolveIn(BaseModel):
    """Body of POST /v1/queue/{id}/resolve."""

    model_config = ConfigDict(extra="forbid")

    reason: ResolveReason
    note: str | None = Field(None, max_length=1000)


class ReassignIn(BaseModel):
    """Body of POST /v1/queue/{id}/reassign: a member, a team, or a member within a team."""

    model_config = ConfigDict(extra="forbid")

    member: str | None = Field(None, max_length=64)
    team: str | None = Field(None, max_length=64)
    note: str | None = Field(None, max_length=1000)


class SnoozeIn(BaseModel):
    """Body of POST /v1/queue/{id}/snooze."""

    model_config = ConfigDict(extra="forbid")

    until: UtcDatetime = Field(description="Hidden from the queue and claim-next until then (at most 30 days).")


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


# --- who sees what -----------------------------------------------------------------------------------------


class Viewer:
    """The caller's reach: an admin sees everything; a responder their own items and their teams'."""

    def __init__(self, principal: Principal, teams: list[str]) -> None:
        self.principal = principal
        self.member_id = principal.member_id
        self.teams = teams
        self.is_admin = principal.role is Role.admin

    @classmethod
    async def of(cls, session: AsyncSession, principal: Principal) -> Viewer:
        """Load the responder's teams."""
        require_role(principal, Role.admin, Role.responder)
        teams = await directory.member_teams(session, principal.member_id) if principal.member_id else []
        return cls(principal, teams)

    def condition(self, scope: Scope = "all") -> sa.ColumnElement[bool]:
        """SQL: the items this caller may see, narrowed to `scope`."""
        mine = sa.or_(col(QueueItem.member_id) == self.member_id, col(QueueItem.claimed_by) == self.member_id)
        teams = col(QueueItem.team_id).in_(self.teams)
        if scope == "mine":
            return mine if self.member_id else sa.false()
        if scope == "teams":
            return teams
        if self.is_admin:
            return sa.true()
        return sa.or_(mine, teams) if self.member_id else sa.false()

    def moderates(self) -> sa.ColumnElement[bool]:
        """SQL: the items whose moderation is this caller's work: held for one of their teams or assigned to them."""
        if self.member_id is None:
            return sa.false()
        return sa.or_(col(QueueItem.team_id).in_(self.teams), col(QueueItem.member_id) == self.member_id)

    def sees(self, item: QueueItem) -> bool:
        """May this caller see the item?"""
        if self.is_admin:
            return True
        return self.member_id is not None and (
            self.member_id in (item.member_id, item.claimed_by)
            or (item.team_id is not None and item.team_id in self.teams)
        )

    @property
    def actor(self) -> str:
        """How the audit trail names the caller."""
        return f"member:{self.member_id}" if self.member_id else self.principal.actor


_SORT_DUE_TYPE = table(QueueItem).c.sort_due.type


# --- reading -----------------------------------------------------------------------------------------------


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


def _public(item: QueueItem, *, source: str, body: str, now: datetime) -> QueueItemPublic:
    return QueueItemPublic(
        id=item.id,
        comment_id=item.comment_id,
        source=source,
        state=ItemState(item.state),
        priority=Priority(item.priority),
        member=item.member_id,
        team=item.team_id,
        claimed_by=item.claimed_by,
        claim_expires_at=item.claim_expires_at,
        due_at=item.due_at,
        overdue=item.due_at is not None and item.due_at < now and items.is_waiting(item),
        snoozed_until=item.snoozed_until,
        tags=list(item.tags),
        no_reply=item.no_reply,
        topic=item.topic,
        sentiment=item.sentiment,
        channel=item.channel,
        rule_id=item.rule_id,
        ruleset_version=item.ruleset_version,
        reason=item.reason,
        resolution=item.resolution,
        resolved_by=item.resolved_by,
        resolved_at=item.resolved_at,
        first_response_at=item.first_response_at,
        answered_by=item.answered_by,
        escalated_at=item.escalated_at,
        reopen_count=item.reopen_count,
        excerpt=redact(body)[:EXCERPT_CHARS],  # redact first: a cut must not expose half an e-mail
        created_at=item.created_at,
        updated_at=item.updated_at,
    )


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
    page = [_public(item, source=slug, body=body, now=now) for item, slug, body in rows[: query.limit]]
    next_cursor = _encode_cursor(rows[query.limit - 1][0]) if len(rows) > query.limit else None
    return QueuePage(items=page, next_cursor=next_cursor)


async def _visible(session: AsyncSession, viewer: Viewer, item_id: uuid.UUID, *, lock: bool = False) -> QueueItem:
    stmt = sa.select(QueueItem).where(col(QueueItem.id) == item_id)
    if lock:
        stmt = stmt.with_for_update()
    item = (await session.execute(stmt)).scalar_one_or_none()
    if item is None or not viewer.sees(item):
        raise NotFound(f"There is no queue item {item_id} in your queues.")
    return item


async def sees_comment(session: AsyncSession, principal: Principal, comment_id: uuid.UUID) -> bool:
    """May the caller see this comment? Admins always; responders if its queue item is in their queues."""
    viewer = await Viewer.of(session, principal)
    if viewer.is_admin:
        return True
    found = await session.execute(
        sa.select(col(QueueItem.id)).where(col(QueueItem.comment_id) == comment_id, viewer.condition())
    )
    return found.first() is not None


async def _source_and_body(session: AsyncSession, item: QueueItem) -> tuple[str, Comment]:
    row = (
        await session.execute(
            sa.select(col(Source.slug), Comment)
            .join(Comment, col(Comment.source_id) == col(Source.id))
            .where(col(Comment.id) == item.comment_id)
        )
    ).one()
    return row[0], row[1]


async def _public_of(session: AsyncSession, item: QueueItem, now: datetime) -> QueueItemPublic:
    slug, comment = await _source_and_body(session, item)
    return _public(item, source=slug, body=comment.body, now=now)


async def _as_corrected(
    session: AsyncSession, comment_id: uuid.UUID, doc: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The classification with responders' corrections applied (what routing used)."""
    labels = (await placement.labels_of(session, [comment_id])).get(comment_id, [])
    shown, _ = placement.corrected(doc, labels)
    return None if shown is None else dict(shown)


async def read(session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, now: datetime) -> QueueItemDetail:
    """One item with everything a responder needs to answer it."""
    viewer = await Viewer.of(session, principal)
    item = await _visible(session, viewer, item_id)
    slug, comment = await _source_and_body(session, item)
    thread = await session.get(Thread, comment.thread_id) if comment.thread_id is not None else None
    context: list[ContextComment] = []
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
            (
                ContextComment(
                    id=c.id,
                    external_id=c.external_id,
                    parent_external_id=c.parent_external_id,
                    author_name=c.author_name,
                    excerpt=redact(c.body)[:EXCERPT_CHARS],
                    posted_at=c.posted_at,
                )
                for c in nearby
            ),
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
        **_public(item, source=slug, body=comment.body, now=now).model_dump(),
        comment=CommentView.model_validate(comment, from_attributes=True),
        thread=ThreadView.model_validate(thread, from_attributes=True) if thread is not None else None,
        thread_context=context,
        classification=None if analysis is None else await _as_corrected(session, comment.id, analysis.classification),
        replies=[
            ReplyView(
                id=r.id, member=r.member_id, body=r.body, delivery_state=r.delivery_state, created_at=r.created_at
            )
            for r in replies
        ],
        history=[
            HistoryEntry(at=e.at, actor=e.actor, action=e.action, before=e.before, after=e.after) for e in history
        ],
    )


# --- acting ------------------------------------------------------------------------------------------------


def _claimable(now: datetime) -> sa.ColumnElement[bool]:
    """Open or escalated, or claimed with a lease that ran out."""
    return sa.or_(
        col(QueueItem.state).in_([s.value for s in CLAIMABLE]),
        sa.and_(col(QueueItem.state) == ItemState.claimed.value, col(QueueItem.claim_expires_at) <= now),
    )


async def _take(
    session: AsyncSession, viewer: Viewer, item_id: uuid.UUID, *, now: datetime, lease: timedelta
) -> QueueItem | None:
    """The conditional UPDATE that decides a claim race: the item, or None if it was not claimable."""
    member = viewer.member_id
    stmt = (
        sa.update(QueueItem)
        .where(col(QueueItem.id) == item_id, _claimable(now))
        .values(
            state=ItemState.claimed.value,
            claimed_by=member,
            claim_expires_at=now + lease,
            snoozed_until=None,
            updated_at=now,
        )
        .returning(col(QueueItem.id))
    )
    if (await session.execute(stmt)).first() is None:
        return None
    item = await session.get(QueueItem, item_id, populate_existing=True)
    assert item is not None
    return item


def _not_claimable(item: QueueItem, viewer: Viewer) -> Exception:
    if item.state == ItemState.claimed.value:
        who = "You already hold" if item.claimed_by == viewer.member_id else f"{item.claimed_by} holds"
        return ItemAlreadyClaimed(f"{who} this item until {item.claim_expires_at}.", claimed_by=item.claimed_by)
    if item.state == ItemState.held.value:
        return InvalidState("The item is held for moderation; approve it first.")
    return InvalidState(f"The item is {item.state}; reopen it by reassigning it.")


async def _audit_claim(
    session: AsyncSession, item: QueueItem, viewer: Viewer, before: dict[str, Any], action: str
) -> None:
    await audit.record(
        session, actor=viewer.actor, action=f"queue_item.{action}", target_type="queue_item", target_id=str(item.id),
        before=before, after=items.audit_view(item),
    )  # fmt: skip


async def claim(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, settings: Settings, now: datetime
) -> QueueItemPublic:
    """Claim an item; exactly one concurrent caller wins, the others get 409 item_already_claimed."""
    viewer = await Viewer.of(session, principal)
    _needs_member(viewer, "claim")
    item = await _visible(session, viewer, item_id)
    before = items.audit_view(item)
    taken = await _take(session, viewer, item_id, now=now, lease=timedelta(seconds=settings.claim_lease_seconds))
    if taken is None:
        await session.refresh(item)
        raise _not_claimable(item, viewer)
    await _audit_claim(session, taken, viewer, before, "claimed")
    return await _public_of(session, taken, now)


async def claim_next(
    session: AsyncSession, *, principal: Principal, settings: Settings, now: datetime, scope: Scope = "all"
) -> QueueItemPublic | None:
    """Claim the most urgent claimable item in the caller's queues (None when there is none)."""
    viewer = await Viewer.of(session, principal)
    _needs_member(viewer, "claim")
    lease = timedelta(seconds=settings.claim_lease_seconds)
    candidates = (
        sa.select(col(QueueItem.id))
        .where(
            viewer.condition(scope),
            _claimable(now),
            sa.or_(col(QueueItem.snoozed_until).is_(None), col(QueueItem.snoozed_until) <= now),
        )
        .order_by(col(QueueItem.priority_rank), col(QueueItem.sort_due), col(QueueItem.id))
        .limit(8)
    )
    if dialect_name(session) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    for _ in range(5):  # another responder may win a candidate between our read and our update
        ids = list((await session.execute(candidates)).scalars())
        if not ids:
            return None
        for item_id in ids:
            item = await session.get(QueueItem, item_id)
            assert item is not None
            before = items.audit_view(item)
            taken = await _take(session, viewer, item_id, now=now, lease=lease)
            if taken is not None:
                await _audit_claim(session, taken, viewer, before, "claimed")
                return await _public_of(session, taken, now)
    return None


def _needs_member(viewer: Viewer, verb: str) -> None:
    if viewer.member_id is None:
        raise InvalidState(f"Only a key bound to a member can {verb} items (create one with --member).")


def _check_holder(item: QueueItem, viewer: Viewer, now: datetime) -> None:
    """Someone else's live claim blocks acting on the item (admins may override)."""
    held_by_other = (
        item.state == ItemState.claimed.value
        and item.claimed_by != viewer.member_id
        and item.claim_expires_at is not None
        and item.claim_expires_at > now
    )
    if held_by_other and not viewer.is_admin:
        raise ItemAlreadyClaimed(f"{item.claimed_by} holds this item.", claimed_by=item.claimed_by)


async def release(session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, now: datetime) -> QueueItemPublic:
    """Give a claimed item back to the queue."""
    viewer = await Viewer.of(session, principal)
    item = await _visible(session, viewer, item_id, lock=True)
    if item.state != ItemState.claimed.value:
        raise InvalidState(f"The item is {item.state}, not claimed.")
    _check_holder(item, viewer, now)
    back = ItemState.escalated if item.escalated_at is not None else ItemState.open
    await items.transition(
        session, item, actor=viewer.actor, action="released", now=now, state=back, claimed_by=None,
        claim_expires_at=None,
    )  # fmt: skip
    return await _public_of(session, item, now)


async def _acting_on(
    session: AsyncSession, principal: Principal, item_id: uuid.UUID, *, now: datetime, waiting: bool
) -> tuple[Viewer, QueueItem]:
    """The caller and the item they act on, locked: visible to them, not held by someone else, and (if
    `waiting`) not closed."""
    viewer = await Viewer.of(session, principal)
    item = await _visible(session, viewer, item_id, lock=True)
    if waiting and not items.is_waiting(item):
        raise InvalidState(f"The item is already {item.state} ({item.resolution}).")
    _check_holder(item, viewer, now)
    return viewer, item


async def answer(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: AnswerIn, now: datetime
) -> QueueItemPublic:
    """Record a reply (delivered to the platform by the outbound events) and mark the item answered."""
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=True)
    session.add(Reply(item_id=item.id, comment_id=item.comment_id, member_id=viewer.member_id, actor=viewer.actor,
                      body=data.body, created_at=now))  # fmt: skip
    await items.transition(
        session, item, actor=viewer.actor, action="answered", now=now, state=ItemState.answered,
        resolution=Resolution.answered.value, resolved_by=viewer.actor, resolved_at=now,
        answered_by=viewer.member_id or viewer.actor, first_response_at=item.first_response_at or now,
        claimed_by=None, claim_expires_at=None,
    )  # fmt: skip
    return await _public_of(session, item, now)


async def resolve(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: ResolveIn, now: datetime
) -> QueueItemPublic:
    """Close an item with a reason (answered on the platform, no reply needed, duplicate, spam, out of scope)."""
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=True)
    answered = data.reason == Resolution.answered_on_platform.value
    await items.transition(
        session, item, actor=viewer.actor, action="resolved", now=now, state=ItemState.resolved, note=data.note,
        resolution=data.reason, resolved_by=viewer.actor, resolved_at=now, claimed_by=None, claim_expires_at=None,
        first_response_at=(item.first_response_at or now) if answered else item.first_response_at,
        answered_by=(viewer.member_id or viewer.actor) if answered else item.answered_by,
    )  # fmt: skip
    return await _public_of(session, item, now)


async def reassign(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: ReassignIn, now: datetime
) -> QueueItemPublic:
    """Give an item to another member and/or team (it reopens if it was closed; the note is kept)."""
    if data.member is None and data.team is None:
        raise InvalidPayload("Name a member, a team, or both.")
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=False)
    if data.member is not None:
        await directory.get_member(session, data.member)
    if data.team is not None:
        team = await session.get(Team, data.team)
        if team is None or team.deleted_at is not None:
            raise NotFound(f"There is no team '{data.team}'.")
    if data.member is not None and data.team is None:
        member_teams = await directory.member_teams(session, data.member)
        team_id = item.team_id if item.team_id in member_teams else None
    else:
        team_id = data.team
    state = ItemState(item.state)
    reopened = state in (ItemState.answered, ItemState.resolved)
    if state == ItemState.claimed or reopened:
        state = ItemState.open
    await items.transition(
        session, item, actor=viewer.actor, action="reassigned", now=now, state=state, note=data.note,
        member_id=data.member, team_id=team_id, manually_assigned=True, claimed_by=None, claim_expires_at=None,
        resolution=None, resolved_at=None, resolved_by=None, **(items.restart_clock(item, now) if reopened else {}),
    )  # fmt: skip
    return await _public_of(session, item, now)


async def snooze(
    session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, data: SnoozeIn, now: datetime
) -> QueueItemPublic:
    """Hide an item from the queue until a time (its SLA keeps running)."""
    if data.until.tzinfo is None:
        raise InvalidPayload("Give `until` with a time zone (e.g. 2026-11-23T09:00:00Z).")
    if not now < data.until <= now + MAX_SNOOZE:
        raise InvalidPayload("`until` must be in the future and at most 30 days ahead.")
    viewer, item = await _acting_on(session, principal, item_id, now=now, waiting=True)
    await items.transition(session, item, actor=viewer.actor, action="snoozed", now=now, snoozed_until=data.until)
    return await _public_of(session, item, now)


async def approve(session: AsyncSession, *, principal: Principal, item_id: uuid.UUID, now: datetime) -> QueueItemPublic:
    """Let an item held for moderation into the queue: to where the rules send it if it had not been held (the
    first matching rule that does not hold), its SLA counting from now."""
    viewer = await Viewer.of(session, principal)
    item = await _visible(session, viewer, item_id, lock=True)
    if item.state != ItemState.held.value:
        raise InvalidState(f"The item is {item.state}, not held.")
    await dispatch.release(session, item, actor=viewer.actor, now=now)
    return await _public_of(session, item, now)
