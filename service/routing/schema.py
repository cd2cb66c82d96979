"""The routing rules' schema: the body of `PUT /v1/admin/rules`, validated (RE2 patterns included) when built."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
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
# "kept": re-routing an item within the team it is in leaves it with the member who has it (no strategy runs).
AssignedBy: TypeAlias = Literal["member", "delegate", "thread_author", "round_robin", "least_loaded", "kept"]

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
    """Compare a classifier probability (or the topic's score) with a number."""

    field: Literal["score"] = Field(description="A classifier score.")
    score: str = Field(
        pattern=SCORE_PATH_PATTERN,
        description="<head>.<label> (heads: sentiment, offensive, hate, emotion, needs_answer; e.g. "
        "sentiment.negative, offensive.offensive) or topic (the score of the chosen topic: the similarity of its "
        "nearest examples, lowered when the topic classifier is unsure).",
    )
    op: Literal[">", ">=", "<", "<=", "=="] = Field(description="Comparison: score <op> value.")
    value: float = Field(allow_inf_nan=False, strict=True, description="The number to compare with.")


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
    hold: bool = Field(False, strict=True, description="Hold the comment for moderation before anyone answers it.")
    tags: list[TagText] = Field(
        default_factory=list, max_length=MAX_TAGS, description="Tags (1..50 characters each; duplicates dropped)."
    )
    no_reply: bool = Field(False, strict=True, description="Mark as needing no reply.")

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
    enabled: bool = Field(
        True, strict=True, description="Disabled rules are skipped (the default rule must be enabled)."
    )
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
