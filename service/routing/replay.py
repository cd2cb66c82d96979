"""Replaying stored comments through a ruleset: the window (last N, or a time range; default the last 30 days),
the plans re-routing would make for its items (`replan`, with `service.routing.placement`'s rules), and the
difference they make (`Difference`): items re-routed and moved between owners, load per owner and team, SLA hours
committed, held and no-reply items, a sample of moved comments with both reasons.

A simulation reports the difference without applying the plans; a reroute applies exactly the same plans.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pii import redact
from service.errors import InvalidPayload
from service.inputs import UtcDatetime
from service.models import Comment, CommentAnalysis, QueueItem
from service.routing import CompiledRuleset, context
from service.routing.context import Context, load_directory
from service.routing.placement import Placer, Plan

SAMPLE_SIZE = 20


DEFAULT_DAYS = 30


MAX_DAYS = 366


CHUNK = 2000


class WindowIn(BaseModel):
    """Which stored comments to replay: the last N, or those received in a time range (default: 30 days)."""

    model_config = ConfigDict(extra="forbid")

    last: int | None = Field(None, ge=1, strict=True, description="The most recent N processed comments.")
    since: UtcDatetime | None = Field(None, description="Comments received from this time (default: 30 days ago).")
    until: UtcDatetime | None = Field(None, description="... up to this time (default: now).")

    @model_validator(mode="after")
    def _one_kind(self) -> WindowIn:
        if self.last is not None and (self.since is not None or self.until is not None):
            raise ValueError("give either `last` or a time range (`since` / `until`), not both")
        for moment in (self.since, self.until):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("times need a time zone, e.g. 2026-11-01T00:00:00Z")
        return self


def replan(placer: Placer, entries: Sequence[tuple[Context, QueueItem | None]]) -> list[tuple[Context, Plan | None]]:
    """Plan the window's items in order (None: a comment without an item); the placer's directory moves on."""
    return [(ctx, None if item is None else placer.plan(item, ctx)) for ctx, item in entries]


def resolve_window(window: WindowIn, *, now: datetime) -> dict[str, Any]:
    """The window made explicit (stored with the simulation)."""
    if window.last is not None:
        return {"last": window.last}
    until = window.until or now
    since = window.since or until - timedelta(days=DEFAULT_DAYS)
    if since >= until:
        raise InvalidPayload("`since` must be before `until`.")
    if until - since > timedelta(days=MAX_DAYS):
        raise InvalidPayload(f"A window spans at most {MAX_DAYS} days.")
    return {"since": since.isoformat(), "until": until.isoformat()}


def _window_filter(window: Mapping[str, Any]) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = [col(Comment.deleted_at).is_(None)]
    if "since" in window:
        conditions += [
            col(Comment.received_at) >= datetime.fromisoformat(window["since"]),
            col(Comment.received_at) < datetime.fromisoformat(window["until"]),
        ]
    return conditions


async def window_ids(session: AsyncSession, window: Mapping[str, Any], *, limit: int) -> list[uuid.UUID]:
    """The processed comments of the window, oldest first (at most `limit`; the newest are kept)."""
    cap = min(int(window.get("last", limit)), limit)
    stmt = (
        sa.select(col(Comment.id))
        .join(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
        .where(*_window_filter(window))
        .order_by(col(Comment.received_at).desc(), col(Comment.id).desc())
        .limit(cap)
    )
    return list(reversed((await session.execute(stmt)).scalars().all()))


class Difference:
    """Where the window's items are and where they would go, accumulated item by item."""

    def __init__(self, *, keep_decisions: bool) -> None:
        self.comments = 0
        self.rerouted = 0
        self.kept = 0
        self.moves: Counter[tuple[str, str]] = Counter()
        self.sample: list[dict[str, Any]] = []
        self.owners: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.teams: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.rules: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.priority: tuple[Counter[str], Counter[str]] = (Counter(), Counter())
        self.sla_seconds = [0.0, 0.0]
        self.held = [0, 0]
        self.no_reply = [0, 0]
        self.decisions: dict[str, dict[str, Any]] | None = {} if keep_decisions else None

    def add(self, ctx: Context, plan: Plan | None) -> None:
        """Count one comment."""
        self.comments += 1
        if plan is None:
            return
        self.rerouted += bool(plan.changes)
        self.kept += plan.kept
        for side, place in enumerate((plan.before, plan.after)):
            self.owners[side][place.owner] += 1
            if place.team:
                self.teams[side][place.team] += 1
            self.rules[side][place.rule_id] += 1
            self.priority[side][place.priority] += 1
            if place.sla_seconds is not None and not place.no_reply:
                self.sla_seconds[side] += place.sla_seconds
            self.held[side] += place.hold
            self.no_reply[side] += place.no_reply
        if plan.before.owner != plan.after.owner:
            self.moves[(plan.before.owner, plan.after.owner)] += 1
            if len(self.sample) < SAMPLE_SIZE:
                self.sample.append({
                    "comment_id": str(ctx.comment.id),
                    "excerpt": redact(ctx.comment.body)[:200],
                    "before": plan.before.public(),
                    "after": plan.after.public(),
                })  # fmt: skip
        if self.decisions is not None:
            self.decisions[str(ctx.comment.id)] = {**plan.after.public(), "rerouted": bool(plan.changes)}

    @staticmethod
    def _pairs(counts: tuple[Counter[str], Counter[str]], key: str) -> list[dict[str, Any]]:
        before, after = counts
        return [
            {key: k, "before": before.get(k, 0), "after": after.get(k, 0)} for k in sorted(set(before) | set(after))
        ]

    def result(self) -> dict[str, Any]:
        """The summary admins read (and, for small windows, every comment's placement after)."""
        result: dict[str, Any] = {
            "comments": self.comments,
            "rerouted": self.rerouted,
            "moved": sum(self.moves.values()),
            "kept": self.kept,
            "moves": [{"from": f, "to": t, "count": n} for (f, t), n in self.moves.most_common()],
            "load": self._pairs(self.owners, "owner"),
            "team_load": self._pairs(self.teams, "team"),
            "sla_hours": {
                "before": round(self.sla_seconds[0] / 3600, 2),
                "after": round(self.sla_seconds[1] / 3600, 2),
            },
            "held": {"before": self.held[0], "after": self.held[1]},
            "no_reply": {"before": self.no_reply[0], "after": self.no_reply[1]},
            "priority": {"before": dict(self.priority[0]), "after": dict(self.priority[1])},
            "rules": self._pairs(self.rules, "rule_id"),
            "sample": self.sample,
        }
        if self.decisions is not None:
            result["decisions"] = self.decisions
        return result


async def difference(
    session: AsyncSession,
    comment_ids: Sequence[uuid.UUID],
    draft: CompiledRuleset,
    *,
    now: datetime,
    thresholds: Mapping[str, float] | None = None,
    keep_decisions: bool = False,
) -> dict[str, Any]:
    """Where the items are and where re-routing them with the draft would put them, a chunk at a time (bounded
    memory). Writes nothing: the plans are reroute's, never applied."""
    placer = Placer(await load_directory(session), draft, now=now, thresholds=thresholds)
    diff = Difference(keep_decisions=keep_decisions)
    for start in range(0, len(comment_ids), CHUNK):
        for ctx, plan in replan(placer, await context.load(session, comment_ids[start : start + CHUNK])):
            diff.add(ctx, plan)
        session.expunge_all()
    return diff.result()
