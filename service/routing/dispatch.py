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
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import metrics
from service.database import dialect_name, insert_ignore, table
from service.items import transitions as items
from service.models import Comment, ItemState, QueueItem, Resolution, Team
from service.models.queue import CLOSED_STATES, NO_DUE, PRIORITY_RANK, WAITING_STATES, Priority
from service.outbound import platform
from service.routing import CompiledRuleset, Decision, Directory, MemberInfo, rules
from service.routing.context import Context, contexts, load_directory
from service.routing.facts import label_of
from service.routing.placement import ROUTING_ACTOR, Placer

log = logging.getLogger(__name__)

# Closed items a follow-up may reopen: not the ones closed as spam, duplicate or out of scope.
REOPENABLE = (Resolution.answered, Resolution.answered_on_platform, Resolution.no_reply_needed)


def due_at(received_at: datetime, sla: timedelta | None) -> datetime | None:
    """When the first response is due: the SLA counts from when the comment reached us."""
    return received_at + sla if sla is not None else None


class Dispatcher:
    """Routes a batch of processed comments within one transaction (the directory and rules are read once)."""

    def __init__(self, session: AsyncSession, directory: Directory, ruleset: CompiledRuleset, *, now: datetime):
        self.session = session
        self.placer = Placer(directory, ruleset, now=now)
        self.now = now
        self._lock = dialect_name(session) == "postgresql"

    @property
    def directory(self) -> Directory:
        """The directory as this batch has left it (loads and round-robin positions move on)."""
        return self.placer.directory

    @classmethod
    async def open(cls, session: AsyncSession, *, now: datetime) -> Dispatcher:
        """A dispatcher over the live directory and rules."""
        return cls(session, await load_directory(session), await rules.compiled(session), now=now)

    async def context(self, comment_id: uuid.UUID) -> Context | None:
        """Load a comment, its thread, source and classification as corrected (None if gone)."""
        return (await contexts(self.session, [comment_id])).get(comment_id)

    async def dispatch(self, comment_id: uuid.UUID) -> QueueItem | None:
        """Create or update the comment's queue item (None for a deleted comment)."""
        ctx = await self.context(comment_id)
        if ctx is None or ctx.comment.deleted_at is not None or await self._is_echo(ctx.comment):
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
        if original is not None and label_of(ctx.classification, "needs_answer") != "no_answer":
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

    async def _is_echo(self, comment: Comment) -> bool:
        """A reply Switchboard delivered, come back from the platform as a new comment: it opens no item."""
        if comment.echo_of_reply_id is None:
            echo = await platform.echo_of(
                self.session, source_id=comment.source_id, external_id=comment.external_id, marker=None
            )
            if echo is None:
                return False
            comment.echo_of_reply_id = echo
            self.session.add(comment)
        log.info("comment %s is the echo of reply %s; no item", comment.id, comment.echo_of_reply_id)
        return True

    def _decide(self, ctx: Context) -> Decision:
        return self.placer.decide(ctx)

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
            "topic": label_of(ctx.classification, "topic"),
            "sentiment": label_of(ctx.classification, "sentiment"),
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
        await items.created(self.session, item, actor=ROUTING_ACTOR, now=self.now)
        metrics.ROUTED_ITEMS.labels(rule=decision.rule_id).inc()
        if decision.member and not closed:
            if decision.team and decision.assigned_by == "round_robin":
                await self.session.execute(
                    sa.update(Team).where(col(Team.id) == decision.team).values(last_assigned_id=decision.member)
                )
            self.placer.placed(decision, state=state)  # later comments of the batch see this assignment
        return item

    async def _reroute(self, item: QueueItem, ctx: Context) -> QueueItem:
        """An edited, re-classified or corrected comment: move its item only if the routing decision changed."""
        await self.placer.apply(self.session, self.placer.plan(item, ctx), actor=ROUTING_ACTOR)
        return item

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


async def reroute_comment(session: AsyncSession, comment_id: uuid.UUID, *, now: datetime) -> QueueItem | None:
    """A responder corrected the comment's labels: show them on its item, and move it if the route changed."""
    dispatcher = await Dispatcher.open(session, now=now)
    item = await dispatcher._item_of(comment_id)
    ctx = await dispatcher.context(comment_id)
    if item is None or ctx is None or ctx.comment.deleted_at is not None:
        return item
    return await dispatcher._reroute(item, ctx)


async def release(session: AsyncSession, item: QueueItem, *, actor: str, now: datetime) -> QueueItem:
    """Approve a held item: it goes where the rules send it if it had not been held (the first matching rule that
    does not hold), its SLA counting from now; routing leaves it there from then on."""
    dispatcher = await Dispatcher.open(session, now=now)
    ctx = await dispatcher.context(item.comment_id)
    assert ctx is not None  # an item's comment is never removed, only marked deleted
    await dispatcher.placer.apply(session, dispatcher.placer.release(item, ctx), actor=actor, action="approved")
    return item


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
