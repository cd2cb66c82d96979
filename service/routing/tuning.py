"""Admins tune routing with evidence: explain one comment, rules learned from re-routing, classifier feedback.

- `explain`: classify a comment (text and metadata) and route it through the live or a draft ruleset with the
  trace of every rule evaluated and why it did or did not match.
- `suggestions`: when responders keep reassigning items of one kind (a topic, a channel, a story author) to the
  same owner, propose the rule that would have sent them there, with the evidence and a simulation of adding it.
- `feedback`: per flag and per topic, how often responders agreed with the classifier, corrected it or overrode
  it (a held item approved, a needs-answer item closed as needing no reply), week by week.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.classification.classifier import ClassificationPublic, Classifier, document, thresholds_for
from service.database import end_transaction
from service.errors import InvalidPayload
from service.models import AuditEvent, Comment, CommentAnalysis, Label, QueueItem, Thread
from service.routing import Facts, RulesetIn, compile_ruleset, route, rules, simulation
from service.routing.dispatch import load_directory
from service.settings import Settings

Feature = Literal["topic", "channel", "thread_author"]
FEATURES: tuple[Feature, ...] = ("topic", "channel", "thread_author")
FLAGS = ("offensive", "hate", "needs_answer")
POSITIVE = {"offensive": "offensive", "hate": "hate", "needs_answer": "needs_answer"}


# --- explain -----------------------------------------------------------------------------------------------


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


class ExplainOut(BaseModel):
    """The classification, the decision and the trace of every rule evaluated."""

    classification: ClassificationPublic
    decision: DecisionPublic
    trace: list[RuleTracePublic]


async def explain(
    session: AsyncSession, classifier: Classifier, *, data: ExplainIn, settings: Settings, now: datetime
) -> ExplainOut:
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
    return ExplainOut(
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


# --- rules learned from re-routing -------------------------------------------------------------------------


class Evidence(BaseModel):
    """Why a rule is suggested."""

    reassignments: int = Field(description="Items of this kind reassigned to the suggested owner.")
    share: float = Field(description="Their share of all reassignments of items of this kind.")
    responders: int = Field(description="How many different people reassigned them.")
    first_at: datetime
    last_at: datetime
    moved_from: dict[str, int] = Field(description="The owners they were taken from.")
    precision: float = Field(description="Of all items of this kind in the period, the share now with that owner.")
    items_of_kind: int


class Suggestion(BaseModel):
    """A proposed rule with its evidence and what adding it (first) to the live rules would change."""

    rule: dict[str, Any]
    evidence: Evidence
    simulation: dict[str, Any]


class SuggestionsOut(BaseModel):
    """Suggested rules, strongest evidence first."""

    since: datetime
    suggestions: list[Suggestion]


@dataclass(slots=True)
class _Group:
    count: int = 0
    actors: set[str] = field(default_factory=set)
    first: datetime | None = None
    last: datetime | None = None
    moved_from: Counter[str] = field(default_factory=Counter)


def _owner(view: Mapping[str, Any] | None) -> str:
    view = view or {}
    if view.get("member_id"):
        return f"member:{view['member_id']}"
    if view.get("team_id"):
        return f"team:{view['team_id']}"
    return "unassigned"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:20] or "x"


async def _item_features(session: AsyncSession, item_ids: Sequence[uuid.UUID] | None, since: datetime) -> list[Any]:
    stmt = (
        sa.select(
            col(QueueItem.id),
            col(QueueItem.topic),
            col(QueueItem.channel),
            col(Thread.author_external_id),
            col(QueueItem.member_id),
            col(QueueItem.team_id),
        )
        .outerjoin(Thread, col(Thread.id) == col(QueueItem.thread_id))
        .where(col(QueueItem.created_at) >= since)
    )
    if item_ids is not None:
        stmt = stmt.where(col(QueueItem.id).in_(item_ids))
    return list((await session.execute(stmt)).all())


async def suggestions(
    session: AsyncSession, *, settings: Settings, now: datetime, days: int = 30, min_reassignments: int = 5,
    min_share: float = 0.6,
) -> SuggestionsOut:  # fmt: skip
    """Rules that would have sent items where responders keep moving them."""
    since = now - timedelta(days=days)
    events = (
        (
            await session.execute(
                sa.select(AuditEvent)
                .where(col(AuditEvent.action) == "queue_item.reassigned", col(AuditEvent.at) >= since)
                .order_by(col(AuditEvent.id))
            )
        )
        .scalars()
        .all()
    )
    item_ids = [uuid.UUID(e.target_id) for e in events]
    features = {row[0]: row for row in await _item_features(session, item_ids, since - timedelta(days=days))}
    groups: dict[tuple[Feature, str, str], _Group] = defaultdict(_Group)
    per_kind: Counter[tuple[Feature, str]] = Counter()
    for event in events:
        row = features.get(uuid.UUID(event.target_id))
        if row is None:
            continue
        to_owner = _owner(event.after)
        if to_owner == "unassigned":
            continue
        for feature, value in zip(FEATURES, (row[1], row[2], row[3]), strict=True):
            if not value or (feature == "topic" and value == "other"):
                continue
            per_kind[(feature, value)] += 1
            group = groups[(feature, value, to_owner)]
            group.count += 1
            group.actors.add(event.actor)
            group.first = group.first or event.at
            group.last = event.at
            group.moved_from[_owner(event.before)] += 1
    everything = await _item_features(session, None, since)
    found: list[Suggestion] = []
    for (feature, value, to_owner), group in groups.items():
        share = group.count / per_kind[(feature, value)]
        if group.count < min_reassignments or share < min_share:
            continue
        index = FEATURES.index(feature) + 1
        kind = [r for r in everything if r[index] == value]
        now_there = sum(1 for r in kind if _owner({"member_id": r[4], "team_id": r[5]}) == to_owner)
        kind_name, target = to_owner.split(":", 1)
        rule = {
            "id": f"suggested-{_slug(feature)}-{_slug(value)}-{_slug(target)}"[:64],
            "name": f"Suggested: {feature.replace('_', ' ')} {value} to {kind_name} {target}",
            "description": f"Learned from {group.count} reassignments by {len(group.actors)} people.",
            "when": {"field": feature, "op": "eq", "value": value},
            "then": {"assign": {"to": kind_name, kind_name: target}},
        }
        found.append(Suggestion(
            rule=rule,
            evidence=Evidence(
                reassignments=group.count, share=round(share, 3), responders=len(group.actors),
                first_at=group.first or now, last_at=group.last or now, moved_from=dict(group.moved_from),
                precision=round(now_there / len(kind), 3) if kind else 0.0, items_of_kind=len(kind),
            ),
            simulation=await _simulate_adding(session, rule, settings=settings, now=now),
        ))  # fmt: skip
    found.sort(key=lambda s: (-s.evidence.reassignments, -s.evidence.share))
    return SuggestionsOut(since=since, suggestions=found)


async def _simulate_adding(
    session: AsyncSession, rule: dict[str, Any], *, settings: Settings, now: datetime
) -> dict[str, Any]:
    """What putting the rule first and re-routing the last 30 days would change (a bounded, unstored simulation:
    the same plans reroute would apply, with loads and round robin evolving item by item)."""
    live = await rules.current(session)
    draft = RulesetIn.model_validate({"rules": [rule, *[r.model_dump(mode="json") for r in live.rules]]})
    window = simulation.resolve_window(simulation.Window(), now=now)
    ids = await simulation.window_ids(session, window, limit=settings.simulation_sync_max_comments)
    result = await simulation.difference(session, ids, compile_ruleset(draft, version=live.version + 1), now=now)
    keys = ("comments", "rerouted", "moved", "kept", "moves", "load", "sla_hours")
    return {key: result[key] for key in keys} | {"window": window}


# --- classifier feedback -----------------------------------------------------------------------------------


class FeedbackRow(BaseModel):
    """One flag or topic in one week: what the classifier said and what responders did about it."""

    kind: Literal["flag", "topic"]
    name: str
    week: str = Field(description="ISO week, e.g. 2026-W47.")
    predicted: int = Field(description="Comments the classifier gave this flag or topic.")
    agreed: int = Field(description="... a responder's label confirmed.")
    corrected: int = Field(description="... a responder's label contradicted.")
    overridden: int = Field(description="... a responder's action contradicted (approved a held item, closed a "
                            "needs-answer item as needing no reply).")  # fmt: skip
    missed: int = Field(description="Comments without it that a responder labelled with it.")
    precision: float | None = Field(description="agreed / (agreed + corrected + overridden), when any were reviewed.")


class FeedbackOut(BaseModel):
    """Classifier feedback from responders, by week; `thresholds` are the current defaults."""

    since: datetime
    thresholds: dict[str, float]
    rows: list[FeedbackRow]


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def _label(doc: Mapping[str, Any] | None, head: str) -> str | None:
    value = (doc or {}).get(head)
    return value.get("label") if isinstance(value, Mapping) else None


async def feedback(session: AsyncSession, *, settings: Settings, now: datetime, days: int = 90) -> FeedbackOut:
    """How often responders agreed with, corrected or overrode each flag and topic, week by week."""
    since = now - timedelta(days=days)
    rows = (
        await session.execute(
            sa.select(col(Comment.id), col(Comment.received_at), col(CommentAnalysis.classification))
            .join(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
            .where(col(Comment.received_at) >= since, col(Comment.deleted_at).is_(None))
        )
    ).all()
    latest = sa.select(sa.func.max(col(Label.id))).group_by(col(Label.comment_id)).scalar_subquery()
    labels = {
        label.comment_id: label
        for label in (await session.execute(sa.select(Label).where(col(Label.id).in_(latest)))).scalars()
    }
    closed_no_reply = set(
        (
            await session.execute(
                sa.select(col(QueueItem.comment_id)).where(
                    col(QueueItem.resolution) == "no_reply_needed", col(QueueItem.resolved_by) != "routing"
                )
            )
        ).scalars()
    )
    approved_items = {
        uuid.UUID(i)
        for i in (
            await session.execute(
                sa.select(col(AuditEvent.target_id)).where(col(AuditEvent.action) == "queue_item.approved")
            )
        ).scalars()
    }
    approved = set(
        (
            await session.execute(sa.select(col(QueueItem.comment_id)).where(col(QueueItem.id).in_(approved_items)))
        ).scalars()
    ) if approved_items else set()  # fmt: skip
    counts: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    for comment_id, received_at, doc in rows:
        week = _week(received_at)
        label = labels.get(comment_id)
        for flag in FLAGS:
            said = _label(doc, flag)
            if said is None:
                continue
            positive = said == POSITIVE[flag]
            truth = (label.flags or {}).get(flag) if label is not None else None
            bucket = counts[("flag", flag, week)]
            if positive:
                bucket["predicted"] += 1
                if truth is True:
                    bucket["agreed"] += 1
                elif truth is False:
                    bucket["corrected"] += 1
                elif (flag == "needs_answer" and comment_id in closed_no_reply) or (
                    flag in ("offensive", "hate") and comment_id in approved
                ):
                    bucket["overridden"] += 1
            elif truth is True:
                bucket["missed"] += 1
        topic = _label(doc, "topic")
        if topic is not None:
            bucket = counts[("topic", topic, week)]
            bucket["predicted"] += 1
            if label is not None and label.topic is not None:
                bucket["agreed" if label.topic == topic else "corrected"] += 1
                if label.topic != topic:
                    counts[("topic", label.topic, week)]["missed"] += 1
    out = []
    for (kind, name, week), c in sorted(counts.items()):
        reviewed = c["agreed"] + c["corrected"] + c["overridden"]
        out.append(FeedbackRow(
            kind="flag" if kind == "flag" else "topic", name=name, week=week, predicted=c["predicted"],
            agreed=c["agreed"], corrected=c["corrected"], overridden=c["overridden"], missed=c["missed"],
            precision=round(c["agreed"] / reviewed, 3) if reviewed else None,
        ))  # fmt: skip
    return FeedbackOut(since=since, thresholds=thresholds_for(settings, None), rows=out)
