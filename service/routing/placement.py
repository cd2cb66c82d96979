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
What it reads of the comments and the directory is `service.routing.context`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.items import transitions as items
from service.models import (
    ItemState,
    QueueItem,
    Resolution,
    Team,
)
from service.models.queue import NO_DUE, PRIORITY_RANK, Priority
from service.routing import CompiledRuleset, Decision, Directory, route
from service.routing.context import LOAD_STATES, Context, facts_of, with_thresholds
from service.routing.facts import label_of

ROUTING_ACTOR = "routing"
# What a re-route changes for people: a change of any of these is audited (and counted); a new rule or reason
# alone is not a change.
HANDLING = frozenset({"state", "member_id", "team_id", "priority", "due_at", "no_reply", "tags"})


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
