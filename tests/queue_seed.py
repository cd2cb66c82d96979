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
from service.models import Comment, ItemState, QueueItem, Source, Thread
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
    return ids
