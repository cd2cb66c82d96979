"""Explain one comment to an admin: classify its text and route it through the live or a draft ruleset, with the
trace of every rule evaluated and why it did or did not match. Writes nothing."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from service.classification.classifier import ClassificationPublic, Classifier, document, thresholds_for
from service.database import end_transaction
from service.errors import InvalidPayload
from service.routing import Facts, RulesetIn, compile_ruleset, route, rules
from service.routing.context import load_directory
from service.settings import Settings


class ExplainIn(BaseModel):
    """Body of POST /v1/admin/rules/explain: a comment as a platform would send it."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=20_000)
    source: str | None = Field(None, description="A source's slug (its thresholds apply).")
    channel: str | None = None
    thread_kind: str | None = None
    thread_author: str | None = Field(None, description="The story author's user id on the source.")
    author: str | None = Field(None, description="The comment author's user id on the source.")
    author_department: str | None = None
    is_reply: bool = Field(False, strict=True)
    rules: RulesetIn | None = Field(None, description="A draft ruleset to use instead of the live one.")


class LeafTracePublic(BaseModel):
    """One condition as evaluated."""

    path: str
    condition: str
    seen: str | float | bool | None
    result: bool


class RuleTracePublic(BaseModel):
    """One rule as routing met it."""

    rule_id: str
    rule_name: str
    rule_index: int
    outcome: Literal["matched", "not_matched", "disabled"]
    why: str
    leaves: list[LeafTracePublic]


class DecisionPublic(BaseModel):
    """Where the comment would go."""

    rule_id: str
    rule_name: str
    ruleset_version: int
    member: str | None
    team: str | None
    priority: str
    sla_seconds: int | None
    hold: bool
    no_reply: bool
    tags: list[str]
    reason: str
    assigned_by: str | None


class ExplainPublic(BaseModel):
    """The classification, the decision and the trace of every rule evaluated."""

    classification: ClassificationPublic
    decision: DecisionPublic
    trace: list[RuleTracePublic]


async def explain(
    session: AsyncSession, classifier: Classifier, *, data: ExplainIn, settings: Settings, now: datetime
) -> ExplainPublic:
    """Dry-run one comment: classify, route with the trace. Writes nothing."""
    source_thresholds = None
    if data.source is not None:
        from service import sources

        source_thresholds = (await sources.get_by_slug(session, data.source)).thresholds
    if len(data.text) > settings.classify_max_chars:
        raise InvalidPayload(f"The text may have at most {settings.classify_max_chars} characters.")
    if data.rules is not None:
        await rules.check_references(session, data.rules)
        ruleset = compile_ruleset(data.rules, version=(await rules.current(session)).version + 1)
    else:
        ruleset = await rules.compiled(session)
    directory = await load_directory(session)
    taxonomy = await classifier.taxonomy(session)
    await end_transaction(session)  # the model's work below needs no database: hold no connection or lock meanwhile
    (analysis,) = await classifier.classify([data.text], taxonomy)
    doc = document(analysis, thresholds_for(settings, source_thresholds))
    facts = Facts(
        source=data.source or "", text=data.text, channel=data.channel, thread_kind=data.thread_kind,
        thread_author=data.thread_author, author=data.author, author_department=data.author_department,
        is_reply=data.is_reply, classification=doc,
    )  # fmt: skip
    decision = route(facts, ruleset, directory, now=now, trace=True)
    return ExplainPublic(
        classification=ClassificationPublic.model_validate(doc),
        decision=DecisionPublic(
            rule_id=decision.rule_id,
            rule_name=decision.rule_name,
            ruleset_version=decision.ruleset_version,
            member=decision.member,
            team=decision.team,
            priority=decision.priority,
            sla_seconds=int(decision.sla.total_seconds()) if decision.sla is not None else None,
            hold=decision.hold,
            no_reply=decision.no_reply,
            tags=list(decision.tags),
            reason=decision.reason,
            assigned_by=decision.assigned_by,
        ),
        trace=[RuleTracePublic.model_validate(asdict(t)) for t in decision.trace],
    )
