"""Routing rules: the schema rejects what it cannot run, route() decides first-match-wins and says why."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from service.routing import (
    HEADS,
    MAX_DEPTH,
    MAX_LEAVES,
    CompiledRuleset,
    Decision,
    Directory,
    Facts,
    MemberInfo,
    RulesetIn,
    TeamInfo,
    compile_ruleset,
    explain_condition,
    referenced_ids,
    route,
)

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
AWAY = datetime(2026, 11, 30, tzinfo=UTC)
DEFAULT: dict[str, Any] = {"id": "default", "name": "Default", "then": {}}


def document(
    *,
    topic: str = "pay",
    topic_score: float = 0.72,
    sentiment: str = "negative",
    negative: float = 0.91,
    emotion: str = "anger",
    offensive: bool = False,
    hate: bool = False,
    needs_answer: bool = True,
    language: str = "en",
    pii: bool = False,
) -> dict[str, Any]:
    """A classification document shaped like service.classification.document()."""

    def binary(positive: str, negative_label: str, on: bool) -> dict[str, Any]:
        p = 0.9 if on else 0.1
        return {"label": positive if on else negative_label, "scores": {positive: p, negative_label: round(1 - p, 4)}}

    return {
        "sentiment": {"label": sentiment, "scores": {"negative": negative, "neutral": 0.05, "positive": 0.04}},
        "offensive": binary("offensive", "not-offensive", offensive),
        "hate": binary("hate", "not-hate", hate),
        "emotion": {"label": emotion, "scores": {"anger": 0.6, "joy": 0.1, "optimism": 0.1, "sadness": 0.2}},
        "needs_answer": binary("needs_answer", "no_answer", needs_answer),
        "topic": {"label": topic, "score": topic_score, "scores": {topic: topic_score}, "nearest": []},
        "language": {"code": language, "confidence": 0.99, "supported": True},
        "pii": [{"kind": "email", "start": 0, "end": 5}] if pii else [],
        "model_version": "test",
    }


def unsupported_language_document() -> dict[str, Any]:
    """What the classifier stores for a language the heads were not trained on: every head null."""
    doc: dict[str, Any] = dict.fromkeys(HEADS)
    doc.update(topic=None, language={"code": "fi", "confidence": 0.9, "supported": False}, pii=[], model_version="t")
    return doc


def facts(**overrides: Any) -> Facts:
    base: dict[str, Any] = {
        "source": "intranet",
        "text": "Why was my pay late again? Please refund the fee.",
        "channel": "HR",
        "thread_kind": "story",
        "thread_author": "u-story",
        "author": "u-7",
        "author_department": "Finance",
        "is_reply": False,
        "classification": document(),
    }
    base.update(overrides)
    return Facts(**base)


def ruleset(*rules: dict[str, Any], default: dict[str, Any] | None = None, version: int = 1) -> CompiledRuleset:
    return compile_ruleset(RulesetIn.model_validate({"rules": [*rules, default or DEFAULT]}), version)


def rule(when: dict[str, Any] | None, then: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": "r", "name": "The rule", "when": when, "then": then or {}, **extra}


def leaf(field: str, op: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"field": field, "op": op, "value": value, **extra}


def member(member_id: str, **overrides: Any) -> MemberInfo:
    return MemberInfo(id=member_id, name=member_id.capitalize(), **overrides)


def directory(**overrides: Any) -> Directory:
    members = {
        "alice": member("alice", external_ids=frozenset({("intranet", "u-story")})),
        "bob": member("bob", away_until=AWAY, delegate="carol"),
        "carol": member("carol"),
        "dave": member("dave", active=False),
        "erin": member("erin", away_until=AWAY),
    }
    teams = {
        "hr": TeamInfo(id="hr", name="HR", members=("alice", "bob", "carol")),
        "it": TeamInfo(id="it", name="IT", members=("alice", "carol"), strategy="least_loaded"),
        "gone": TeamInfo(id="gone", name="Gone", members=("dave", "erin")),
    }
    base: dict[str, Any] = {"members": members, "teams": teams}
    base.update(overrides)
    return Directory(**base)


def decide(compiled: CompiledRuleset, comment: Facts | None = None, **kwargs: Any) -> Decision:
    found = directory() if "directory" not in kwargs else kwargs.pop("directory")
    return route(comment or facts(), compiled, found, now=kwargs.pop("now", NOW), **kwargs)


def matches(condition: dict[str, Any], comment: Facts | None = None) -> bool:
    return decide(ruleset(rule(condition)), comment).rule_id == "r"


# ---- every field and operator -----------------------------------------------------------------------------

NO_CLASSIFICATION = {"classification": None}
UNSUPPORTED = {"classification": unsupported_language_document()}

CONDITIONS: list[tuple[str, dict[str, Any], dict[str, Any], bool]] = [
    ("source eq, any case", leaf("source", "eq", "InTraNet"), {}, True),
    ("source ne, same", leaf("source", "ne", "intranet"), {}, False),
    ("source ne, other", leaf("source", "ne", "yammer"), {}, True),
    ("channel in", leaf("channel", "in", ["news", "hr"]), {}, True),
    ("channel not_in, listed", leaf("channel", "not_in", ["hr"]), {}, False),
    ("channel not_in, missing", leaf("channel", "not_in", ["hr"]), {"channel": None}, False),
    ("channel ne, missing", leaf("channel", "ne", "news"), {"channel": None}, False),
    ("channel eq, empty is missing", leaf("channel", "eq", "hr"), {"channel": ""}, False),
    ("thread_kind eq", leaf("thread_kind", "eq", "Story"), {}, True),
    ("thread_author eq", leaf("thread_author", "eq", "u-story"), {}, True),
    ("thread_author eq, unknown", leaf("thread_author", "eq", "u-story"), {"thread_author": None}, False),
    ("author in", leaf("author", "in", ["u-1", "U-7"]), {}, True),
    ("author_department eq", leaf("author_department", "eq", "finance"), {}, True),
    ("author_department not_in", leaf("author_department", "not_in", ["hr", "it"]), {}, True),
    ("topic eq", leaf("topic", "eq", "Pay"), {}, True),
    ("topic ne", leaf("topic", "ne", "it"), {}, True),
    ("topic eq, no classification", leaf("topic", "eq", "pay"), NO_CLASSIFICATION, False),
    ("topic ne, no classification", leaf("topic", "ne", "it"), NO_CLASSIFICATION, False),
    ("sentiment eq", leaf("sentiment", "eq", "negative"), {}, True),
    ("sentiment eq, null head", leaf("sentiment", "eq", "negative"), UNSUPPORTED, False),
    ("sentiment not_in, null head", leaf("sentiment", "not_in", ["positive"]), UNSUPPORTED, False),
    ("emotion in", leaf("emotion", "in", ["anger", "sadness"]), {}, True),
    ("language eq", leaf("language", "eq", "EN"), {}, True),
    ("language eq, unsupported still has a code", leaf("language", "eq", "fi"), UNSUPPORTED, True),
    ("language not_in, no classification", leaf("language", "not_in", ["de"]), NO_CLASSIFICATION, False),
    ("text contains, any case", leaf("text", "contains", "REFUND"), {}, True),
    ("text contains, absent", leaf("text", "contains", "pension"), {}, False),
    ("text contains, unicode case", leaf("text", "contains", "größe"), {"text": "Die GRÖSSE passt nicht"}, True),
    ("text regex", leaf("text", "regex", r"\bpay\b.*\blate\b"), {}, True),
    ("text regex is case-sensitive", leaf("text", "regex", "REFUND"), {}, False),
    ("text regex (?i)", leaf("text", "regex", "(?i)REFUND"), {}, True),
    ("text regex, unicode", leaf("text", "regex", "(?i)café"), {"text": "The CAFÉ is shut"}, True),
    ("needs_answer is true", leaf("needs_answer", "is", True), {}, True),
    ("needs_answer is false", leaf("needs_answer", "is", False), {}, False),
    ("needs_answer is false, head said no", leaf("needs_answer", "is", False),
     {"classification": document(needs_answer=False)}, True),
    ("needs_answer is false, null head", leaf("needs_answer", "is", False), UNSUPPORTED, False),
    ("is_reply is true", leaf("is_reply", "is", True), {"is_reply": True}, True),
    ("is_reply is false", leaf("is_reply", "is", False), {}, True),
    ("has offensive", leaf("flag", "has", "offensive"), {"classification": document(offensive=True)}, True),
    ("lacks offensive", leaf("flag", "lacks", "offensive"), {}, True),
    ("lacks offensive, offensive", leaf("flag", "lacks", "offensive"),
     {"classification": document(offensive=True)}, False),
    ("lacks offensive, null head", leaf("flag", "lacks", "offensive"), UNSUPPORTED, False),
    ("has offensive, from the caller", leaf("flag", "has", "offensive"),
     {"classification": None, "extra_flags": frozenset({"offensive"})}, True),
    ("has hate", leaf("flag", "has", "hate"), {"classification": document(hate=True)}, True),
    ("lacks hate", leaf("flag", "lacks", "hate"), {}, True),
    ("has pii", leaf("flag", "has", "pii"), {"classification": document(pii=True)}, True),
    ("lacks pii", leaf("flag", "lacks", "pii"), {}, True),
    ("lacks pii, no classification", leaf("flag", "lacks", "pii"), NO_CLASSIFICATION, False),
    ("has spam, from the caller", leaf("flag", "has", "spam"), {"extra_flags": frozenset({"spam"})}, True),
    ("has spam, not said", leaf("flag", "has", "spam"), {}, False),
    ("lacks spam, not said", leaf("flag", "lacks", "spam"), {}, True),
    ("lacks spam, said", leaf("flag", "lacks", "spam"), {"extra_flags": frozenset({"spam"})}, False),
    ("score >=", leaf("score", ">=", 0.8, score="sentiment.negative"), {}, True),
    ("score >", leaf("score", ">", 0.91, score="sentiment.negative"), {}, False),
    ("score <", leaf("score", "<", 0.2, score="offensive.offensive"), {}, True),
    ("score <=", leaf("score", "<=", 0.9, score="needs_answer.needs_answer"), {}, True),
    ("score ==", leaf("score", "==", 0.91, score="sentiment.negative"), {}, True),
    ("score hate.hate", leaf("score", ">=", 0.5, score="hate.hate"), {"classification": document(hate=True)}, True),
    ("score emotion", leaf("score", ">", 0.5, score="emotion.anger"), {}, True),
    ("score topic", leaf("score", ">=", 0.7, score="topic"), {}, True),
    ("score, unknown label", leaf("score", ">=", 0, score="sentiment.furious"), {}, False),
    ("score <, null head", leaf("score", "<", 0.5, score="sentiment.negative"), UNSUPPORTED, False),
    ("score, no classification", leaf("score", "<", 1, score="topic"), NO_CLASSIFICATION, False),
    ("all, every one true", {"all": [leaf("topic", "eq", "pay"), leaf("needs_answer", "is", True)]}, {}, True),
    ("all, one false", {"all": [leaf("topic", "eq", "pay"), leaf("is_reply", "is", True)]}, {}, False),
    ("any, one true", {"any": [leaf("topic", "eq", "it"), leaf("channel", "eq", "hr")]}, {}, True),
    ("any, none true", {"any": [leaf("topic", "eq", "it"), leaf("channel", "eq", "news")]}, {}, False),
    ("not", {"not": leaf("topic", "eq", "it")}, {}, True),
    ("not over a missing value is true", {"not": leaf("topic", "eq", "pay")}, NO_CLASSIFICATION, True),
    ("nested", {"all": [{"any": [leaf("topic", "eq", "it"), {"not": leaf("flag", "has", "pii")}]},
                        leaf("text", "regex", "(?i)refund")]}, {}, True),
]  # fmt: skip


@pytest.mark.parametrize(
    ("condition", "overrides", "expected"),
    [pytest.param(c, o, e, id=name) for name, c, o, e in CONDITIONS],
)
def test_every_field_and_operator_decides_as_documented(
    condition: dict[str, Any], overrides: dict[str, Any], expected: bool
) -> None:
    assert matches(condition, facts(**overrides)) is expected


def test_every_string_field_is_covered_by_the_table() -> None:
    covered = {c["field"] for _, c, _, _ in CONDITIONS if "field" in c}
    assert covered >= {
        "source", "channel", "thread_kind", "thread_author", "author", "author_department", "topic", "sentiment",
        "emotion", "language", "text", "needs_answer", "is_reply", "flag", "score",
    }  # fmt: skip


def test_score_heads_are_the_classifiers_heads() -> None:
    from service.classification.classifier import HEAD_NAMES

    assert HEADS == HEAD_NAMES


# ---- first match, default, disabled, actions, reasons and traces ------------------------------------------


def test_first_matching_rule_wins() -> None:
    compiled = ruleset(
        rule(leaf("topic", "eq", "it"), id="it"),
        rule(leaf("topic", "eq", "pay"), {"priority": "high"}, id="pay"),
        rule(leaf("sentiment", "eq", "negative"), {"priority": "urgent"}, id="negative"),
    )
    decision = decide(compiled)
    assert (decision.rule_id, decision.rule_index, decision.priority) == ("pay", 1, "high")


def test_the_default_rule_catches_what_nothing_else_matches() -> None:
    compiled = ruleset(rule(leaf("topic", "eq", "it")), default={**DEFAULT, "then": {"priority": "low"}})
    decision = decide(compiled)
    assert (decision.rule_id, decision.rule_index, decision.priority) == ("default", 1, "low")
    assert decision.reason == 'Rule "Default" (#2) matched: no conditions; left unassigned (the rule assigns nobody)'


def test_disabled_rules_are_skipped_and_traced_as_disabled() -> None:
    compiled = ruleset(rule(leaf("topic", "eq", "pay"), enabled=False))
    decision = decide(compiled, trace=True)
    assert decision.rule_id == "default"
    assert [(t.rule_id, t.outcome, t.leaves) for t in decision.trace] == [
        ("r", "disabled", ()),
        ("default", "matched", ()),
    ]


def test_every_action_reaches_the_decision() -> None:
    then = {"priority": "urgent", "sla": "PT4H", "hold": True, "tags": ["pay", "late", "pay"], "no_reply": True}
    decision = decide(ruleset(rule(None, then, id="all-actions")))
    assert (decision.priority, decision.sla, decision.hold, decision.no_reply, decision.tags) == (
        "urgent", timedelta(hours=4), True, True, ("pay", "late"),
    )  # fmt: skip
    assert (decision.member, decision.team, decision.assigned_by) == (None, None, None)


def test_actions_default_to_normal_priority_and_nothing_else() -> None:
    decision = decide(ruleset())
    assert (decision.priority, decision.sla, decision.hold, decision.no_reply, decision.tags) == (
        "normal", None, False, False, (),
    )  # fmt: skip


def test_reason_names_the_rule_the_leaves_and_the_assignment() -> None:
    hr = {
        "id": "hr", "name": "HR questions",
        "when": {"all": [leaf("topic", "eq", "pay"), leaf("needs_answer", "is", True)]},
        "then": {"assign": {"to": "team", "team": "hr"}},
    }  # fmt: skip
    compiled = ruleset(rule(leaf("topic", "eq", "it"), id="a"), rule(leaf("topic", "eq", "it"), id="b"), hr)
    found = directory(last_assigned={"hr": "alice"})
    decision = decide(compiled, directory=found)
    assert decision.reason == (
        'Rule "HR questions" (#3) matched: topic is "pay" and needs_answer is true; '
        "assigned to team HR by round robin: Carol (Bob is away until 2026-11-30)"
    )


def test_reason_shows_the_values_behind_scores_and_negative_operators() -> None:
    condition = {"all": [
        leaf("score", ">=", 0.8, score="sentiment.negative"),
        leaf("channel", "ne", "news"),
        leaf("author_department", "not_in", ["hr", "it"]),
        {"not": leaf("flag", "has", "pii")},
        {"any": [leaf("topic", "eq", "it"), leaf("text", "regex", "refund")]},
    ]}  # fmt: skip
    decision = decide(ruleset(rule(condition)))
    assert decision.reason.startswith(
        'Rule "The rule" (#1) matched: score sentiment.negative 0.91 >= 0.8 and channel is "HR", not "news" and '
        'author_department is "Finance", none of "hr", "it" and not (has flag pii) and text matches /refund/;'
    )


def test_trace_records_every_rule_evaluated_with_each_leaf_and_the_value_seen() -> None:
    compiled = ruleset(
        rule({"all": [leaf("topic", "eq", "it"), leaf("text", "contains", "pay")]}, id="it"),
        rule({"any": [leaf("score", ">", 0.99, score="topic"), {"not": leaf("flag", "has", "offensive")}]}, id="ok"),
        rule(None, id="never-reached"),
    )
    decision = decide(compiled, trace=True)
    assert decision.rule_id == "ok"
    assert [(t.rule_id, t.outcome) for t in decision.trace] == [("it", "not_matched"), ("ok", "matched")]
    first, second = decision.trace
    assert first.why == 'topic is "it" is false ("pay")'
    assert [(leaf.path, leaf.condition, leaf.seen, leaf.result) for leaf in first.leaves] == [
        ("when.all[0]", 'topic is "it"', "pay", False),
        ("when.all[1]", 'text contains "pay"', "pay", True),  # evaluated even though the rule already failed
    ]
    assert [(leaf.path, leaf.seen, leaf.result) for leaf in second.leaves] == [
        ("when.any[0]", 0.72, False),
        ("when.any[1].not", False, False),
    ]


def test_trace_is_empty_unless_asked_for() -> None:
    assert decide(ruleset(rule(leaf("topic", "eq", "it")))).trace == ()


def test_trace_shows_a_missing_value_as_none() -> None:
    decision = decide(ruleset(rule(leaf("sentiment", "eq", "negative"))), facts(**UNSUPPORTED), trace=True)
    (leaf_trace,) = decision.trace[0].leaves
    assert (leaf_trace.seen, leaf_trace.result) == (None, False)
    assert decision.trace[0].why == 'sentiment is "negative" is false (no value)'


def test_version_comes_from_the_compiled_ruleset_unless_overridden() -> None:
    compiled = ruleset(version=7)
    assert decide(compiled).ruleset_version == 7
    assert decide(compiled, version=8).ruleset_version == 8


def test_explain_condition_reads_as_text() -> None:
    rules = RulesetIn.model_validate({"rules": [rule({"all": [
        leaf("topic", "in", ["pay", "pension"]),
        {"any": [leaf("text", "regex", "refund"), leaf("score", ">=", 0.8, score="sentiment.negative")]},
    ]}), DEFAULT]}).rules  # fmt: skip
    assert explain_condition(rules[0].when) == (
        'topic is one of "pay", "pension" and (text matches /refund/ or score sentiment.negative >= 0.8)'
    )
    assert explain_condition(None) == "always"


# ---- assignment -------------------------------------------------------------------------------------------


def assigned(assign: dict[str, Any], comment: Facts | None = None, **kwargs: Any) -> Decision:
    return decide(ruleset(rule(None, {"assign": assign})), comment, **kwargs)


def test_member_who_is_available_gets_the_item() -> None:
    decision = assigned({"to": "member", "member": "alice", "team": "hr"})
    assert (decision.member, decision.team, decision.assigned_by) == ("alice", "hr", "member")
    assert decision.reason.endswith("; assigned to Alice")


def test_away_member_goes_to_their_delegate() -> None:
    decision = assigned({"to": "member", "member": "bob"})
    assert (decision.member, decision.assigned_by) == ("carol", "delegate")
    assert decision.reason.endswith("assigned to Carol, the delegate of Bob (Bob is away until 2026-11-30)")


def test_member_back_from_leave_is_available_again() -> None:
    decision = assigned({"to": "member", "member": "bob"}, now=AWAY)
    assert decision.member == "bob"


def test_away_member_with_an_unavailable_delegate_falls_back_to_the_team() -> None:
    found = directory()
    members = {**found.members, "carol": member("carol", away_until=AWAY + timedelta(hours=12))}
    decision = assigned({"to": "member", "member": "bob", "team": "hr"}, directory=replace(found, members=members))
    assert (decision.member, decision.team, decision.assigned_by) == ("alice", "hr", "round_robin")
    assert decision.reason.endswith(
        "Bob is away until 2026-11-30 and their delegate is unavailable (Carol is away until 2026-11-30 12:00 UTC); "
        "fallback: assigned to team HR by round robin: Alice"
    )


def test_away_member_without_delegate_or_team_leaves_the_item_unassigned() -> None:
    decision = assigned({"to": "member", "member": "erin"})
    assert (decision.member, decision.team, decision.assigned_by) == (None, None, None)
    assert decision.reason.endswith(
        "Erin is away until 2026-11-30 and has no delegate; no fallback team: left unassigned"
    )


def test_inactive_member_falls_back_to_the_team_pool_when_nobody_there_is_available() -> None:
    decision = assigned({"to": "member", "member": "dave", "team": "gone"})
    assert (decision.member, decision.team) == (None, "gone")
    assert decision.reason.endswith(
        "Dave is inactive and has no delegate; fallback: nobody in team Gone is available "
        "(Dave is inactive; Erin is away until 2026-11-30): left in the team's pool"
    )


def test_member_missing_from_the_directory_is_said_so() -> None:
    decision = assigned({"to": "member", "member": "zoe"})
    assert decision.member is None
    assert 'member "zoe" is not in the directory' in decision.reason


def test_round_robin_picks_the_next_member_after_the_last_one() -> None:
    found = directory(last_assigned={"hr": "alice"})
    assert assigned({"to": "team", "team": "hr"}, directory=found).member == "carol"  # bob is away


def test_round_robin_wraps_around() -> None:
    found = directory(last_assigned={"hr": "carol"})
    decision = assigned({"to": "team", "team": "hr"}, directory=found)
    assert (decision.member, decision.team, decision.assigned_by) == ("alice", "hr", "round_robin")


def test_round_robin_starts_at_the_top_without_a_known_last_member() -> None:
    assert assigned({"to": "team", "team": "hr"}, directory=directory(last_assigned={"hr": "zoe"})).member == "alice"


def test_round_robin_skips_members_at_capacity() -> None:
    found = directory(load={"alice": 20})
    decision = assigned({"to": "team", "team": "hr"}, directory=found)
    assert decision.member == "carol"
    assert decision.reason.endswith("by round robin: Carol (Alice is at capacity; Bob is away until 2026-11-30)")


def test_round_robin_with_everyone_at_capacity_picks_the_least_loaded() -> None:
    found = directory(load={"alice": 25, "carol": 20}, last_assigned={"hr": "carol"})
    decision = assigned({"to": "team", "team": "hr"}, directory=found)
    assert (decision.member, decision.assigned_by) == ("carol", "round_robin")
    assert decision.reason.endswith(
        "by round robin: everyone available is at capacity, so the least loaded: Carol (20/20 open)"
    )


def test_least_loaded_picks_the_lowest_load_for_capacity() -> None:
    members = {**directory().members, "alice": member("alice", capacity=10)}
    found = directory(members=members, load={"alice": 3, "carol": 5})  # 0.3 vs 0.25
    decision = assigned({"to": "team", "team": "it"}, directory=found)
    assert (decision.member, decision.assigned_by) == ("carol", "least_loaded")
    assert decision.reason.endswith("assigned to team IT by least loaded: Carol (5/20 open)")


def test_least_loaded_breaks_ties_by_team_order() -> None:
    assert assigned({"to": "team", "team": "it"}, directory=directory(load={"alice": 2, "carol": 2})).member == "alice"


def test_least_loaded_skips_members_at_capacity() -> None:
    members = {**directory().members, "alice": member("alice", capacity=2)}
    found = directory(members=members, load={"alice": 2, "carol": 19})
    assert assigned({"to": "team", "team": "it"}, directory=found).member == "carol"


def test_when_everyone_is_at_capacity_the_least_loaded_still_gets_it() -> None:
    found = directory(load={"alice": 25, "carol": 21})
    decision = assigned({"to": "team", "team": "it"}, directory=found)
    assert decision.member == "carol"
    assert "everyone available is at capacity, so the least loaded: Carol (21/20 open)" in decision.reason


def test_rule_strategy_overrides_the_teams_own() -> None:
    found = directory(load={"alice": 10, "carol": 1}, last_assigned={"hr": "carol"})
    assert assigned({"to": "team", "team": "hr"}, directory=found).member == "alice"
    decision = assigned({"to": "team", "team": "hr", "strategy": "least_loaded"}, directory=found)
    assert (decision.member, decision.assigned_by) == ("carol", "least_loaded")


def test_team_with_nobody_available_keeps_the_item_in_its_pool() -> None:
    decision = assigned({"to": "team", "team": "gone"})
    assert (decision.member, decision.team, decision.assigned_by) == (None, "gone", None)
    assert "nobody in team Gone is available" in decision.reason


def test_thread_author_who_is_a_member_gets_the_item() -> None:
    decision = assigned({"to": "thread_author", "team": "hr"})
    assert (decision.member, decision.team, decision.assigned_by) == ("alice", "hr", "thread_author")
    assert decision.reason.endswith("assigned to the thread author Alice")


def test_thread_author_is_matched_on_the_comments_source_only() -> None:
    decision = assigned({"to": "thread_author"}, facts(source="yammer"))
    assert decision.member is None
    assert decision.reason.endswith(
        "the thread author (yammer:u-story) is not a member; no fallback team: left unassigned"
    )


def test_unknown_thread_author_falls_back_to_the_team() -> None:
    decision = assigned({"to": "thread_author", "team": "it"}, facts(thread_author="u-unknown"))
    assert (decision.member, decision.team, decision.assigned_by) == ("alice", "it", "least_loaded")
    assert "the thread author (intranet:u-unknown) is not a member; fallback: assigned to team IT" in decision.reason


def test_missing_thread_author_falls_back_to_the_team() -> None:
    decision = assigned({"to": "thread_author", "team": "hr"}, facts(thread_author=None))
    assert (decision.member, decision.team) == ("alice", "hr")
    assert "the thread has no known author; fallback" in decision.reason


def test_away_thread_author_goes_to_their_delegate() -> None:
    found = directory()
    members = {**found.members, "bob": replace(found.members["bob"], external_ids=frozenset({("intranet", "u-b")}))}
    decision = assigned({"to": "thread_author"}, facts(thread_author="u-b"), directory=replace(found, members=members))
    assert (decision.member, decision.assigned_by) == ("carol", "delegate")


def test_away_thread_author_without_delegate_and_team_is_unassigned() -> None:
    found = directory()
    members = {**found.members, "erin": replace(found.members["erin"], external_ids=frozenset({("intranet", "u-e")}))}
    decision = assigned({"to": "thread_author"}, facts(thread_author="u-e"), directory=replace(found, members=members))
    assert (decision.member, decision.team) == (None, None)
    assert decision.reason.endswith(
        "the thread author Erin is away until 2026-11-30 and has no delegate; no fallback team: left unassigned"
    )


def test_team_missing_from_the_directory_leaves_the_item_unassigned() -> None:
    decision = assigned({"to": "team", "team": "deleted"})
    assert (decision.member, decision.team) == (None, None)
    assert decision.reason.endswith('team "deleted" is not in the directory: left unassigned')


def test_naive_now_is_taken_as_utc() -> None:
    decision = assigned({"to": "member", "member": "bob"}, now=NOW.replace(tzinfo=None))
    assert decision.member == "carol"


# ---- never raises -----------------------------------------------------------------------------------------

MALFORMED: list[Any] = [
    None,
    {},
    {"topic": 5, "sentiment": "negative", "pii": None, "language": ["en"]},
    {"sentiment": {"label": None, "scores": None}, "topic": {"label": 3, "score": "high"}, "pii": "x"},
    {"sentiment": {"label": "negative", "scores": {"negative": float("nan")}}, "offensive": {"label": 1}},
    {"needs_answer": {"label": "needs_answer", "scores": {"needs_answer": True}}, "pii": [{}]},
]


@pytest.mark.parametrize("classification", MALFORMED)
def test_route_never_raises_on_missing_or_malformed_classifications(classification: Any) -> None:
    every_leaf = {"any": [
        *(leaf(f, "ne", "x") for f in ("source", "channel", "topic", "sentiment", "emotion", "language")),
        leaf("needs_answer", "is", False), leaf("flag", "lacks", "pii"), leaf("flag", "lacks", "offensive"),
        leaf("score", "<", 2, score="sentiment.negative"), leaf("score", "<", 2, score="topic"),
        leaf("score", "<", 2, score="needs_answer.needs_answer"), leaf("text", "regex", "x"),
    ]}  # fmt: skip
    comment = facts(classification=classification, channel=None)
    for traced in (False, True):
        decision = decide(ruleset(rule(every_leaf)), comment, trace=traced)
        assert decision.rule_id in {"r", "default"}


def test_route_never_raises_on_text_that_is_not_valid_unicode() -> None:
    condition = {"any": [leaf("text", "regex", "(?i)caf."), leaf("text", "contains", "x")]}
    for traced in (False, True):
        assert decide(ruleset(rule(condition)), facts(text="caf\ud800 \x00"), trace=traced).rule_id == "r"


def test_catastrophic_backtracking_pattern_runs_in_linear_time() -> None:
    compiled = ruleset(rule(leaf("text", "regex", "(a+)+$")))  # Python's re takes exponential time on this
    comment, found = facts(text="a" * 10_000 + "b"), directory()
    route(facts(text="warm up"), compiled, found, now=NOW)
    start = time.perf_counter()
    decision = route(comment, compiled, found, now=NOW)
    elapsed = time.perf_counter() - start
    assert decision.rule_id == "default"  # no match: the text ends in "b"
    assert elapsed < 0.010


# ---- the schema -------------------------------------------------------------------------------------------


def rejected(*rules: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as raised:
        RulesetIn.model_validate({"rules": list(rules)})
    return str(raised.value)


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        pytest.param(r"(\w+) \1", r"invalid escape sequence: \1", id="backreference"),
        pytest.param("refund(?!ed)", "invalid perl operator: (?!", id="lookahead"),
        pytest.param("(?<=pay)day", "invalid perl operator: (?<", id="lookbehind"),
        pytest.param("(unclosed", "missing ): (unclosed", id="unbalanced"),
        pytest.param("a{2000}", "invalid repetition size: {2000}", id="repetition"),
        pytest.param(r"\pL{1000}", "pattern too large - compile failed", id="too much memory"),
    ],
)
def test_regular_expressions_re2_cannot_run_are_rejected_with_the_rule_and_reason(pattern: str, reason: str) -> None:
    error = rejected(
        {"id": "hr-pay", "name": "HR", "when": {"all": [leaf("topic", "eq", "pay"), leaf("text", "regex", pattern)]},
         "then": {}},
        DEFAULT,
    )  # fmt: skip
    assert 'rule "hr-pay"' in error
    assert reason in error


def test_the_last_rule_must_be_the_default() -> None:
    message = "the last rule must be the default: enabled and without conditions"
    assert message in rejected(rule(leaf("topic", "eq", "pay")))
    assert message in rejected({**DEFAULT, "enabled": False})
    assert message in rejected(DEFAULT, rule(leaf("topic", "eq", "pay")))


def test_rule_ids_must_be_unique() -> None:
    error = rejected(rule(None), rule(None), DEFAULT)
    assert "rule ids must be unique: r appear more than once" in error


def test_conditions_may_nest_eight_deep_and_no_deeper() -> None:
    def nested(depth: int) -> dict[str, Any]:
        condition = leaf("topic", "eq", "pay")
        for _ in range(depth - 1):
            condition = {"all": [condition]}
        return condition

    assert matches(nested(MAX_DEPTH))
    assert f"conditions may nest at most {MAX_DEPTH} deep" in rejected(rule(nested(MAX_DEPTH + 1)), DEFAULT)


def test_absurdly_deep_conditions_are_rejected_without_crashing() -> None:
    condition: dict[str, Any] = leaf("topic", "eq", "pay")
    for _ in range(2000):
        condition = {"not": condition}
    rejected(rule(condition), DEFAULT)


def test_a_rule_has_at_most_two_hundred_leaves() -> None:
    assert matches({"any": [leaf("topic", "eq", "pay")] * MAX_LEAVES})
    assert f"at most {MAX_LEAVES} conditions per rule" in rejected(
        rule({"any": [leaf("topic", "eq", "pay")] * (MAX_LEAVES + 1)}), DEFAULT
    )


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param(leaf("topic", "eq", ["pay"]), id="eq with a list"),
        pytest.param(leaf("topic", "in", "pay"), id="in with a string"),
        pytest.param(leaf("topic", "in", []), id="in with nothing"),
        pytest.param(leaf("topic", "contains", "pay"), id="contains on a string field"),
        pytest.param(leaf("topic", "eq", ""), id="empty constant"),
        pytest.param(leaf("text", "eq", "pay"), id="eq on text"),
        pytest.param(leaf("needs_answer", "is", "yes"), id="is with a string"),
        pytest.param(leaf("flag", "has", "angry"), id="unknown flag"),
        pytest.param(leaf("score", ">=", 0.5), id="score without a path"),
        pytest.param(leaf("score", ">=", 0.5, score="sentiment"), id="score path without a label"),
        pytest.param(leaf("score", ">=", 0.5, score="mood.bad"), id="score of an unknown head"),
        pytest.param(leaf("score", "!=", 0.5, score="topic"), id="unknown comparison"),
        pytest.param(leaf("topic", "eq", "pay", score="topic"), id="score path on a string field"),
        pytest.param(leaf("colour", "eq", "red"), id="unknown field"),
        pytest.param({"all": []}, id="empty all"),
        pytest.param({"any": [leaf("topic", "eq", "pay")], "all": []}, id="two keys"),
        pytest.param({"field": "topic", "op": "eq", "value": "pay", "extra": 1}, id="unknown key"),
    ],
)
def test_malformed_conditions_are_rejected(condition: dict[str, Any]) -> None:
    rejected(rule(condition), DEFAULT)


@pytest.mark.parametrize(
    "then",
    [
        pytest.param({"sla": "PT0S"}, id="zero SLA"),
        pytest.param({"sla": "P31D"}, id="SLA over 30 days"),
        pytest.param({"tags": ["x"] * 21}, id="21 tags"),
        pytest.param({"tags": ["x" * 51]}, id="long tag"),
        pytest.param({"tags": ["  "]}, id="blank tag"),
        pytest.param({"priority": "whenever"}, id="unknown priority"),
        pytest.param({"assign": {"to": "team"}}, id="team without id"),
        pytest.param({"assign": {"to": "team", "team": "hr", "strategy": "random"}}, id="unknown strategy"),
        pytest.param({"assign": {"to": "member", "member": "Not An Id"}}, id="bad member id"),
        pytest.param({"assign": {"to": "nobody"}}, id="unknown target"),
        pytest.param({"notify": True}, id="unknown action"),
    ],
)
def test_malformed_actions_are_rejected(then: dict[str, Any]) -> None:
    rejected(rule(None, then), DEFAULT)


def test_sla_accepts_iso_durations_and_seconds() -> None:
    parsed = RulesetIn.model_validate({"rules": [rule(None, {"sla": 3600}), {**DEFAULT, "then": {"sla": "P30D"}}]})
    assert [r.then.sla for r in parsed.rules] == [timedelta(hours=1), timedelta(days=30)]


@pytest.mark.parametrize("rule_id", ["", "Upper", "-lead", "a" * 65, "dots.not.allowed"])
def test_rule_ids_are_slugs(rule_id: str) -> None:
    rejected({**DEFAULT, "id": rule_id})


def test_rulesets_hold_one_to_five_hundred_rules() -> None:
    rejected()
    many = [{**rule(None), "id": f"r{i}"} for i in range(500)]
    rejected(*many, DEFAULT)
    assert len(RulesetIn.model_validate({"rules": [*many[:499], DEFAULT]}).rules) == 500


def test_rulesets_round_trip_through_json() -> None:
    source = {"rules": [
        rule({"all": [{"not": leaf("flag", "has", "spam")}, leaf("score", ">=", 0.8, score="sentiment.negative"),
                      {"any": [leaf("text", "regex", "(?i)refund"), leaf("topic", "in", ["pay"])]}]},
             {"assign": {"to": "member", "member": "alice", "team": "hr"}, "sla": "PT4H", "tags": ["pay"]}),
        DEFAULT,
    ]}  # fmt: skip
    parsed = RulesetIn.model_validate(source)
    dumped = parsed.model_dump(mode="json")
    assert dumped["rules"][0]["when"]["all"][0] == {"not": {"field": "flag", "op": "has", "value": "spam"}}
    assert dumped["rules"][0]["then"]["sla"] == "PT4H"
    assert RulesetIn.model_validate(dumped) == parsed


def test_schema_describes_every_field_for_the_openapi_document() -> None:
    schema = RulesetIn.model_json_schema()
    for name, definition in schema["$defs"].items():
        for field_name, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{field_name} has no description"
    assert set(schema["$defs"]["AllOf"]["properties"]) == {"all"}
    assert set(schema["$defs"]["NotOf"]["properties"]) == {"not"}


def test_referenced_ids_lists_members_and_teams_the_rules_name() -> None:
    parsed = RulesetIn.model_validate({"rules": [
        {**rule(None, {"assign": {"to": "member", "member": "alice", "team": "hr"}}), "id": "a"},
        {**rule(None, {"assign": {"to": "team", "team": "it"}}), "id": "b", "enabled": False},
        {**rule(None, {"assign": {"to": "thread_author", "team": "comms"}}), "id": "c"},
        {**rule(None, {"assign": {"to": "thread_author"}}), "id": "d"},
        {**DEFAULT, "then": {"assign": {"to": "member", "member": "bob"}}},
    ]})  # fmt: skip
    assert referenced_ids(parsed) == ({"alice", "bob"}, {"hr", "it", "comms"})
