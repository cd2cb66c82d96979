"""Routing: an ordered, versioned ruleset decides who answers a comment, with what priority and SLA, and why.

Pure: no database, no web framework, no I/O. The admin API validates a `RulesetIn` (the body of
`PUT /v1/admin/rules`), checks `referenced_ids` against the directory and stores it; processing compiles it once
per version (`compile_ruleset`) and calls `route` for each comment. First match wins; the last rule is the
default (enabled, no conditions), so every comment gets a decision.

Conditions are trees of `{"all": [...]}`, `{"any": [...]}`, `{"not": ...}` and leaves
`{"field": ..., "op": ..., "value": ...}` (score leaves add `"score": "<head>.<label>"` or `"score": "topic"`).

- Strings compare case-insensitively (both sides casefolded); an empty string counts as no value.
- Missing values (no classification yet, a null head because the language is unsupported, no thread author,
  a malformed document) make every leaf on them false: `eq`/`in`/`is`/`has`/comparisons, and also
  `ne`/`not_in`/`lacks`, which hold only when the value is present and differs. To include missing values,
  negate the positive leaf: `{"not": {"field": "topic", "op": "eq", "value": "pay"}}` is true without a topic.
- `text` regular expressions are RE2 (linear time; no backreferences or lookaround), checked when the
  ruleset is validated, and case-sensitive unless the pattern says `(?i)`. `contains` is case-insensitive.
- Flags: `offensive`/`hate` from their heads' labels, `pii` when personal data was found, and whatever the
  caller lists in `Facts.extra_flags` (the only source of `spam` for now). `lacks` needs the flag known to be
  absent: its head ran (or, for `spam`, the caller's list is authoritative) and `extra_flags` does not name it.

Decisions explain themselves in one line, e.g.
`Rule "HR questions" (#3) matched: topic is "pay" and needs_answer is true; assigned to team HR by round robin:
Alice (Bob is away until 2026-11-30)` (`#n` counts from 1; `Decision.rule_index` from 0).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeAlias, get_args

import re2  # google-re2 ships no type information
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

# ---- limits and vocabularies ------------------------------------------------------------------------------

MAX_RULES = 500
MAX_DEPTH = 8  # a leaf alone is depth 1; {"all": [leaf]} is depth 2
MAX_LEAVES = 200  # per rule
MAX_TAGS = 20
MAX_SLA = timedelta(days=30)
MAX_PATTERN_CHARS = 1000
REGEX_MAX_MEM = 2 << 20  # bytes RE2 may use per pattern; larger patterns are rejected when saving

# Kept in step with service.classification.HEAD_NAMES (a test checks); importing it would make routing impure.
HEADS = ("sentiment", "offensive", "hate", "emotion", "needs_answer")
ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"  # member and team ids, as service.models.directory
RULE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
SCORE_PATH_PATTERN = rf"^(?:topic|(?:{'|'.join(HEADS)})\.[a-z0-9][a-z0-9_-]{{0,63}})$"

StringField: TypeAlias = Literal[
    "source", "channel", "thread_kind", "thread_author", "author", "author_department",
    "topic", "sentiment", "emotion", "language",
]  # fmt: skip
STRING_FIELDS: tuple[str, ...] = get_args(StringField)
FlagName: TypeAlias = Literal["offensive", "hate", "pii", "spam"]
Priority: TypeAlias = Literal["urgent", "high", "normal", "low"]
StrategyName: TypeAlias = Literal["round_robin", "least_loaded"]
AssignedBy: TypeAlias = Literal["member", "delegate", "thread_author", "round_robin", "least_loaded"]

MemberId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
TeamId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Constant = Annotated[str, StringConstraints(min_length=1, max_length=200)]
TagText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]


def _regex_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # errors become validation messages, not lines on stderr
    options.max_mem = REGEX_MAX_MEM
    options.never_capture = True  # only whether (and where) it matches counts: lets RE2 stay on its DFA
    return options


def compile_regex(pattern: str) -> Any:
    """Compile with RE2; raises ValueError with RE2's reason when RE2 cannot run the pattern."""
    try:
        return re2.compile(pattern, _regex_options())
    except re2.error as error:
        reason = error.args[0] if error.args else "invalid pattern"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(str(reason)) from None


# ---- the schema (PUT /v1/admin/rules) ---------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True)


class StringMatch(_Model):
    """Compare a string fact with a constant, case-insensitively. A missing fact makes the leaf false."""

    field: StringField = Field(
        description="source (slug), channel, thread_kind, thread_author (external id of the thread's author), "
        "author (the commenter's external id), author_department, topic (label), sentiment (label), emotion "
        "(label), language (code)."
    )
    op: Literal["eq", "ne", "in", "not_in"] = Field(
        description="eq / ne take one string; in / not_in a list. ne and not_in are true only when the value "
        "is present and differs."
    )
    value: Constant | list[Constant] = Field(description="The constant (eq, ne) or constants (in, not_in).")

    @model_validator(mode="after")
    def _value_fits_op(self) -> StringMatch:
        if self.op in ("eq", "ne") and not isinstance(self.value, str):
            raise ValueError(f'op "{self.op}" takes one string')
        if self.op in ("in", "not_in") and not (isinstance(self.value, list) and 1 <= len(self.value) <= 500):
            raise ValueError(f'op "{self.op}" takes a list of 1 to 500 strings')
        return self


class TextMatch(_Model):
    """Match the comment body: a case-insensitive substring, or an RE2 regular expression."""

    field: Literal["text"] = Field(description="The comment body.")
    op: Literal["contains", "regex"] = Field(
        description="contains: case-insensitive substring. regex: RE2 syntax (linear time; no backreferences "
        "or lookaround), searched anywhere in the body, case-sensitive unless the pattern starts with (?i)."
    )
    value: str = Field(min_length=1, max_length=MAX_PATTERN_CHARS, description="The substring or pattern.")


class BoolMatch(_Model):
    """Test a yes/no fact. needs_answer is the needs-answer head's decision (missing when the head is null)."""

    field: Literal["needs_answer", "is_reply"] = Field(description="needs_answer (classifier) or is_reply.")
    op: Literal["is"] = Field(description="The only operator.")
    value: bool = Field(strict=True, description="true or false.")


class FlagMatch(_Model):
    """Test a flag: offensive / hate from their heads, pii when personal data was found, spam from the caller."""

    field: Literal["flag"] = Field(description="Flags.")
    op: Literal["has", "lacks"] = Field(
        description="has: the flag is set. lacks: the flag is known to be unset (its head ran and said no)."
    )
    value: FlagName = Field(description="The flag.")


class ScoreMatch(_Model):
    """Compare a classifier probability (or the topic's similarity) with a number."""

    field: Literal["score"] = Field(description="A classifier score.")
    score: str = Field(
        pattern=SCORE_PATH_PATTERN,
        description="<head>.<label> (heads: sentiment, offensive, hate, emotion, needs_answer; e.g. "
        "sentiment.negative, offensive.offensive) or topic (the similarity of the chosen topic).",
    )
    op: Literal[">", ">=", "<", "<=", "=="] = Field(description="Comparison: score <op> value.")
    value: float = Field(allow_inf_nan=False, description="The number to compare with.")


class AllOf(_Model):
    """True when every condition is true."""

    all_: list[Condition] = Field(alias="all", min_length=1, description="Conditions that must all hold.")


class AnyOf(_Model):
    """True when at least one condition is true."""

    any_: list[Condition] = Field(alias="any", min_length=1, description="Conditions of which one must hold.")


class NotOf(_Model):
    """True when the condition is false (including when it is false because a value is missing)."""

    not_: Condition = Field(alias="not", description="The condition to negate.")


_LEAF_KINDS: dict[str, str] = {
    **dict.fromkeys(STRING_FIELDS, "string"),
    "text": "text",
    "needs_answer": "bool",
    "is_reply": "bool",
    "flag": "flag",
    "score": "score",
}


def _condition_kind(value: Any) -> str | None:
    """Which kind of condition a JSON object (or model) is: by its key, or by a leaf's field."""
    if isinstance(value, Mapping):
        for key in ("all", "any", "not"):
            if key in value:
                return key
        name = value.get("field")
        return _LEAF_KINDS.get(name) if isinstance(name, str) else None
    kinds: dict[type, str] = {AllOf: "all", AnyOf: "any", NotOf: "not", StringMatch: "string", TextMatch: "text",
                              BoolMatch: "bool", FlagMatch: "flag", ScoreMatch: "score"}  # fmt: skip
    return kinds.get(type(value))


Match: TypeAlias = StringMatch | TextMatch | BoolMatch | FlagMatch | ScoreMatch
Condition: TypeAlias = Annotated[
    Annotated[AllOf, Tag("all")]
    | Annotated[AnyOf, Tag("any")]
    | Annotated[NotOf, Tag("not")]
    | Annotated[StringMatch, Tag("string")]
    | Annotated[TextMatch, Tag("text")]
    | Annotated[BoolMatch, Tag("bool")]
    | Annotated[FlagMatch, Tag("flag")]
    | Annotated[ScoreMatch, Tag("score")],
    Discriminator(
        _condition_kind,
        custom_error_type="invalid_condition",
        custom_error_message='A condition is {"all": [...]}, {"any": [...]}, {"not": {...}} or a leaf '
        '{"field": ..., "op": ..., "value": ...} whose field is one of: ' + ", ".join(_LEAF_KINDS),
    ),
]
for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()


class AssignMember(_Model):
    """Assign to one member; if they are away or inactive: their delegate, else the fallback team."""

    to: Literal["member"] = Field(description="Assign to a member.")
    member: MemberId = Field(description="The member's id.")
    team: TeamId | None = Field(None, description="Fallback team (and the team the item is visible to).")


class AssignTeam(_Model):
    """Assign to a team: one of its available members, picked by a strategy; else the team's pool."""

    to: Literal["team"] = Field(description="Assign to a team.")
    team: TeamId = Field(description="The team's id.")
    strategy: StrategyName | None = Field(None, description="round_robin or least_loaded; null: the team's own.")


class AssignThreadAuthor(_Model):
    """Assign to the author of the thread (the story's author), mapped through members' external ids."""

    to: Literal["thread_author"] = Field(description="Assign to the thread's author.")
    team: TeamId | None = Field(
        None, description="Fallback team when the author is not a member or is away without a delegate."
    )


Assign: TypeAlias = Annotated[AssignMember | AssignTeam | AssignThreadAuthor, Field(discriminator="to")]


class Actions(_Model):
    """What happens to a comment a rule matches."""

    assign: Assign | None = Field(None, description="Who answers; null: the unassigned pool admins see.")
    priority: Priority = Field("normal", description="Queue priority.")
    sla: timedelta | None = Field(
        None, description="Time to first response: ISO 8601 duration (PT4H) or seconds; > 0 and <= 30 days."
    )
    hold: bool = Field(False, description="Hold the comment for moderation before anyone answers it.")
    tags: list[TagText] = Field(
        default_factory=list, max_length=MAX_TAGS, description="Tags (1..50 characters each; duplicates dropped)."
    )
    no_reply: bool = Field(False, description="Mark as needing no reply.")

    @field_validator("sla")
    @classmethod
    def _sla_in_range(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and not timedelta(0) < value <= MAX_SLA:
            raise ValueError("the SLA must be more than 0 and at most 30 days")
        return value

    @field_validator("tags")
    @classmethod
    def _unique_tags(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))


class Rule(_Model):
    """One routing rule: when its condition holds (and it is enabled), its actions apply."""

    id: str = Field(pattern=RULE_ID_PATTERN, description="Stable id, unique in the ruleset: [a-z0-9_-], <= 64.")
    name: str = Field(min_length=1, max_length=200, description="Shown in decisions' reasons.")
    description: str | None = Field(None, max_length=2000, description="Why the rule exists.")
    enabled: bool = Field(True, description="Disabled rules are skipped (the default rule must be enabled).")
    when: Condition | None = Field(None, description="The condition; null: always.")
    then: Actions = Field(description="What to do with a matching comment.")

    @model_validator(mode="after")
    def _condition_within_limits(self) -> Rule:
        if self.when is None:
            return self
        leaves = 0
        stack: list[tuple[Any, str, int]] = [(self.when, "when", 1)]
        while stack:
            node, path, depth = stack.pop()
            if depth > MAX_DEPTH:
                raise ValueError(f'rule "{self.id}": conditions may nest at most {MAX_DEPTH} deep ({path})')
            if isinstance(node, AllOf | AnyOf):
                key, children = ("all", node.all_) if isinstance(node, AllOf) else ("any", node.any_)
                stack.extend((c, f"{path}.{key}[{i}]", depth + 1) for i, c in enumerate(children))
            elif isinstance(node, NotOf):
                stack.append((node.not_, f"{path}.not", depth + 1))
            else:
                leaves += 1
                if isinstance(node, TextMatch) and node.op == "regex":
                    try:
                        compile_regex(node.value)
                    except ValueError as error:
                        raise ValueError(
                            f'rule "{self.id}": RE2 cannot use the regular expression /{node.value}/ at {path}: {error}'
                        ) from None
        if leaves > MAX_LEAVES:
            raise ValueError(f'rule "{self.id}": at most {MAX_LEAVES} conditions per rule, got {leaves}')
        return self


class RulesetIn(_Model):
    """A complete ruleset, in order. First match wins; the last rule is the default."""

    rules: list[Rule] = Field(
        min_length=1, max_length=MAX_RULES, description="The rules in order; the last is the default."
    )

    @model_validator(mode="after")
    def _ids_unique_and_default_last(self) -> RulesetIn:
        repeated = sorted(rule_id for rule_id, n in Counter(r.id for r in self.rules).items() if n > 1)
        if repeated:
            raise ValueError(f"rule ids must be unique: {', '.join(repeated)} appear more than once")
        last = self.rules[-1]
        if not last.enabled or last.when is not None:
            raise ValueError("the last rule must be the default: enabled and without conditions")
        return self


def referenced_ids(ruleset: RulesetIn) -> tuple[set[str], set[str]]:
    """The member ids and team ids the ruleset's actions name (disabled rules included), for the caller to check."""
    members: set[str] = set()
    teams: set[str] = set()
    for rule in ruleset.rules:
        assign = rule.then.assign
        if isinstance(assign, AssignMember):
            members.add(assign.member)
        if assign is not None and assign.team is not None:
            teams.add(assign.team)
    return members, teams


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


# ---- compiled conditions ----------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _excerpt(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _number(value: float) -> str:
    return f"{value:g}"


def _fold(value: object) -> str | None:
    return value.casefold() if isinstance(value, str) and value else None


def _head(doc: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    if doc is None:
        return None
    head = doc.get(name)
    return head if isinstance(head, Mapping) else None


def _label(doc: Mapping[str, Any] | None, name: str) -> str | None:
    head = _head(doc, name)
    label = head.get("label") if head is not None else None
    return label if isinstance(label, str) and label else None


def _as_number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _language(doc: Mapping[str, Any] | None) -> object:
    language = _head(doc, "language")
    return language.get("code") if language is not None else None


_STRING_FACTS: dict[str, Callable[[Facts, Mapping[str, Any] | None], object]] = {
    "source": lambda facts, _: facts.source,
    "channel": lambda facts, _: facts.channel,
    "thread_kind": lambda facts, _: facts.thread_kind,
    "thread_author": lambda facts, _: facts.thread_author,
    "author": lambda facts, _: facts.author,
    "author_department": lambda facts, _: facts.author_department,
    "topic": lambda _, doc: _label(doc, "topic"),
    "sentiment": lambda _, doc: _label(doc, "sentiment"),
    "emotion": lambda _, doc: _label(doc, "emotion"),
    "language": lambda _, doc: _language(doc),
}


class _Context:
    """One comment's facts, normalised once per route() call (string facts when first asked for)."""

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
        needs_answer = _label(doc, "needs_answer")
        self.needs_answer = None if needs_answer is None else needs_answer == "needs_answer"

        extra = facts.extra_flags if isinstance(facts.extra_flags, frozenset | set) else frozenset()
        flags = {f for f in extra if isinstance(f, str)}
        absent = {"spam"} - flags  # no spam head yet: the caller's word is final
        for name in ("offensive", "hate"):
            label = _label(doc, name)
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
        found = _head(self.doc, head)
        if found is None:
            value = None
        elif label is None:  # the topic's similarity
            value = _as_number(found.get("score"))
        else:
            scores = found.get("scores")
            value = _as_number(scores.get(label)) if isinstance(scores, Mapping) else None
        self.scores[path] = value
        return value


Seen: TypeAlias = str | float | bool | None


class _Node:
    __slots__ = ("description", "path")  # the condition in words and its place in the rule, set when compiling

    description: str
    path: str

    def test(self, ctx: _Context) -> bool:
        raise NotImplementedError


class _Leaf(_Node):
    __slots__ = ()

    def seen(self, ctx: _Context) -> Seen:
        raise NotImplementedError

    def evaluate(self, ctx: _Context) -> tuple[bool, Seen]:
        """The result and the value seen (for traces and reasons)."""
        return self.test(ctx), self.seen(ctx)

    def justify(self, seen: Seen) -> str:  # noqa: ARG002  # leaves that show the value override this
        """Why the leaf is true, given what it saw."""
        return self.description

    def refute(self, seen: Seen) -> str:
        """Why the leaf is false, given what it saw."""
        return f"{self.description} is false ({_show(seen)})"


def _show(seen: Seen) -> str:
    if isinstance(seen, bool):
        return "true" if seen else "false"
    if isinstance(seen, float):
        return _number(seen)
    return _quote(seen) if seen is not None else "no value"


class _StringLeaf(_Leaf):
    __slots__ = ("field", "op", "values", "wanted")

    def __init__(self, leaf: StringMatch) -> None:
        self.field = leaf.field
        self.op = leaf.op
        self.values = (leaf.value,) if isinstance(leaf.value, str) else tuple(leaf.value)
        self.wanted = frozenset(v.casefold() for v in self.values)
        verb = {"eq": "is", "ne": "is not", "in": "is one of", "not_in": "is none of"}[self.op]
        self.description = f"{self.field} {verb} {', '.join(_quote(v) for v in self.values)}"

    def test(self, ctx: _Context) -> bool:
        value = ctx.fold(self.field)
        if value is None:
            return False
        return (value in self.wanted) == (self.op in ("eq", "in"))

    def seen(self, ctx: _Context) -> Seen:
        return ctx.value(self.field)

    def justify(self, seen: Seen) -> str:
        if self.op == "eq":
            return self.description
        return f"{self.field} is {_show(seen)}, " + self.description.removeprefix(f"{self.field} is ")


class _TextLeaf(_Leaf):
    __slots__ = ("regex", "wanted")

    def __init__(self, leaf: TextMatch) -> None:
        self.wanted = leaf.value.casefold()
        self.regex = compile_regex(leaf.value) if leaf.op == "regex" else None
        self.description = (
            f"text contains {_quote(leaf.value)}" if self.regex is None else f"text matches /{leaf.value}/"
        )

    def test(self, ctx: _Context) -> bool:
        if self.regex is None:
            folded = ctx.text_folded()
            return folded is not None and self.wanted in folded
        encoded = ctx.text_bytes()
        return encoded is not None and self.regex.search(encoded) is not None

    def seen(self, ctx: _Context) -> Seen:
        """The matched text (None: no match)."""
        if self.regex is None:
            folded = ctx.text_folded()
            at = -1 if folded is None else folded.find(self.wanted)
            return None if folded is None or at < 0 else _excerpt(folded[at : at + len(self.wanted)])
        encoded = ctx.text_bytes()
        found = None if encoded is None else self.regex.search(encoded)
        return None if found is None else _excerpt(found.group(0).decode("utf-8", "replace"))

    def evaluate(self, ctx: _Context) -> tuple[bool, Seen]:
        seen = self.seen(ctx)  # one search, not two
        return seen is not None, seen

    def refute(self, seen: Seen) -> str:  # noqa: ARG002  # a failed match has nothing to show
        return f"{self.description} is false (no match)"


class _BoolLeaf(_Leaf):
    __slots__ = ("field", "value")

    def __init__(self, leaf: BoolMatch) -> None:
        self.field = leaf.field
        self.value = leaf.value
        self.description = f"{self.field} is {_show(self.value)}"

    def seen(self, ctx: _Context) -> Seen:
        return ctx.needs_answer if self.field == "needs_answer" else ctx.is_reply

    def test(self, ctx: _Context) -> bool:
        seen = ctx.needs_answer if self.field == "needs_answer" else ctx.is_reply
        return seen is not None and seen == self.value


class _FlagLeaf(_Leaf):
    __slots__ = ("has", "name")

    def __init__(self, leaf: FlagMatch) -> None:
        self.name = leaf.value
        self.has = leaf.op == "has"
        self.description = f"{'has' if self.has else 'lacks'} flag {self.name}"

    def seen(self, ctx: _Context) -> Seen:
        """True: set; False: known to be unset; None: unknown."""
        if self.name in ctx.flags:
            return True
        return False if self.name in ctx.absent_flags else None

    def test(self, ctx: _Context) -> bool:
        return self.name in (ctx.flags if self.has else ctx.absent_flags)

    def refute(self, seen: Seen) -> str:
        state = "unknown" if seen is None else "set" if seen else "not set"
        return f"{self.description} is false ({self.name} is {state})"


_COMPARE = {
    ">": float.__gt__,
    ">=": float.__ge__,
    "<": float.__lt__,
    "<=": float.__le__,
    "==": float.__eq__,
}


class _ScoreLeaf(_Leaf):
    __slots__ = ("compare", "label", "op", "score_path", "value")

    def __init__(self, leaf: ScoreMatch) -> None:
        head, _, label = leaf.score.partition(".")
        self.score_path = (head, label or None)
        self.label = leaf.score
        self.op = leaf.op
        self.value = float(leaf.value)
        self.compare = _COMPARE[leaf.op]
        self.description = f"score {self.label} {self.op} {_number(self.value)}"

    def seen(self, ctx: _Context) -> Seen:
        return ctx.score(self.score_path)

    def test(self, ctx: _Context) -> bool:
        score = ctx.score(self.score_path)
        return score is not None and bool(self.compare(score, self.value))

    def justify(self, seen: Seen) -> str:
        return f"score {self.label} {_show(seen)} {self.op} {_number(self.value)}"

    def refute(self, seen: Seen) -> str:
        return f"{self.description} is false ({'no score' if seen is None else _show(seen)})"


class _All(_Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[_Node, ...]) -> None:
        self.children = children
        self.description = " and ".join(_grouped(c) for c in children)

    def test(self, ctx: _Context) -> bool:
        for child in self.children:  # noqa: SIM110  # a loop beats all(generator) on routing's hot path
            if not child.test(ctx):
                return False
        return True


class _Any(_Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[_Node, ...]) -> None:
        self.children = children
        self.description = " or ".join(_grouped(c) for c in children)

    def test(self, ctx: _Context) -> bool:
        for child in self.children:  # noqa: SIM110  # a loop beats any(generator) on routing's hot path
            if child.test(ctx):
                return True
        return False


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child
        self.description = f"not ({child.description})"

    def test(self, ctx: _Context) -> bool:
        return not self.child.test(ctx)


def _grouped(node: _Node) -> str:
    grouped = isinstance(node, _All | _Any) and len(node.children) > 1
    return f"({node.description})" if grouped else node.description


def _compile(condition: Condition, path: str = "when") -> _Node:
    """The condition as evaluable nodes; `path` (as traces show it) is where it sits in its rule."""
    node: _Node
    if isinstance(condition, AllOf):
        node = _All(tuple(_compile(c, f"{path}.all[{i}]") for i, c in enumerate(condition.all_)))
    elif isinstance(condition, AnyOf):
        node = _Any(tuple(_compile(c, f"{path}.any[{i}]") for i, c in enumerate(condition.any_)))
    elif isinstance(condition, NotOf):
        node = _Not(_compile(condition.not_, f"{path}.not"))
    elif isinstance(condition, StringMatch):
        node = _StringLeaf(condition)
    elif isinstance(condition, TextMatch):
        node = _TextLeaf(condition)
    elif isinstance(condition, BoolMatch):
        node = _BoolLeaf(condition)
    elif isinstance(condition, FlagMatch):
        node = _FlagLeaf(condition)
    else:
        node = _ScoreLeaf(condition)
    node.path = path
    return node


def explain_condition(condition: Condition | None) -> str:
    """A condition in words, e.g. 'topic is "pay" and (text matches /refund/ or score sentiment.negative >= 0.8)'."""
    return "always" if condition is None else _compile(condition).description


def _walk(node: _Node, ctx: _Context, leaves: list[LeafTrace] | None) -> tuple[bool, str]:
    """Evaluate every leaf (no short cut) and say why the node is true or false; collect leaves if asked."""
    if isinstance(node, _Leaf):
        result, seen = node.evaluate(ctx)
        if leaves is not None:
            leaves.append(LeafTrace(node.path, node.description, seen, result))
        return result, node.justify(seen) if result else node.refute(seen)
    if isinstance(node, _Not):
        result, why = _walk(node.child, ctx, leaves)
        return (not result), (node.description if not result else f"{node.description} is false: {why}")
    assert isinstance(node, _All | _Any)
    results = [_walk(c, ctx, leaves) for c in node.children]
    if isinstance(node, _All):
        failed = [why for ok, why in results if not ok]
        return (not failed), (failed[0] if failed else " and ".join(why for _, why in results))
    passed = [why for ok, why in results if ok]
    return bool(passed), (passed[0] if passed else "none of: " + "; ".join(why for _, why in results))


# ---- compiled rulesets ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to evaluate: regexes compiled, constants casefolded."""

    index: int
    id: str
    name: str
    enabled: bool
    when: _Node | None
    then: Actions
    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompiledRuleset:
    """A validated ruleset compiled once per version; route() takes this."""

    version: int
    rules: tuple[CompiledRule, ...]
    source: RulesetIn


def compile_ruleset(ruleset: RulesetIn, version: int) -> CompiledRuleset:
    """Compile a validated ruleset (regexes, casefolded constants) for route()."""
    rules = tuple(
        CompiledRule(
            index=i,
            id=rule.id,
            name=rule.name,
            enabled=rule.enabled,
            when=None if rule.when is None else _compile(rule.when),
            then=rule.then,
            tags=tuple(rule.then.tags),
        )
        for i, rule in enumerate(ruleset.rules)
    )
    return CompiledRuleset(version=version, rules=rules, source=ruleset)


# ---- assignment -------------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _when(moment: datetime) -> str:
    moment = _utc(moment).astimezone(UTC)
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class _Assigner:
    """Resolves a rule's assignment against the directory at `now`, collecting the words for the reason."""

    def __init__(self, directory: Directory, now: datetime) -> None:
        self.directory = directory
        self.now = _utc(now)

    def unavailable(self, member_id: str, member: MemberInfo | None) -> str | None:
        """Why the member cannot take the item now (None: they can)."""
        if member is None:
            return f"member {_quote(member_id)} is not in the directory"
        if not member.active:
            return f"{member.name} is inactive"
        if member.away_until is not None and self.now < _utc(member.away_until):
            return f"{member.name} is away until {_when(member.away_until)}"
        return None

    def load(self, member: MemberInfo) -> tuple[int, int]:
        load = self.directory.load.get(member.id, 0)
        return (load if isinstance(load, int) else 0), member.capacity

    def person(self, member: MemberInfo) -> tuple[MemberInfo | None, AssignedBy | None, str]:
        """The member, else their delegate if available; with what happened, in words."""
        why = self.unavailable(member.id, member)
        if why is None:
            return member, None, member.name
        if member.delegate is None:
            return None, None, f"{why} and has no delegate"
        delegate = self.directory.members.get(member.delegate)
        delegate_why = self.unavailable(member.delegate, delegate)
        if delegate is None or delegate_why is not None:
            return None, None, f"{why} and their delegate is unavailable ({delegate_why})"
        return delegate, "delegate", f"{delegate.name}, the delegate of {member.name} ({why})"

    def team(
        self, team_id: str, strategy: StrategyName | None
    ) -> tuple[TeamInfo | None, MemberInfo | None, AssignedBy | None, str]:
        """Pick a member of the team by its strategy; the words say who and why (or why nobody)."""
        team = self.directory.teams.get(team_id)
        if team is None:
            return None, None, None, f"team {_quote(team_id)} is not in the directory"
        strategy = strategy or team.strategy
        if strategy not in ("round_robin", "least_loaded"):
            strategy = "round_robin"
        order = list(dict.fromkeys(team.members))
        label = strategy.replace("_", " ")
        if strategy == "round_robin" and order:
            last = self.directory.last_assigned.get(team.id)
            start = order.index(last) + 1 if last in order else 0
            order = order[start:] + order[:start]
            passed: list[str] = []  # who was passed over on the way to the pick, and why
            for member_id in order:
                member = self.directory.members.get(member_id)
                why = self.unavailable(member_id, member)
                if why is not None or member is None:
                    passed.append(why or "")
                    continue
                load, capacity = self.load(member)
                if load < capacity:
                    detail = f" ({'; '.join(passed)})" if passed else ""
                    return team, member, strategy, f"assigned to team {team.name} by {label}: {member.name}{detail}"
                passed.append(f"{member.name} is at capacity")
        # Least loaded; and round robin when nobody has room (or nobody is available).
        available: list[tuple[float, int, MemberInfo]] = []
        unavailable: list[str] = []
        for position, member_id in enumerate(order):
            member = self.directory.members.get(member_id)
            why = self.unavailable(member_id, member)
            if member is None or why is not None:
                unavailable.append(why or "")
                continue
            load, capacity = self.load(member)
            available.append((load / capacity if capacity > 0 else math.inf, position, member))
        if not available:
            reasons = "; ".join(unavailable) or "it has no members"
            return team, None, None, f"nobody in team {team.name} is available ({reasons}): left in the team's pool"
        with_room = [entry for entry in available if self.load(entry[2])[0] < entry[2].capacity]
        _, _, chosen = min(with_room or available, key=lambda entry: entry[:2])
        load, capacity = self.load(chosen)
        if not with_room:
            return (
                team,
                chosen,
                strategy,
                (
                    f"assigned to team {team.name} by {label}: everyone available is at capacity, so the least "
                    f"loaded: {chosen.name} ({load}/{capacity} open)"
                ),
            )
        return (
            team,
            chosen,
            strategy,
            f"assigned to team {team.name} by {label}: {chosen.name} ({load}/{capacity} open)",
        )

    def resolve(
        self, assign: AssignMember | AssignTeam | AssignThreadAuthor | None, facts: Facts
    ) -> tuple[str | None, str | None, AssignedBy | None, str]:
        """(member id, team id, how, words) for a rule's assignment."""
        if assign is None:
            return None, None, None, "left unassigned (the rule assigns nobody)"
        if isinstance(assign, AssignTeam):
            team, chosen, how, words = self.team(assign.team, assign.strategy)
            if team is None:
                words += ": left unassigned"
            return (chosen.id if chosen else None), (team.id if team else None), how, words
        if isinstance(assign, AssignMember):
            member = self.directory.members.get(assign.member)
            if member is None:
                problem = f"member {_quote(assign.member)} is not in the directory"
            else:
                person, how, words = self.person(member)
                if person is not None:
                    return person.id, self._team_id(assign.team), how or "member", f"assigned to {words}"
                problem = words
        else:
            author = facts.thread_author if isinstance(facts.thread_author, str) and facts.thread_author else None
            source = facts.source if isinstance(facts.source, str) else ""
            found = None if author is None else self.directory.member_for(source, author)
            if author is None:
                problem = "the thread has no known author"
            elif found is None:
                problem = f"the thread author ({source}:{author}) is not a member"
            else:
                person, how, words = self.person(found)
                if person is not None:
                    prefix = "the thread author " if how is None else ""
                    return person.id, self._team_id(assign.team), how or "thread_author", f"assigned to {prefix}{words}"
                problem = f"the thread author {words}"
        if assign.team is None:
            return None, None, None, f"{problem}; no fallback team: left unassigned"
        team, chosen, how, words = self.team(assign.team, None)
        if team is None:
            return None, None, None, f"{problem}; fallback {words}: left unassigned"
        return (chosen.id if chosen else None), team.id, how, f"{problem}; fallback: {words}"

    def _team_id(self, team_id: str | None) -> str | None:
        return team_id if team_id is not None and team_id in self.directory.teams else None


# ---- route ------------------------------------------------------------------------------------------------


def route(
    facts: Facts,
    ruleset: CompiledRuleset,
    directory: Directory,
    *,
    now: datetime,
    version: int | None = None,
    trace: bool = False,
) -> Decision:
    """Route one comment: the first enabled rule whose condition holds decides (`version` overrides the ruleset's)."""
    ctx = _Context(facts)
    traces: list[RuleTrace] = []
    matched: CompiledRule | None = None
    why = "no conditions"
    for rule in ruleset.rules:
        if not rule.enabled:
            if trace:
                traces.append(RuleTrace(rule.id, rule.name, rule.index, "disabled", "disabled", ()))
            continue
        if trace:
            leaves: list[LeafTrace] = []
            result, rule_why = (True, "no conditions") if rule.when is None else _walk(rule.when, ctx, leaves)
            outcome: Literal["matched", "not_matched"] = "matched" if result else "not_matched"
            traces.append(RuleTrace(rule.id, rule.name, rule.index, outcome, rule_why, tuple(leaves)))
            if result:
                matched, why = rule, rule_why
                break
        elif rule.when is None or rule.when.test(ctx):
            matched = rule
            if rule.when is not None:
                why = _walk(rule.when, ctx, None)[1]
            break
    if matched is None:  # only a ruleset built without validation can end without its default rule
        matched = ruleset.rules[-1]
        why = "no rule matched; the last rule applies as the default"
    member, team, how, words = _Assigner(directory, now).resolve(matched.then.assign, facts)
    actions = matched.then
    return Decision(
        rule_id=matched.id,
        rule_name=matched.name,
        rule_index=matched.index,
        ruleset_version=ruleset.version if version is None else version,
        member=member,
        team=team,
        priority=actions.priority,
        sla=actions.sla,
        hold=actions.hold,
        no_reply=actions.no_reply,
        tags=matched.tags,
        reason=f"Rule {_quote(matched.name)} (#{matched.index + 1}) matched: {why}; {words}",
        trace=tuple(traces),
        assigned_by=how,
    )
