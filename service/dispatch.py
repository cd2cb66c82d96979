"""Place processed comments in the queue: route new ones, re-route edited ones, let threads answer themselves.

Called by processing in the transaction that stores a comment's classification, so an analysis and its queue
item commit together. Idempotent per comment: one item per comment (a unique constraint), re-processing updates it.

Threads answer themselves: a reply by the item's owner, a member of its team or the story's author resolves the
waiting item it answers ("answered on the platform"); a follow-up from the original author that needs an answer
reopens their closed item. Both are recognised whichever of the two comments is processed first.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import items, rules
from service.database import dialect_name, insert_ignore, table
from service.models import (
    Comment,
    CommentAnalysis,
    ItemState,
    Member,
    MemberIdentity,
    QueueItem,
    Resolution,
    Source,
    Team,
    TeamMember,
    Thread,
)
from service.models.queue import CLOSED_STATES, NO_DUE, PRIORITY_RANK, WAITING_STATES, Priority
from service.routing import CompiledRuleset, Decision, Directory, Facts, MemberInfo, TeamInfo, route

log = logging.getLogger(__name__)

ROUTING_ACTOR = "routing"
# Closed items a follow-up may reopen: not the ones closed as spam, duplicate or out of scope.
REOPENABLE = (Resolution.answered, Resolution.answered_on_platform, Resolution.no_reply_needed)


async def load_directory(session: AsyncSession) -> Directory:
    """Members, teams, each member's current load and each team's round-robin position, for `route`."""
    members = (await session.execute(sa.select(Member).where(col(Member.deleted_at).is_(None)))).scalars().all()
    identities = (
        await session.execute(
            sa.select(col(MemberIdentity.member_id), col(Source.slug), col(MemberIdentity.external_id)).join(
                Source, col(Source.id) == col(MemberIdentity.source_id)
            )
        )
    ).all()
    ids_of: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for member_id, slug, external_id in identities:
        ids_of[member_id].add((slug, external_id))
    teams = (await session.execute(sa.select(Team).where(col(Team.deleted_at).is_(None)))).scalars().all()
    memberships = (
        await session.execute(
            sa.select(col(TeamMember.team_id), col(TeamMember.member_id)).order_by(
                col(TeamMember.team_id), col(TeamMember.position)
            )
        )
    ).all()
    members_of: dict[str, list[str]] = defaultdict(list)
    for team_id, member_id in memberships:
        members_of[team_id].append(member_id)
    load_rows = (
        await session.execute(
            sa.select(col(QueueItem.member_id), sa.func.count())
            .where(
                col(QueueItem.member_id).is_not(None),
                col(QueueItem.state).in_([ItemState.open, ItemState.claimed, ItemState.escalated]),
            )
            .group_by(col(QueueItem.member_id))
        )
    ).all()
    return Directory(
        members={
            m.id: MemberInfo(
                id=m.id,
                name=m.name,
                capacity=m.capacity,
                away_until=m.away_until,
                delegate=m.delegate_id,
                external_ids=frozenset(ids_of.get(m.id, ())),
            )
            for m in members
        },
        teams={
            t.id: TeamInfo(
                id=t.id,
                name=t.name,
                members=tuple(members_of.get(t.id, ())),
                lead=t.lead_id,
                strategy="least_loaded" if t.strategy == "least_loaded" else "round_robin",
            )
            for t in teams
        },
        load={member_id: int(n) for member_id, n in load_rows if member_id is not None},
        last_assigned={t.id: t.last_assigned_id for t in teams if t.last_assigned_id},
    )


@dataclass(frozen=True, slots=True)
class Context:
    """One comment with what routing needs to know about it."""

    comment: Comment
    thread: Thread | None
    source_slug: str
    classification: Mapping[str, Any] | None


def facts_of(ctx: Context) -> Facts:
    """What the rules see of a comment."""
    thread = ctx.thread
    return Facts(
        source=ctx.source_slug,
        text=ctx.comment.body,
        channel=thread.channel if thread else None,
        thread_kind=thread.kind if thread else None,
        thread_author=thread.author_external_id if thread else None,
        author=ctx.comment.author_external_id,
        author_department=ctx.comment.author_department,
        is_reply=ctx.comment.parent_external_id is not None,
        classification=ctx.classification,
    )


def due_at(received_at: datetime, sla: timedelta | None) -> datetime | None:
    """When the first response is due: the SLA counts from when the comment reached us."""
    return received_at + sla if sla is not None else None


def _label(doc: Mapping[str, Any] | None, head: str) -> str | None:
    value = (doc or {}).get(head)
    if isinstance(value, Mapping):
        label = value.get("label")
        return str(label) if label is not None else None
    return None


def _topic(doc: Mapping[str, Any] | None) -> str | None:
    return _label(doc, "topic")


class Dispatcher:
    """Routes a batch of processed comments within one transaction (the directory and rules are read once)."""

    def __init__(self, session: AsyncSession, directory: Directory, ruleset: CompiledRuleset, *, now: datetime):
        self.session = session
        self.directory = directory
        self.ruleset = ruleset
        self.now = now
        self._lock = dialect_name(session) == "postgresql"

    @classmethod
    async def open(cls, session: AsyncSession, *, now: datetime) -> Dispatcher:
        """A dispatcher over the live directory and rules."""
        return cls(session, await load_directory(session), await rules.compiled(session), now=now)

    async def context(self, comment_id: uuid.UUID) -> Context | None:
        """Load a comment, its thread, source and classification (None if gone)."""
        row = (
            await self.session.execute(
                sa.select(Comment, Thread, col(Source.slug), col(CommentAnalysis.classification))
                .join(Source, col(Source.id) == col(Comment.source_id))
                .outerjoin(Thread, col(Thread.id) == col(Comment.thread_id))
                .outerjoin(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
                .where(col(Comment.id) == comment_id)
            )
        ).first()
        if row is None:
            return None
        comment, thread, slug, classification = row
        return Context(comment=comment, thread=thread, source_slug=slug, classification=classification)

    async def dispatch(self, comment_id: uuid.UUID) -> QueueItem | None:
        """Create or update the comment's queue item (None for a deleted comment)."""
        ctx = await self.context(comment_id)
        if ctx is None or ctx.comment.deleted_at is not None:
            return None
        existing = await self._item_of(comment_id)
        if existing is not None:
            return await self._reroute(existing, ctx)
        answered = await self._items_answered_by(ctx)
        if answered:
            for target in answered:
                await self._resolve_answered(target, ctx)
            return await self._insert(ctx, self._decide(ctx), closed=Resolution.staff_reply)
        original = await self._follow_up_of(ctx)
        if original is not None and _label(ctx.classification, "needs_answer") != "no_answer":
            await items.transition(
                self.session, original, actor=ROUTING_ACTOR, action="reopened", now=self.now, state=ItemState.open,
                note=f"follow-up comment {ctx.comment.id} from the original author",
                resolution=None, resolved_at=None, resolved_by=None, claimed_by=None, claim_expires_at=None,
                reopen_count=original.reopen_count + 1, **items.restart_clock(original, self.now),
            )  # fmt: skip
            return await self._insert(ctx, self._decide(ctx), closed=Resolution.follow_up)
        decision = self._decide(ctx)
        closed = Resolution.no_reply_needed if decision.no_reply and not decision.hold else None
        item = await self._insert(ctx, decision, closed=closed)
        if item is not None and items.is_waiting(item) and item.state != ItemState.held:
            early = await self._early_answer(item, ctx)
            if early is not None:
                await self._resolve_answered(item, early)
        return item

    def _decide(self, ctx: Context) -> Decision:
        return route(facts_of(ctx), self.ruleset, self.directory, now=self.now)

    async def _item_of(self, comment_id: uuid.UUID) -> QueueItem | None:
        stmt = sa.select(QueueItem).where(col(QueueItem.comment_id) == comment_id)
        if self._lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    def _fields(self, ctx: Context, decision: Decision) -> dict[str, Any]:
        due = due_at(ctx.comment.received_at, decision.sla)
        priority = Priority(decision.priority)
        return {
            "priority": priority.value,
            "priority_rank": PRIORITY_RANK[priority],
            "rule_id": decision.rule_id,
            "ruleset_version": decision.ruleset_version,
            "reason": decision.reason,
            "tags": list(decision.tags),
            "no_reply": decision.no_reply,
            "sla_seconds": int(decision.sla.total_seconds()) if decision.sla is not None else None,
            "due_at": due,
            "sort_due": due or NO_DUE,
            "channel": ctx.thread.channel if ctx.thread else None,
            "topic": _topic(ctx.classification),
            "sentiment": _label(ctx.classification, "sentiment"),
        }

    async def _insert(self, ctx: Context, decision: Decision, *, closed: Resolution | None) -> QueueItem | None:
        comment = ctx.comment
        state = ItemState.resolved if closed else ItemState.held if decision.hold else ItemState.open
        values: dict[str, Any] = {
            "id": uuid.uuid4(),
            "comment_id": comment.id,
            "source_id": comment.source_id,
            "thread_id": comment.thread_id,
            "state": state.value,
            "member_id": decision.member,
            "team_id": decision.team,
            "manually_assigned": False,
            "reopen_count": 0,
            "resolution": closed.value if closed else None,
            "resolved_by": ROUTING_ACTOR if closed else None,
            "resolved_at": self.now if closed else None,
            "created_at": self.now,
            "updated_at": self.now,
            **self._fields(ctx, decision),
        }
        inserted = await insert_ignore(
            self.session, table(QueueItem), values, conflict_columns=["comment_id"], returning=table(QueueItem).c.id
        )
        if inserted is None:  # another runner placed it first: theirs stands
            return await self._item_of(comment.id)
        item = await self.session.get(QueueItem, inserted)
        assert item is not None
        await items.created(self.session, item, actor=ROUTING_ACTOR)
        if decision.member and not closed:
            if decision.team and decision.assigned_by == "round_robin":
                await self.session.execute(
                    sa.update(Team).where(col(Team.id) == decision.team).values(last_assigned_id=decision.member)
                )
            self._count_load(decision)
        return item

    def _count_load(self, decision: Decision) -> None:
        # Later comments of the same batch see this assignment (least-loaded and round robin stay fair).
        assert decision.member is not None
        load = dict(self.directory.load)
        load[decision.member] = load.get(decision.member, 0) + 1
        last = dict(self.directory.last_assigned)
        if decision.team and decision.assigned_by == "round_robin":
            last[decision.team] = decision.member
        self.directory = Directory(
            members=self.directory.members, teams=self.directory.teams, load=load, last_assigned=last
        )

    async def _reroute(self, item: QueueItem, ctx: Context) -> QueueItem:
        """An edited or re-classified comment: refresh its item. Owners chosen by people or holding a claim stay."""
        if not items.is_waiting(item):
            item.topic, item.sentiment = _topic(ctx.classification), _label(ctx.classification, "sentiment")
            await self.session.flush()
            return item
        decision = self._decide(ctx)
        changes = self._fields(ctx, decision)
        keep_owner = item.manually_assigned or item.state in (ItemState.claimed, ItemState.escalated)
        if not keep_owner:
            changes["member_id"], changes["team_id"] = decision.member, decision.team
        if item.escalated_at is not None:  # the deadline it missed stays missed
            changes.pop("due_at"), changes.pop("sort_due")
        moved = any(getattr(item, k) != v for k, v in changes.items() if k in ("member_id", "team_id", "priority"))
        if not moved:
            for name, value in changes.items():
                setattr(item, name, value)
            await self.session.flush()
            return item
        return await items.transition(
            self.session, item, actor=ROUTING_ACTOR, action="rerouted", now=self.now, note=decision.reason, **changes
        )

    # --- threads answer themselves -------------------------------------------------------------------------

    def _member_of(self, source_slug: str, external_id: str | None) -> MemberInfo | None:
        return self.directory.member_for(source_slug, external_id) if external_id else None

    def _may_answer(self, item: QueueItem, replier: Context, original: Comment) -> bool:
        """The replier is the item's owner or claimant, a member of its team, or the story's author."""
        reply = replier.comment
        if not reply.author_external_id or reply.author_external_id == original.author_external_id:
            return False
        thread = replier.thread
        if thread is not None and thread.author_external_id == reply.author_external_id:
            return True
        member = self._member_of(replier.source_slug, reply.author_external_id)
        if member is None:
            return False
        if member.id in (item.member_id, item.claimed_by):
            return True
        team = self.directory.teams.get(item.team_id) if item.team_id else None
        return team is not None and member.id in team.members

    async def _items_answered_by(self, ctx: Context) -> list[QueueItem]:
        """The waiting items this comment answers: its parent's, or (no parent) earlier ones in its thread."""
        reply = ctx.comment
        if reply.thread_id is None or not reply.author_external_id:
            return []
        thread_author = ctx.thread.author_external_id if ctx.thread is not None else None
        if (
            reply.author_external_id != thread_author
            and self._member_of(ctx.source_slug, reply.author_external_id) is None
        ):
            return []  # neither the story's author nor a member: answers nothing (the common case, no query)
        stmt = (
            sa.select(QueueItem, Comment)
            .join(Comment, col(Comment.id) == col(QueueItem.comment_id))
            .where(
                col(Comment.source_id) == reply.source_id,
                col(Comment.thread_id) == reply.thread_id,
                col(QueueItem.state).in_([s.value for s in WAITING_STATES if s != ItemState.held]),
            )
        )
        if reply.parent_external_id is not None:
            stmt = stmt.where(col(Comment.external_id) == reply.parent_external_id)
        else:
            stmt = stmt.where(col(Comment.received_at) <= reply.received_at, col(Comment.id) != reply.id)
        rows = (await self.session.execute(stmt)).all()
        answered = [item for item, original in rows if self._may_answer(item, ctx, original)]
        if not answered or not self._lock:
            return answered
        # Lock only the items this reply answers (never the whole thread), and re-read them under the lock.
        locked = await self.session.execute(
            sa.select(QueueItem)
            .where(col(QueueItem.id).in_([i.id for i in answered]))
            .order_by(col(QueueItem.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return [item for item in locked.scalars() if items.is_waiting(item)]

    async def _early_answer(self, item: QueueItem, ctx: Context) -> Context | None:
        """A qualifying reply to this comment that was processed before it (webhooks may arrive out of order)."""
        if ctx.comment.thread_id is None:
            return None
        replies = (
            await self.session.execute(
                sa.select(col(Comment.id))
                .join(QueueItem, col(QueueItem.comment_id) == col(Comment.id))
                .where(
                    col(Comment.source_id) == ctx.comment.source_id,
                    col(Comment.thread_id) == ctx.comment.thread_id,
                    col(Comment.parent_external_id) == ctx.comment.external_id,
                    col(Comment.deleted_at).is_(None),
                )
                .order_by(col(Comment.received_at))
            )
        ).scalars()
        for reply_id in replies:
            reply = await self.context(reply_id)
            if reply is not None and self._may_answer(item, reply, ctx.comment):
                return reply
        return None

    async def _resolve_answered(self, item: QueueItem, reply: Context) -> None:
        # When we learned of the answer: never before the item existed (platform clocks and out-of-order delivery).
        answered_at = max(reply.comment.received_at, item.created_at)
        member = self._member_of(reply.source_slug, reply.comment.author_external_id)
        who = member.id if member else f"thread author {reply.comment.author_external_id}"
        await items.transition(
            self.session, item, actor=ROUTING_ACTOR, action="answered_on_platform", now=self.now,
            state=ItemState.resolved, note=f"reply {reply.comment.id} by {who}",
            resolution=Resolution.answered_on_platform.value, resolved_by=who, resolved_at=self.now,
            answered_by=who, first_response_at=item.first_response_at or answered_at,
            claimed_by=None, claim_expires_at=None,
        )  # fmt: skip

    async def _follow_up_of(self, ctx: Context) -> QueueItem | None:
        """The original author's closed item this comment follows up (same thread, same author)."""
        comment = ctx.comment
        if comment.thread_id is None or not comment.author_external_id:
            return None
        stmt = (
            sa.select(QueueItem, Comment)
            .join(Comment, col(Comment.id) == col(QueueItem.comment_id))
            .where(
                col(Comment.source_id) == comment.source_id,
                col(Comment.thread_id) == comment.thread_id,
                col(Comment.author_external_id) == comment.author_external_id,
                col(Comment.id) != comment.id,
                col(Comment.received_at) <= comment.received_at,
                col(QueueItem.state).in_([s.value for s in CLOSED_STATES]),
                col(QueueItem.resolution).in_([r.value for r in REOPENABLE]),
            )
            .order_by(col(Comment.received_at).desc())
        )
        rows = (await self.session.execute(stmt)).all()
        if not rows:
            return None
        if comment.parent_external_id is None:
            return rows[0][0]
        # Threaded: a reply to their own comment or to an answer of it.
        parents = await self._parent_chain(comment, depth=2)
        for item, original in rows:
            if original.external_id in parents:
                return item
        return None

    async def _parent_chain(self, comment: Comment, *, depth: int) -> set[str]:
        chain: set[str] = set()
        current = comment.parent_external_id
        while current is not None and len(chain) < depth:
            chain.add(current)
            current = (
                await self.session.execute(
                    sa.select(col(Comment.parent_external_id)).where(
                        col(Comment.source_id) == comment.source_id, col(Comment.external_id) == current
                    )
                )
            ).scalar_one_or_none()
        return chain


async def dispatch_comments(session: AsyncSession, comment_ids: Sequence[uuid.UUID], *, now: datetime) -> None:
    """Place each processed comment in the queue (in the caller's transaction)."""
    if not comment_ids:
        return
    dispatcher = await Dispatcher.open(session, now=now)
    for comment_id in comment_ids:
        await dispatcher.dispatch(comment_id)


async def close_for_deleted_comment(session: AsyncSession, comment_id: uuid.UUID, *, now: datetime) -> None:
    """A comment was deleted on the platform: its waiting item is resolved (nothing left to answer)."""
    item = (
        await session.execute(sa.select(QueueItem).where(col(QueueItem.comment_id) == comment_id))
    ).scalar_one_or_none()
    if item is not None and items.is_waiting(item):
        await items.transition(
            session, item, actor=ROUTING_ACTOR, action="resolved", now=now, state=ItemState.resolved,
            resolution=Resolution.comment_deleted.value, resolved_by=ROUTING_ACTOR, resolved_at=now,
            claimed_by=None, claim_expires_at=None,
        )  # fmt: skip
