"""Rules compiled for speed: condition trees with constants folded and regular expressions compiled once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from service.routing.facts import LeafTrace, NormalisedFacts
from service.routing.schema import (
    Actions,
    AllOf,
    AnyOf,
    BoolMatch,
    Condition,
    FlagMatch,
    NotOf,
    RulesetIn,
    ScoreMatch,
    StringMatch,
    TextMatch,
    compile_regex,
)

# ---- compiled conditions ----------------------------------------------------------------------------------


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _excerpt(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _number(value: float) -> str:
    return f"{value:g}"


Seen: TypeAlias = str | float | bool | None


class _Node:
    __slots__ = ("description", "path")  # the condition in words and its place in the rule, set when compiling

    description: str
    path: str

    def test(self, ctx: NormalisedFacts) -> bool:
        raise NotImplementedError


class _Leaf(_Node):
    __slots__ = ()

    def seen(self, ctx: NormalisedFacts) -> Seen:
        raise NotImplementedError

    def evaluate(self, ctx: NormalisedFacts) -> tuple[bool, Seen]:
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

    def test(self, ctx: NormalisedFacts) -> bool:
        value = ctx.fold(self.field)
        if value is None:
            return False
        return (value in self.wanted) == (self.op in ("eq", "in"))

    def seen(self, ctx: NormalisedFacts) -> Seen:
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

    def test(self, ctx: NormalisedFacts) -> bool:
        if self.regex is None:
            folded = ctx.text_folded()
            return folded is not None and self.wanted in folded
        encoded = ctx.text_bytes()
        return encoded is not None and self.regex.search(encoded) is not None

    def seen(self, ctx: NormalisedFacts) -> Seen:
        """The matched text (None: no match)."""
        if self.regex is None:
            folded = ctx.text_folded()
            at = -1 if folded is None else folded.find(self.wanted)
            return None if folded is None or at < 0 else _excerpt(folded[at : at + len(self.wanted)])
        encoded = ctx.text_bytes()
        found = None if encoded is None else self.regex.search(encoded)
        return None if found is None else _excerpt(found.group(0).decode("utf-8", "replace"))

    def evaluate(self, ctx: NormalisedFacts) -> tuple[bool, Seen]:
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

    def seen(self, ctx: NormalisedFacts) -> Seen:
        return ctx.needs_answer if self.field == "needs_answer" else ctx.is_reply

    def test(self, ctx: NormalisedFacts) -> bool:
        seen = ctx.needs_answer if self.field == "needs_answer" else ctx.is_reply
        return seen is not None and seen == self.value


class _FlagLeaf(_Leaf):
    __slots__ = ("has", "name")

    def __init__(self, leaf: FlagMatch) -> None:
        self.name = leaf.value
        self.has = leaf.op == "has"
        self.description = f"{'has' if self.has else 'lacks'} flag {self.name}"

    def seen(self, ctx: NormalisedFacts) -> Seen:
        """True: set; False: known to be unset; None: unknown."""
        if self.name in ctx.flags:
            return True
        return False if self.name in ctx.absent_flags else None

    def test(self, ctx: NormalisedFacts) -> bool:
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

    def seen(self, ctx: NormalisedFacts) -> Seen:
        return ctx.score(self.score_path)

    def test(self, ctx: NormalisedFacts) -> bool:
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

    def test(self, ctx: NormalisedFacts) -> bool:
        for child in self.children:  # noqa: SIM110  # a loop beats all(generator) on routing's hot path
            if not child.test(ctx):
                return False
        return True


class _Any(_Node):
    __slots__ = ("children",)

    def __init__(self, children: tuple[_Node, ...]) -> None:
        self.children = children
        self.description = " or ".join(_grouped(c) for c in children)

    def test(self, ctx: NormalisedFacts) -> bool:
        for child in self.children:  # noqa: SIM110  # a loop beats any(generator) on routing's hot path
            if child.test(ctx):
                return True
        return False


class _Not(_Node):
    __slots__ = ("child",)

    def __init__(self, child: _Node) -> None:
        self.child = child
        self.description = f"not ({child.description})"

    def test(self, ctx: NormalisedFacts) -> bool:
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


def _walk(node: _Node, ctx: NormalisedFacts, leaves: list[LeafTrace] | None) -> tuple[bool, str]:
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
