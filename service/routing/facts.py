"""What `route` is given (the comment's facts, the directory) and what it returns (the decision and its trace)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from service.routing.schema import AssignedBy, StrategyName

# ---- what route() is given and returns --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What route() knows about one comment."""

    source: str
    text: str
    channel: str | None = None
    thread_kind: str | None = None
    thread_author: str | None = None  # external id on the source
    author: str | None = None  # the comment author's external id
    author_department: str | None = None
    is_reply: bool = False
    classification: Mapping[str, Any] | None = None  # service.classification.document()
    extra_flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A member as routing sees them."""

    id: str
    name: str
    active: bool = True
    capacity: int = 20
    away_until: datetime | None = None  # tz-aware UTC; away while now < away_until
    delegate: str | None = None  # member id
    external_ids: frozenset[tuple[str, str]] = frozenset()  # (source slug, external id)


@dataclass(frozen=True, slots=True)
class TeamInfo:
    """A team as routing sees it."""

    id: str
    name: str
    members: tuple[str, ...]  # member ids, in round-robin order
    lead: str | None = None
    strategy: StrategyName = "round_robin"


@dataclass(frozen=True, slots=True)
class Directory:
    """Members, teams and the routing state (load, round-robin position) at the time of routing."""

    members: Mapping[str, MemberInfo]
    teams: Mapping[str, TeamInfo]
    load: Mapping[str, int] = field(default_factory=dict)  # member id -> open/claimed items now
    last_assigned: Mapping[str, str] = field(default_factory=dict)  # team id -> member round robin picked last
    _by_external_id: dict[tuple[str, str], MemberInfo] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index: dict[tuple[str, str], MemberInfo] = {}
        for member in self.members.values():
            for key in member.external_ids:
                index.setdefault(key, member)
        object.__setattr__(self, "_by_external_id", index)

    def member_for(self, source: str, external_id: str) -> MemberInfo | None:
        """The member whose external id on `source` is `external_id` (exact match), if any."""
        return self._by_external_id.get((source, external_id))


@dataclass(frozen=True, slots=True)
class LeafTrace:
    """One leaf of a rule's condition as evaluated: where it is, what it says, what was seen, the result."""

    path: str  # e.g. "when.all[1].not"
    condition: str  # e.g. 'topic is "pay"'
    seen: str | float | bool | None  # the fact's value (None: missing; text: the matched excerpt)
    result: bool


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One rule as route() met it: matched, not matched (with why) or disabled (not evaluated)."""

    rule_id: str
    rule_name: str
    rule_index: int
    outcome: Literal["matched", "not_matched", "disabled"]
    why: str
    leaves: tuple[LeafTrace, ...]


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of routing one comment, with the rule that decided it and a one-line reason."""

    rule_id: str
    rule_name: str
    rule_index: int  # 0-based position in the ruleset (the reason's "#n" is 1-based)
    ruleset_version: int
    member: str | None  # the assignee (None: the team's pool, or unassigned)
    team: str | None  # the team the item belongs to (visibility, escalation), if any
    priority: str
    sla: timedelta | None
    hold: bool
    no_reply: bool
    tags: tuple[str, ...]
    reason: str
    trace: tuple[RuleTrace, ...]
    # How `member` was chosen; "round_robin" tells the caller to store member as the team's last_assigned.
    assigned_by: AssignedBy | None = None
