"""Routing speed: decisions per second for rulesets of 10 and 200 rules, trace off and on.

    .venv/bin/python -m benchmarks.routing [--seconds 0.5]

Each ruleset mixes the conditions admins write (sources, topics, scores, flags, substrings and RE2 regular
expressions, nested all/any/not) and the three kinds of assignment. Comments are built so that the first
matching rule falls at a chosen position: the first rule, the middle, the last rule before the default, and
the worst case where every rule is evaluated and only the default matches. Every cell runs for a fixed time
(``--seconds``), so the whole run is bounded (about 20 s at the default).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from service.routing import (
    CompiledRuleset,
    Decision,
    Directory,
    Facts,
    MemberInfo,
    RulesetIn,
    TeamInfo,
    compile_ruleset,
    route,
)

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
MEMBERS = 50
TEAMS = 10
TEXT = (
    "Hello, I have been waiting three weeks for an answer about the new expenses process and nobody replies. "
    "Could someone please tell me where to send the receipts? {token} Thanks in advance, from the night shift."
)


def token(i: int) -> str:
    """A word only rule i looks for (fixed width, so no token contains another)."""
    return f"kw{i:04d}"


def condition(i: int) -> dict[str, Any]:
    """Rule i's condition: one of five realistic shapes; each holds only for comments about topic-i / token i."""
    kind = i % 5
    topic = {"field": "topic", "op": "eq", "value": f"topic-{i}"}
    if kind == 0:
        return {"all": [
            {"field": "source", "op": "in", "value": ["intranet", "yammer"]},
            {"field": "needs_answer", "op": "is", "value": True},
            topic,
        ]}  # fmt: skip
    if kind == 1:
        return {"all": [
            {"not": {"field": "flag", "op": "has", "value": "spam"}},
            {"field": "score", "score": "sentiment.negative", "op": ">=", "value": 0.3},
            {"any": [{"field": "text", "op": "regex", "value": rf"(?i)\b{token(i)}\b"}, topic]},
        ]}  # fmt: skip
    if kind == 2:
        return {"all": [
            {"field": "channel", "op": "ne", "value": "news"},
            {"field": "flag", "op": "lacks", "value": "offensive"},
            {"field": "text", "op": "contains", "value": token(i)},
        ]}  # fmt: skip
    if kind == 3:
        return {"any": [
            {"all": [{"field": "score", "score": "offensive.offensive", "op": ">=", "value": 0.9},
                     {"field": "flag", "op": "has", "value": "hate"}]},
            {"all": [topic, {"field": "author_department", "op": "in", "value": ["finance", "hr", "it"]}]},
        ]}  # fmt: skip
    return {"all": [
        {"field": "language", "op": "eq", "value": "en"},
        {"not": {"field": "channel", "op": "eq", "value": "hr"}},
        {"field": "text", "op": "regex", "value": rf"(?i)(receipts?|expenses?)\b.*\b{token(i)}\b"},
    ]}  # fmt: skip


def actions(i: int) -> dict[str, Any]:
    """Rule i's actions: member, team (both strategies) and thread-author assignments, with SLAs and tags."""
    assign: list[dict[str, Any]] = [
        {"to": "team", "team": f"team-{i % TEAMS}"},
        {"to": "member", "member": f"m{i % MEMBERS}", "team": f"team-{i % TEAMS}"},
        {"to": "thread_author", "team": f"team-{i % TEAMS}"},
        {"to": "team", "team": f"team-{i % TEAMS}", "strategy": "least_loaded"},
    ]
    return {"assign": assign[i % 4], "priority": ("high", "normal")[i % 2], "sla": "PT8H", "tags": [f"t{i % 7}"]}


def ruleset(size: int) -> CompiledRuleset:
    """`size` rules: size - 1 conditional ones and the default."""
    rules: list[dict[str, Any]] = [
        {"id": f"r{i}", "name": f"Rule {i}", "when": condition(i), "then": actions(i)} for i in range(size - 1)
    ]
    rules.append({"id": "default", "name": "Default", "then": {"assign": {"to": "team", "team": "team-0"}}})
    return compile_ruleset(RulesetIn.model_validate({"rules": rules}), version=1)


def directory() -> Directory:
    """50 members (some away, some with delegates) in 10 teams, with some load."""
    members = {
        f"m{i}": MemberInfo(
            id=f"m{i}",
            name=f"Member {i}",
            away_until=NOW + timedelta(days=3) if i % 7 == 0 else None,
            delegate=f"m{(i + 1) % MEMBERS}" if i % 14 == 0 else None,
            external_ids=frozenset({("intranet", f"u{i}")}),
        )
        for i in range(MEMBERS)
    }
    teams = {
        f"team-{t}": TeamInfo(
            id=f"team-{t}", name=f"Team {t}", members=tuple(f"m{(t * 5 + k) % MEMBERS}" for k in range(6))
        )
        for t in range(TEAMS)
    }
    return Directory(members=members, teams=teams, load={f"m{i}": i % 25 for i in range(MEMBERS)})


def document(topic: str) -> dict[str, Any]:
    """A classification document like service.classification.document() produces."""
    return {
        "sentiment": {"label": "negative", "scores": {"negative": 0.55, "neutral": 0.3, "positive": 0.15}},
        "offensive": {"label": "not-offensive", "scores": {"offensive": 0.04, "not-offensive": 0.96}},
        "hate": {"label": "not-hate", "scores": {"hate": 0.01, "not-hate": 0.99}},
        "emotion": {"label": "anger", "scores": {"anger": 0.5, "joy": 0.1, "optimism": 0.1, "sadness": 0.3}},
        "needs_answer": {"label": "needs_answer", "scores": {"needs_answer": 0.8, "no_answer": 0.2}},
        "topic": {"label": topic, "score": 0.61, "scores": {topic: 0.61}, "nearest": []},
        "language": {"code": "en", "confidence": 0.98, "supported": True},
        "pii": [],
        "model_version": "bench",
    }


def comment(target: int | None) -> Facts:
    """A comment whose first matching rule is `target` (None: only the default matches)."""
    return Facts(
        source="intranet",
        text=TEXT.format(token=token(target) if target is not None else "kw-none"),
        channel="comments",
        thread_kind="story",
        thread_author=f"u{(target or 0) % MEMBERS}",
        author="u99",
        author_department="Finance",
        classification=document(f"topic-{target}" if target is not None else "topic-none"),
    )


def rate(call: Callable[[], Decision], seconds: float) -> tuple[float, float]:
    """Decisions per second of wall-clock time (median of 5 slices of the budget), and CPU µs per decision."""
    call()
    rates, cpu = [], []
    for _ in range(5):
        count, start, cpu_start = 0, time.perf_counter(), time.process_time()
        deadline = start + seconds / 5
        while (now := time.perf_counter()) < deadline or count == 0:
            for _ in range(20):
                call()
            count += 20
        rates.append(count / (now - start))
        cpu.append((time.process_time() - cpu_start) / count * 1e6)
    return statistics.median(rates), statistics.median(cpu)


def main() -> None:
    """Run and print the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=0.5, help="time per cell (16 cells)")
    args = parser.parse_args()

    found = directory()
    print(f"Switchboard routing benchmark; {os.cpu_count()} cores, Python {platform.python_version()}")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average {load} (other work on this machine lowers decisions/s; CPU µs is less affected)")
    print(f"{MEMBERS} members in {TEAMS} teams; about {args.seconds:g} s per cell; trace on records every leaf\n")
    header = (
        f"{'ruleset':<10} {'first match':<24} {'rules tried':>11} "
        f"{'trace off /s':>13} {'CPU µs':>8} {'trace on /s':>12} {'CPU µs':>8}"
    )
    print(header)
    print("-" * len(header))
    for size in (10, 200):
        started = time.perf_counter()
        compiled = ruleset(size)
        compile_ms = (time.perf_counter() - started) * 1000
        positions: list[tuple[str, int | None]] = [
            ("rule 1", 0),
            (f"rule {size // 2} (middle)", size // 2 - 1),
            (f"rule {size - 1} (last but default)", size - 2),
            ("default only (worst)", None),
        ]
        for label, target in positions:
            facts = comment(target)
            decision = route(facts, compiled, found, now=NOW, trace=True)
            expected = "default" if target is None else f"r{target}"
            assert decision.rule_id == expected, (decision.rule_id, expected, decision.reason)
            off, off_us = rate(partial(route, facts, compiled, found, now=NOW), args.seconds)
            on, on_us = rate(partial(route, facts, compiled, found, now=NOW, trace=True), args.seconds)
            print(
                f"{f'{size} rules':<10} {label:<24} {len(decision.trace):>11} "
                f"{off:>13,.0f} {off_us:>8.1f} {on:>12,.0f} {on_us:>8.1f}"
            )
        print(f"{'':<10} (validating and compiling {size} rules: {compile_ms:.1f} ms)")


if __name__ == "__main__":
    main()
