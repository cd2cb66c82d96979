"""What `route` is given (the comment's facts, the directory) and what it returns (the decision and its trace);
how conditions read the facts (`NormalisedFacts`, and a classification document's heads and labels)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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


def head_of(doc: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    """A head's result in a classification document (None: no such head, or not an object)."""
    if doc is None:
        return None
    head = doc.get(name)
    return head if isinstance(head, Mapping) else None


def label_of(doc: Mapping[str, Any] | None, head: str) -> str | None:
    """A head's label in a classification document (None: no such head, or no label that is a non-empty string)."""
    found = head_of(doc, head)
    label = found.get("label") if found is not None else None
    return label if isinstance(label, str) and label else None


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


# ---- how conditions read them ----------------------------------------------------------------------------


def _as_number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _language(doc: Mapping[str, Any] | None) -> object:
    language = head_of(doc, "language")
    return language.get("code") if language is not None else None


_STRING_FACTS: dict[str, Callable[[Facts, Mapping[str, Any] | None], object]] = {
    "source": lambda facts, _: facts.source,
    "channel": lambda facts, _: facts.channel,
    "thread_kind": lambda facts, _: facts.thread_kind,
    "thread_author": lambda facts, _: facts.thread_author,
    "author": lambda facts, _: facts.author,
    "author_department": lambda facts, _: facts.author_department,
    "topic": lambda _, doc: label_of(doc, "topic"),
    "sentiment": lambda _, doc: label_of(doc, "sentiment"),
    "emotion": lambda _, doc: label_of(doc, "emotion"),
    "language": lambda _, doc: _language(doc),
}


class NormalisedFacts:
    """One comment's facts as conditions read them, normalised once per route() call (string facts when first
    asked for)."""

    __slots__ = (
        "_text_bytes",
        "_text_folded",
        "absent_flags",
        "doc",
        "facts",
        "flags",
        "folded",
        "is_reply",
        "needs_answer",
        "raw",
        "scores",
        "text",
    )

    def __init__(self, facts: Facts) -> None:
        doc = facts.classification if isinstance(facts.classification, Mapping) else None
        self.facts = facts
        self.doc = doc
        self.raw: dict[str, str | None] = {}
        self.folded: dict[str, str | None] = {}
        self.text = facts.text if isinstance(facts.text, str) else None
        self._text_folded: str | None = None
        self._text_bytes: bytes | None = None
        self.is_reply = facts.is_reply if isinstance(facts.is_reply, bool) else None
        needs_answer = label_of(doc, "needs_answer")
        self.needs_answer = None if needs_answer is None else needs_answer == "needs_answer"

        extra = facts.extra_flags if isinstance(facts.extra_flags, frozenset | set) else frozenset()
        flags = {f for f in extra if isinstance(f, str)}
        absent = {"spam"} - flags  # no spam head yet: the caller's word is final
        for name in ("offensive", "hate"):
            label = label_of(doc, name)
            if label == name:
                flags.add(name)
            elif label is not None and name not in flags:
                absent.add(name)
        pii = doc.get("pii") if doc is not None else None
        if isinstance(pii, Sequence) and not isinstance(pii, str):
            if pii:
                flags.add("pii")
            elif "pii" not in flags:
                absent.add("pii")
        self.flags = frozenset(flags)
        self.absent_flags = frozenset(absent)
        self.scores: dict[tuple[str, str | None], float | None] = {}

    def value(self, name: str) -> str | None:
        """A string fact as given (None: missing), looked up once per comment."""
        if name not in self.raw:
            found = _STRING_FACTS[name](self.facts, self.doc)
            self.raw[name] = found if isinstance(found, str) and found else None
        return self.raw[name]

    def fold(self, name: str) -> str | None:
        """A string fact casefolded for comparison (None: missing)."""
        if name not in self.folded:
            value = self.value(name)
            self.folded[name] = None if value is None else value.casefold()
        return self.folded[name]

    def text_folded(self) -> str | None:
        if self._text_folded is None and self.text is not None:
            self._text_folded = self.text.casefold()
        return self._text_folded

    def text_bytes(self) -> bytes | None:
        # Encoded once: RE2 would otherwise encode the body again for every pattern.
        if self._text_bytes is None and self.text is not None:
            self._text_bytes = self.text.encode("utf-8", "surrogatepass")
        return self._text_bytes

    def score(self, path: tuple[str, str | None]) -> float | None:
        try:
            return self.scores[path]
        except KeyError:
            pass
        head, label = path
        found = head_of(self.doc, head)
        if found is None:
            value = None
        elif label is None:  # the topic's score
            value = _as_number(found.get("score"))
        else:
            scores = found.get("scores")
            value = _as_number(scores.get(label)) if isinstance(scores, Mapping) else None
        self.scores[path] = value
        return value
