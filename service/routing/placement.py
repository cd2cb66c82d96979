"""Where a queue item goes when its comment, its labels or the rules change: one code path for every re-route.

Re-classification (a topic refit, an edit), a responder's correction, an approval, an admin's reroute and the
simulation of a draft all re-place items here, so what a simulation shows is what applying it does:

- Only waiting items move, and never one a person has taken charge of: claimed, snoozed, approved or
  reassigned (nor an escalated one: the deadline it missed stays missed). Those keep their owner, rule and SLA;
  re-classification still refreshes their labels.
- An item moves only when the routing decision changes (another rule, or another target). Within the team it
  is in, the member who has it keeps it: the team's strategy does not pick again.
- The SLA counts from when the comment reached us, or from when it left moderation; re-routing keeps that
  start and applies the new rule's SLA to it.
- A no-op writes nothing and audits nothing; a change is one audited transition.

`Placer` carries the directory (loads, round-robin positions) from one item to the next, as live routing does.
Responders' corrections (labels) are applied over the stored classification wherever routing or a responder
reads it (`corrected`); the stored document stays what the classifiers said.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.classification.classifier import BINARY_HEADS, decide
from service.items import transitions as items
from service.models import (
    Comment,
    CommentAnalysis,
    ItemState,
    Label,
    Member,
    MemberIdentity,
    QueueItem,
    Resolution,
    Source,
    Team,
    TeamMember,
    Thread,
)
from service.models.queue import NO_DUE, PRIORITY_RANK, Priority
from service.routing import CompiledRuleset, Decision, Directory, Facts, MemberInfo, TeamInfo, route

# The states that count in a member's load (held items wait for moderation, not for them).
LOAD_STATES = (ItemState.open, ItemState.claimed, ItemState.escalated)
ROUTING_ACTOR = "routing"
# What a re-route changes for people: a change of any of these is audited (and counted); a new rule or reason
# alone is not a change.
HANDLING = frozenset({"state", "member_id", "team_id", "priority", "due_at", "no_reply", "tags"})


# --- what routing sees of a comment ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """One comment with what routing needs to know about it (its classification as corrected by responders)."""

    comment: Comment
    thread: Thread | None
    source_slug: str
    classification: Mapping[str, Any] | None
    flags: frozenset[str] = frozenset()  # flags a responder set that no head decides (spam, personal data)


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
        extra_flags=ctx.flags,
    )


def label_of(doc: Mapping[str, Any] | None, head: str) -> str | None:
    """A head's label in a classification document (None: no such head, or no label)."""
    value = (doc or {}).get(head)
    if isinstance(value, Mapping):
        label = value.get("label")
        return str(label) if label is not None else None
    return None


def corrected(
    doc: Mapping[str, Any] | None, labels: Sequence[Label]
) -> tuple[Mapping[str, Any] | None, frozenset[str]]:
    """The classification as responders corrected it (later corrections win), and the flags no head decides.

    A corrected head keeps its scores and names who corrected it (`corrected_by`).
    """
    if not labels:
        return doc, frozenset()
    out: dict[str, Any] = dict(doc or {})
    extra: set[str] = set()

    def set_label(head: str, label: str, actor: str) -> None:
        before = out.get(head)
        out[head] = {**(before if isinstance(before, Mapping) else {}), "label": label, "corrected_by": actor}

    for label in labels:
        if label.topic is not None:
            set_label("topic", label.topic, label.actor)
        if label.sentiment is not None:
            set_label("sentiment", label.sentiment, label.actor)
        for flag, value in (label.flags or {}).items():
            if flag in BINARY_HEADS:
                positive, negative = BINARY_HEADS[flag]
                set_label(flag, positive if value else negative, label.actor)
            elif flag == "pii" and not value:
                out["pii"] = []
                extra.discard("pii")
            elif value:
                extra.add(flag)
            else:
                extra.discard(flag)
    return out, frozenset(extra)


def with_thresholds(doc: Mapping[str, Any] | None, thresholds: Mapping[str, float] | None) -> Mapping[str, Any] | None:
    """The classification as it would read under other thresholds of the binary heads (from the stored scores)."""
    if doc is None or not thresholds:
        return doc
    changed = dict(doc)
    for name in BINARY_HEADS:
        head = doc.get(name)
        if name in thresholds and isinstance(head, Mapping) and isinstance(head.get("scores"), Mapping):
            if "corrected_by" in head:  # a responder's word is not a score
                continue
            changed[name] = {**head, "label": decide(name, str(head.get("label")), head["scores"], thresholds)}
    return changed


async def labels_of(session: AsyncSession, comment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Label]]:
    """Every correction of these comments, oldest first."""
    found: dict[uuid.UUID, list[Label]] = defaultdict(list)
    if comment_ids:
        rows = await session.execute(
            sa.select(Label).where(col(Label.comment_id).in_(comment_ids)).order_by(col(Label.id))
        )
        for label in rows.scalars():
            found[label.comment_id].append(label)
    return found


async def contexts(session: AsyncSession, comment_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Context]:
    """The comments with their thread, source and classification as responders corrected it."""
    rows = (
        await session.execute(
            sa.select(Comment, Thread, col(Source.slug), col(CommentAnalysis.classification))
            .join(Source, col(Source.id) == col(Comment.source_id))
            .outerjoin(Thread, col(Thread.id) == col(Comment.thread_id))
            .outerjoin(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
            .where(col(Comment.id).in_(comment_ids))
        )
    ).all()
    labels = await labels_of(session, comment_ids)
    found = {}
    for comment, thread, slug, classification in rows:
        doc, flags = corrected(classification, labels.get(comment.id, []))
        found[comment.id] = Context(comment=comment, thread=thread, source_slug=slug, classification=doc, flags=flags)
    return found


async def load(
    session: AsyncSession, comment_ids: Sequence[uuid.UUID], *, lock: bool = False
) -> list[tuple[Context, QueueItem | None]]:
    """The comments (in the given order) with their context and queue item; `lock`: the items are locked
    (PostgreSQL, in id order) and read afresh, for a caller about to change them."""
    found = await contexts(session, comment_ids)
    query = sa.select(QueueItem).where(col(QueueItem.comment_id).in_(comment_ids))
    if lock:
        query = query.order_by(col(QueueItem.id)).execution_options(populate_existing=True)
        if session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
    items_of = {item.comment_id: item for item in (await session.execute(query)).scalars()}
    return [(found[i], items_of.get(i)) for i in comment_ids if i in found]


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
            .where(col(QueueItem.member_id).is_not(None), col(QueueItem.state).in_([s.value for s in LOAD_STATES]))
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


# --- where an item is, and where it would go ----------------------------------------------------------------


def taken_in_hand(item: QueueItem) -> bool:
    """A person has taken charge of the waiting item (claimed, snoozed, approved or reassigned it), or it is
    escalated: routing leaves it where it is."""
    return (
        item.state in (ItemState.claimed, ItemState.escalated)
        or item.manually_assigned
        or item.snoozed_until is not None
    )


@dataclass(frozen=True, slots=True)
class Placement:
    """Where an item is or would be: what a simulation compares and a reroute changes."""

    member: str | None
    team: str | None
    priority: str
    sla_seconds: int | None
    hold: bool
    no_reply: bool
    rule_id: str
    reason: str

    @property
    def owner(self) -> str:
        """A member, a team's pool, or nobody."""
        return f"member:{self.member}" if self.member else f"team:{self.team}" if self.team else "unassigned"

    @classmethod
    def of(cls, item: QueueItem) -> Placement:
        """Where the item is now."""
        return cls(
            member=item.member_id, team=item.team_id, priority=item.priority, sla_seconds=item.sla_seconds,
            hold=item.state == ItemState.held, no_reply=item.no_reply, rule_id=item.rule_id, reason=item.reason,
        )  # fmt: skip

    @classmethod
    def decided(cls, decision: Decision) -> Placement:
        """Where a decision puts an item."""
        return cls(
            member=decision.member, team=decision.team, priority=decision.priority,
            sla_seconds=int(decision.sla.total_seconds()) if decision.sla is not None else None,
            hold=decision.hold, no_reply=decision.no_reply, rule_id=decision.rule_id, reason=decision.reason,
        )  # fmt: skip

    def public(self) -> dict[str, Any]:
        """As simulations show it."""
        return {
            "owner": self.owner,
            "member": self.member,
            "team": self.team,
            "priority": self.priority,
            "sla_seconds": self.sla_seconds,
            "hold": self.hold,
            "no_reply": self.no_reply,
            "rule_id": self.rule_id,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """What re-placing one item does: routing changes (audited; empty: it stays) and label refreshes (not)."""

    item: QueueItem
    before: Placement
    after: Placement
    changes: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None  # None: not routed again (closed, or in a person's hands)

    @property
    def kept(self) -> bool:
        """Waiting, but left alone because a person has it (or it is escalated)."""
        return self.decision is None and items.is_waiting(self.item)


def decision_fields(decision: Decision, *, state: ItemState, sla_start: datetime) -> dict[str, Any]:
    """The item's routing columns for a decision (state held or open; the SLA counted from `sla_start`)."""
    due = sla_start + decision.sla if decision.sla is not None else None
    priority = Priority(decision.priority)
    return {
        "state": state.value,
        "member_id": decision.member,
        "team_id": decision.team,
        "priority": priority.value,
        "priority_rank": PRIORITY_RANK[priority],
        "rule_id": decision.rule_id,
        "tags": list(decision.tags),
        "no_reply": decision.no_reply,
        "sla_seconds": int(decision.sla.total_seconds()) if decision.sla is not None else None,
        "due_at": due,
        "sort_due": due or NO_DUE,
    }


def _sla_start(item: QueueItem, received_at: datetime, *, state: ItemState, now: datetime) -> datetime:
    """When the item's SLA counts from: held items from receipt; leaving moderation, now; else as it did."""
    if state == ItemState.held:
        return received_at
    if item.state == ItemState.held:
        return now
    if item.due_at is not None and item.sla_seconds is not None:
        return item.due_at - timedelta(seconds=item.sla_seconds)  # receipt, or a reopening, or an approval
    return received_at


class Placer:
    """Decides where items go over one directory, which evolves as items are placed (loads, round robin)."""

    def __init__(
        self, directory: Directory, ruleset: CompiledRuleset, *, now: datetime,
        thresholds: Mapping[str, float] | None = None,
    ) -> None:  # fmt: skip
        self._load: dict[str, int] = dict(directory.load)
        self._last: dict[str, str] = dict(directory.last_assigned)
        self.directory = replace(directory, load=self._load, last_assigned=self._last)
        self.ruleset = ruleset
        self.now = now
        self.thresholds = thresholds

    def decide(self, ctx: Context, *, keep: QueueItem | None = None, released: bool = False) -> Decision:
        """Route the comment (an existing item's member stays if the decision keeps its team)."""
        if self.thresholds:
            ctx = replace(ctx, classification=with_thresholds(ctx.classification, self.thresholds))
        return route(
            facts_of(ctx), self.ruleset, self.directory, now=self.now, released=released,
            keep=(keep.team_id, keep.member_id) if keep is not None and keep.member_id else None,
        )  # fmt: skip

    def placed(self, decision: Decision, *, state: str, before: QueueItem | None = None) -> None:
        """Account for an item placed by `decision` (and taken from where `before` had it)."""
        if before is not None and before.member_id and before.state in LOAD_STATES:
            self._load[before.member_id] = self._load.get(before.member_id, 0) - 1
        if decision.member and state in LOAD_STATES:
            self._load[decision.member] = self._load.get(decision.member, 0) + 1
        if decision.member and decision.team and decision.assigned_by == "round_robin":
            self._last[decision.team] = decision.member

    def plan(self, item: QueueItem, ctx: Context) -> Plan:
        """Where the item goes now (see the module's rules); the directory moves on as if it were applied."""
        fresh = {
            "topic": label_of(ctx.classification, "topic"),
            "sentiment": label_of(ctx.classification, "sentiment"),
            "channel": ctx.thread.channel if ctx.thread else None,
        }
        labels = {k: v for k, v in fresh.items() if getattr(item, k) != v}
        before = Placement.of(item)
        if not items.is_waiting(item) or taken_in_hand(item):
            return Plan(item=item, before=before, after=before, labels=labels)
        decision = self.decide(ctx, keep=item)
        state = ItemState.held if decision.hold else ItemState.open
        start = _sla_start(item, ctx.comment.received_at, state=state, now=self.now)
        target = decision_fields(decision, state=state, sla_start=start)
        changes = {k: v for k, v in target.items() if getattr(item, k) != v}
        if not changes.keys() & HANDLING:  # another rule that handles it the same way: nothing to do
            return Plan(item=item, before=before, after=before, labels=labels, decision=decision)
        changes |= {"ruleset_version": decision.ruleset_version, "reason": decision.reason}
        self.placed(decision, state=state, before=item)
        after = Placement.decided(decision)
        return Plan(item=item, before=before, after=after, changes=changes, labels=labels, decision=decision)

    def release(self, item: QueueItem, ctx: Context) -> Plan:
        """A held item approved: where the rules send it if it had not been held, its SLA from now."""
        decision = self.decide(ctx, keep=item, released=True)
        if item.manually_assigned:  # a person gave it to someone while it was held: it stays theirs
            reason = f"{decision.reason.split('; ')[0]}; kept with the owner a person chose while it was held"
            decision = replace(decision, member=item.member_id, team=item.team_id, assigned_by=None, reason=reason)
        fields = decision_fields(decision, state=ItemState.open, sla_start=self.now)
        if decision.no_reply:  # as on arrival: a comment that needs no reply is closed at once
            fields |= {"state": ItemState.resolved.value, "resolution": Resolution.no_reply_needed.value,
                       "resolved_by": ROUTING_ACTOR, "resolved_at": self.now}  # fmt: skip
        fields |= {"ruleset_version": decision.ruleset_version, "reason": decision.reason, "manually_assigned": True}
        self.placed(decision, state=fields["state"], before=item)
        after = replace(Placement.decided(decision), hold=False)
        return Plan(item=item, before=Placement.of(item), after=after, changes=fields, decision=decision)

    async def apply(self, session: AsyncSession, plan: Plan, *, actor: str, action: str = "rerouted") -> bool:
        """Write the plan: a change is one audited transition, a label refresh alone is not audited."""
        item = plan.item
        if not plan.changes:
            if plan.labels:
                for name, value in plan.labels.items():
                    setattr(item, name, value)
                await session.flush()
            return False
        changes = {**plan.labels, **plan.changes}
        await items.transition(session, item, actor=actor, action=action, now=self.now, note=changes["reason"],
                               **changes)  # fmt: skip
        decision = plan.decision
        if decision is not None and decision.member and decision.team and decision.assigned_by == "round_robin":
            await session.execute(
                sa.update(Team).where(col(Team.id) == decision.team).values(last_assigned_id=decision.member)
            )
        return True
