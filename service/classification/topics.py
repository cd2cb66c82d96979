"""Admin use cases for the topic taxonomy (the classifier refits itself when it changes)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.topics import OTHER
from service.audit import chain as audit
from service.classification import reclassify
from service.errors import AlreadyExists, InvalidPayload, NotFound
from service.inputs import set_fields
from service.models import Topic
from service.models.topic import MAX_EXAMPLE_LENGTH, MAX_EXAMPLES
from service.settings import Settings


def _public(topic: Topic) -> TopicPublic:
    return TopicPublic.model_validate(topic, from_attributes=True)


def _audit_view(topic: Topic) -> dict[str, Any]:
    # Example texts are comment-like and may carry personal data: the trail records how many, not what.
    return {"name": topic.name, "description": topic.description, "examples": len(topic.examples)}


def _clean_examples(examples: list[str]) -> list[str]:
    cleaned = list(dict.fromkeys(e.strip() for e in examples if e.strip()))
    too_long = [i for i, e in enumerate(cleaned) if len(e) > MAX_EXAMPLE_LENGTH]
    if too_long:
        raise InvalidPayload(f"Examples may have at most {MAX_EXAMPLE_LENGTH} characters (example {too_long[0]}).")
    return cleaned


async def _check_name(session: AsyncSession, name: str, *, except_id: int | None = None) -> None:
    if name.strip().lower() == OTHER:
        raise InvalidPayload(f"'{OTHER}' is reserved for comments that fit no topic.")
    stmt = sa.select(col(Topic.id)).where(
        sa.func.lower(col(Topic.name)) == name.strip().lower(), col(Topic.deleted_at).is_(None)
    )
    if except_id is not None:
        stmt = stmt.where(col(Topic.id) != except_id)
    if (await session.execute(stmt)).first() is not None:
        raise AlreadyExists(f"A topic named '{name}' exists.")


async def _get(session: AsyncSession, topic_id: int) -> Topic:
    topic = (
        await session.execute(
            sa.select(Topic).where(col(Topic.id) == topic_id, col(Topic.deleted_at).is_(None)).with_for_update()
        )
    ).scalar_one_or_none()
    if topic is None:
        raise NotFound(f"There is no topic {topic_id}.")
    return topic


async def create(
    session: AsyncSession, *, data: TopicIn, actor: str, settings: Settings, now: datetime
) -> tuple[TopicPublic, list[uuid.UUID]]:
    """Add a topic to the taxonomy; returns it and the re-classification jobs to enqueue after commit."""
    await _check_name(session, data.name)
    topic = Topic(name=data.name.strip(), description=data.description, examples=_clean_examples(data.examples))
    session.add(topic)
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="topic.created", target_type="topic", target_id=str(topic.id),
        after=_audit_view(topic),
    )  # fmt: skip
    return _public(topic), await reclassify.enqueue_recent(session, settings=settings, now=now)


async def list_all(session: AsyncSession) -> list[TopicPublic]:
    """The taxonomy, oldest topic first."""
    rows = await session.execute(sa.select(Topic).where(col(Topic.deleted_at).is_(None)).order_by(col(Topic.id)))
    return [_public(t) for t in rows.scalars()]


async def read(session: AsyncSession, *, topic_id: int) -> TopicPublic:
    """One topic."""
    return _public(await _get(session, topic_id))


async def update(
    session: AsyncSession, *, topic_id: int, data: TopicUpdate, actor: str, settings: Settings, now: datetime
) -> tuple[TopicPublic, list[uuid.UUID]]:
    """Rename a topic, change its description or replace its examples (and re-classify recent comments)."""
    topic = await _get(session, topic_id)
    changes = set_fields(data, clearable={"description"}) | {"updated_at": now}
    if data.name is not None:
        await _check_name(session, data.name, except_id=topic_id)
        changes["name"] = data.name.strip()
    if data.examples is not None:
        changes["examples"] = _clean_examples(data.examples)
    await audit.record_update(
        session, topic, changes, view=lambda: _audit_view(topic), now=now, actor=actor, action="topic.updated",
        target_type="topic", target_id=str(topic_id),
    )  # fmt: skip
    return _public(topic), await reclassify.enqueue_recent(session, settings=settings, now=now)


async def delete(
    session: AsyncSession, *, topic_id: int, actor: str, settings: Settings, now: datetime
) -> list[uuid.UUID]:
    """Remove a topic from the taxonomy; recent comments are classified again (returns their job ids)."""
    topic = await _get(session, topic_id)
    topic.deleted_at = topic.updated_at = now
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="topic.deleted", target_type="topic", target_id=str(topic_id),
        before=_audit_view(topic),
    )  # fmt: skip
    return await reclassify.enqueue_recent(session, settings=settings, now=now)


class TopicIn(BaseModel):
    """Body of POST /v1/admin/topics."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\s].*$", description="Unique; not 'other'.")
    description: str | None = Field(None, max_length=2000)
    examples: list[str] = Field(default_factory=list, max_length=MAX_EXAMPLES)


class TopicUpdate(BaseModel):
    """Body of PATCH /v1/admin/topics/{id}; absent fields stay as they are, `examples` replaces the list."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=100, pattern=r"^[^\s].*$")
    description: str | None = Field(None, max_length=2000)
    examples: list[str] | None = Field(None, max_length=MAX_EXAMPLES)


class TopicPublic(BaseModel):
    """A topic as admins see it."""

    id: int
    name: str
    description: str | None
    examples: list[str]
    created_at: datetime
    updated_at: datetime
