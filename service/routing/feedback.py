"""Classifier feedback from responders: per flag and per topic, how often they agreed with the classifier,
corrected it or overrode it (a held item approved, a needs-answer item closed as needing no reply), week by week."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit.tables import AuditEvent
from service.classification.classifier import thresholds_for
from service.models import Comment, CommentAnalysis, Label, QueueItem
from service.routing.facts import label_of
from service.settings import Settings

FLAGS = ("offensive", "hate", "needs_answer")


POSITIVE = {"offensive": "offensive", "hate": "hate", "needs_answer": "needs_answer"}


class FeedbackRowPublic(BaseModel):
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


class FeedbackPublic(BaseModel):
    """Classifier feedback from responders, by week; `thresholds` are the current defaults."""

    since: datetime
    thresholds: dict[str, float]
    rows: list[FeedbackRowPublic]


def _week(moment: datetime) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


async def feedback(session: AsyncSession, *, settings: Settings, now: datetime, days: int = 90) -> FeedbackPublic:
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
            said = label_of(doc, flag)
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
        topic = label_of(doc, "topic")
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
        out.append(FeedbackRowPublic(
            kind="flag" if kind == "flag" else "topic", name=name, week=week, predicted=c["predicted"],
            agreed=c["agreed"], corrected=c["corrected"], overridden=c["overridden"], missed=c["missed"],
            precision=round(c["agreed"] / reviewed, 3) if reviewed else None,
        ))  # fmt: skip
    return FeedbackPublic(since=since, thresholds=thresholds_for(settings, None), rows=out)
