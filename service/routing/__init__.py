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

from datetime import datetime
from typing import Literal

from service.routing.assign import _Assigner
from service.routing.conditions import (
    CompiledRule,
    CompiledRuleset,
    _quote,
    _walk,
    compile_ruleset,
    explain_condition,
)
from service.routing.facts import (
    Decision,
    Directory,
    Facts,
    LeafTrace,
    MemberInfo,
    NormalisedFacts,
    RuleTrace,
    TeamInfo,
)
from service.routing.schema import (
    HEADS,
    MAX_DEPTH,
    MAX_LEAVES,
    MAX_RULES,
    Actions,
    AllOf,
    AnyOf,
    AssignMember,
    AssignTeam,
    AssignThreadAuthor,
    BoolMatch,
    Condition,
    FlagMatch,
    NotOf,
    Rule,
    RulesetIn,
    ScoreMatch,
    StringMatch,
    TextMatch,
    compile_regex,
    referenced_ids,
)

__all__ = [
    "HEADS",
    "MAX_DEPTH",
    "MAX_LEAVES",
    "MAX_RULES",
    "Actions",
    "AllOf",
    "AnyOf",
    "AssignMember",
    "AssignTeam",
    "AssignThreadAuthor",
    "BoolMatch",
    "CompiledRule",
    "CompiledRuleset",
    "Condition",
    "Decision",
    "Directory",
    "Facts",
    "FlagMatch",
    "LeafTrace",
    "MemberInfo",
    "NotOf",
    "Rule",
    "RuleTrace",
    "RulesetIn",
    "ScoreMatch",
    "StringMatch",
    "TeamInfo",
    "TextMatch",
    "compile_regex",
    "compile_ruleset",
    "explain_condition",
    "referenced_ids",
    "route",
]

# ---- route ------------------------------------------------------------------------------------------------


def route(
    facts: Facts,
    ruleset: CompiledRuleset,
    directory: Directory,
    *,
    now: datetime,
    version: int | None = None,
    trace: bool = False,
    keep: tuple[str | None, str | None] | None = None,
    released: bool = False,
) -> Decision:
    """Route one comment: the first enabled rule whose condition holds decides (`version` overrides the ruleset's).

    Re-routing an item passes `keep` = its (team, member): a team assignment to that same team keeps the member
    instead of running the team's strategy again. `released`: rules that hold for moderation are passed over
    (where an approved comment goes).
    """
    ctx = NormalisedFacts(facts)
    traces: list[RuleTrace] = []
    matched: CompiledRule | None = None
    why = "no conditions"
    for rule in ruleset.rules:
        if not rule.enabled or (released and rule.then.hold):
            if trace:
                why_not = "disabled" if not rule.enabled else "holds for moderation: passed over on approval"
                traces.append(RuleTrace(rule.id, rule.name, rule.index, "disabled", why_not, ()))
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
    member, team, how, words = _Assigner(directory, now, keep=keep).resolve(matched.then.assign, facts)
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
