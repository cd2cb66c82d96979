"""Rules learned from re-routing: when responders keep reassigning items of one kind (a topic, a channel, a story
author) to the same owner, propose the rule that would have sent them there, with the evidence and a simulation
of adding it."""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit.tables import AuditEvent
from service.models import QueueItem, Thread
from service.routing import RulesetIn, compile_ruleset, replay, rules
from service.settings import Settings

Feature = Literal["topic", "channel", "thread_author"]


FEATURES: tuple[Feature, ...] = ("topic", "channel", "thread_author")


class EvidencePublic(BaseModel):
    """Why a rule is suggested."""

    reassignments: int = Field(description="Items of this kind reassigned to the suggested owner.")
    share: float = Field(description="Their share of all reassignments of items of this kind.")
    responders: int = Field(description="How many different people reassigned them.")
    first_at: datetime
    last_at: datetime
    moved_from: dict[str, int] = Field(description="The owners they were taken from.")
    precision: float = Field(description="Of all items of this kind in the period, the share now with that owner.")
    items_of_kind: int


class SuggestionPublic(BaseModel):
    """A proposed rule with its evidence and what adding it (first) to the live rules would change."""

    rule: dict[str, Any]
    evidence: EvidencePublic
    simulation: dict[str, Any]


class SuggestionsPublic(BaseModel):
    """Suggested rules, strongest evidence first."""

    since: datetime
    suggestions: list[SuggestionPublic]


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
) -> SuggestionsPublic:  # fmt: skip
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
    found: list[SuggestionPublic] = []
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
        found.append(SuggestionPublic(
            rule=rule,
            evidence=EvidencePublic(
                reassignments=group.count, share=round(share, 3), responders=len(group.actors),
                first_at=group.first or now, last_at=group.last or now, moved_from=dict(group.moved_from),
                precision=round(now_there / len(kind), 3) if kind else 0.0, items_of_kind=len(kind),
            ),
            simulation=await _simulate_adding(session, rule, settings=settings, now=now),
        ))  # fmt: skip
    found.sort(key=lambda s: (-s.evidence.reassignments, -s.evidence.share))
    return SuggestionsPublic(since=since, suggestions=found)


async def _simulate_adding(
    session: AsyncSession, rule: dict[str, Any], *, settings: Settings, now: datetime
) -> dict[str, Any]:
    """What putting the rule first and re-routing the last 30 days would change (a bounded, unstored simulation:
    the same plans reroute would apply, with loads and round robin evolving item by item)."""
    live = await rules.current(session)
    draft = RulesetIn.model_validate({"rules": [rule, *[r.model_dump(mode="json") for r in live.rules]]})
    window = replay.resolve_window(replay.WindowIn(), now=now)
    ids = await replay.window_ids(session, window, limit=settings.simulation_sync_max_comments)
    result = await replay.difference(session, ids, compile_ruleset(draft, version=live.version + 1), now=now)
    keys = ("comments", "rerouted", "moved", "kept", "moves", "load", "sla_hours")
    return {key: result[key] for key in keys} | {"window": window}
