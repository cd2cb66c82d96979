"""Bulk queue items written straight to the database, for tests and benchmarks where the classifier is not the point.

Each item gets a real comment row (and thread), as processing would leave them; only the model pass is skipped.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.database import table
from service.models import Comment, ItemState, QueueItem, Source, Thread, changes
from service.models.base import utcnow
from service.models.queue import NO_DUE, PRIORITY_RANK, Priority

PRIORITIES = list(Priority)


async def seed_items(
    session: AsyncSession,
    *,
    source: str,
    count: int,
    team: str | None = None,
    member: str | None = None,
    state: ItemState = ItemState.open,
    now: datetime | None = None,
    sla: timedelta | None = timedelta(hours=4),
    chunk: int = 1000,
) -> list[uuid.UUID]:
    """`count` items (priorities cycling urgent..low, due times spread) in one thread; returns the item ids."""
    now = now or utcnow()
    source_id = (await session.execute(sa.select(col(Source.id)).where(col(Source.slug) == source))).scalar_one()
    thread_ext = f"seed-{uuid.uuid4().hex[:8]}"
    thread_id = (
        await session.execute(
            sa.insert(table(Thread))
            .values(source_id=source_id, external_id=thread_ext, title="Seeded", created_at=now, updated_at=now)
            .returning(table(Thread).c.id)
        )
    ).scalar_one()
    ids: list[uuid.UUID] = []
    for start in range(0, count, chunk):
        comments, items = [], []
        for i in range(start, min(count, start + chunk)):
            comment_id, item_id = uuid.uuid4(), uuid.uuid4()
            priority = PRIORITIES[i % len(PRIORITIES)]
            due = now + sla + timedelta(seconds=i) if sla is not None else None
            comments.append({
                "id": comment_id, "source_id": source_id, "thread_id": thread_id, "external_id": f"{thread_ext}-{i}",
                "body": f"Seeded question number {i}?", "version": 1, "received_at": now, "updated_at": now,
                "author_external_id": f"employee-{i}",
            })  # fmt: skip
            items.append({
                "id": item_id, "comment_id": comment_id, "source_id": source_id, "thread_id": thread_id,
                "state": state.value, "priority": priority.value, "priority_rank": PRIORITY_RANK[priority],
                "member_id": member, "team_id": team, "rule_id": "seed", "ruleset_version": 0, "reason": "seeded",
                "tags": [], "no_reply": False, "manually_assigned": False, "reopen_count": 0,
                "sla_seconds": int(sla.total_seconds()) if sla else None, "due_at": due, "sort_due": due or NO_DUE,
                "topic": "seed", "sentiment": "neutral", "created_at": now, "updated_at": now,
            })  # fmt: skip
            ids.append(item_id)
        await session.execute(sa.insert(table(Comment)), comments)
        await session.execute(sa.insert(table(QueueItem)), items)
        changes.touch(session, comments=[one["id"] for one in comments])  # as if processing wrote them
    return ids


def classification(
    *, topic: str = "other", sentiment: str = "neutral", needs_answer: float = 0.8, offensive: float = 0.1
) -> dict[str, object]:
    """A classification document as processing stores it (labels decided at 0.5)."""

    def binary(positive: str, negative: str, p: float) -> dict[str, object]:
        return {"label": positive if p >= 0.5 else negative, "scores": {positive: p, negative: round(1 - p, 4)}}

    return {
        "sentiment": {"label": sentiment, "scores": {sentiment: 0.8}},
        "offensive": binary("offensive", "not-offensive", offensive),
        "hate": binary("hate", "not-hate", 0.05),
        "emotion": None,
        "needs_answer": binary("needs_answer", "no_answer", needs_answer),
        "topic": {"label": topic, "score": 0.6, "scores": {topic: 0.6}, "nearest": []},
        "language": {"code": "en", "confidence": 0.99, "supported": True},
        "pii": [],
        "model_version": "seeded",
    }


async def seed_processed(
    session: AsyncSession,
    *,
    source: str,
    docs: list[dict[str, object]],
    channel: str | None = None,
    now: datetime | None = None,
    body: str | None = None,
) -> list[uuid.UUID]:
    """Comments as processing leaves them (analysis stored), placed in the queue by the real dispatcher."""
    from service.models import CommentAnalysis
    from service.routing.dispatch import dispatch_comments

    now = now or utcnow()
    source_id = (await session.execute(sa.select(col(Source.id)).where(col(Source.slug) == source))).scalar_one()
    assert source_id is not None
    thread_ext = f"seed-{uuid.uuid4().hex[:8]}"
    thread = Thread(source_id=source_id, external_id=thread_ext, channel=channel, kind="forum", created_at=now,
                    updated_at=now)  # fmt: skip
    session.add(thread)
    await session.flush()
    ids = []
    for i, doc in enumerate(docs):
        comment = Comment(
            source_id=source_id, thread_id=thread.id, external_id=f"{thread_ext}-{i}",
            body=body or f"Seeded comment {i}", author_external_id=f"employee-{i}",
            received_at=now + timedelta(milliseconds=i), updated_at=now,
        )  # fmt: skip
        session.add(comment)
        await session.flush()
        session.add(CommentAnalysis(comment_id=comment.id, comment_version=1, model_version="seeded",
                                    embedding=b"", classification=doc, processed_at=now))  # fmt: skip
        ids.append(comment.id)
    await session.flush()
    await dispatch_comments(session, ids, now=now)
    return ids
