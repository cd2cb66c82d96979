"""Responders' corrections of classifier output: stored with who and when, and fed back into the topic model."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.topics import OTHER
from service.auth.keys import Principal, require_role
from service.classification import reclassify
from service.errors import InvalidPayload, NotFound
from service.models import Comment, Label, Role, Topic
from service.queue.viewer import sees_comment
from service.routing import dispatch
from service.settings import Settings

Flag = Literal["offensive", "hate", "needs_answer", "pii", "spam"]


class LabelIn(BaseModel):
    """Body of POST /v1/comments/{id}/labels: what the classifiers should have said (at least one field)."""

    model_config = ConfigDict(extra="forbid")

    topic: str | None = Field(None, max_length=100, description="A topic's name, or 'other'.")
    sentiment: Literal["negative", "neutral", "positive"] | None = None
    flags: dict[Flag, StrictBool] | None = Field(None, description="e.g. {'offensive': false, 'needs_answer': true}")

    @model_validator(mode="after")
    def _something(self) -> LabelIn:
        if self.topic is None and self.sentiment is None and not self.flags:
            raise ValueError("give at least one of topic, sentiment, flags")
        return self


class LabelPublic(BaseModel):
    """A stored correction."""

    id: int
    comment_id: uuid.UUID
    topic: str | None
    sentiment: str | None
    flags: dict[str, bool] | None
    actor: str
    created_at: datetime


async def correct(
    session: AsyncSession, *, comment_id: uuid.UUID, data: LabelIn, principal: Principal, settings: Settings,
    now: datetime,
) -> tuple[LabelPublic, list[uuid.UUID]]:  # fmt: skip
    """Record a correction: its item shows it and is re-routed if the route changes (as re-classification would);
    a topic correction also joins that topic's examples at the classifier's next refit."""
    require_role(principal, Role.admin, Role.responder)
    comment = await session.get(Comment, comment_id)
    # Responders correct what reaches their queues; anything else does not exist for them.
    visible = comment is not None and await sees_comment(session, principal, comment_id)
    if comment is None or comment.deleted_at is not None or not visible:
        raise NotFound(f"There is no comment {comment_id}.")
    topic = data.topic
    if topic is not None and topic.strip().lower() != OTHER:
        found = (
            await session.execute(
                sa.select(col(Topic.name)).where(
                    sa.func.lower(col(Topic.name)) == topic.strip().lower(), col(Topic.deleted_at).is_(None)
                )
            )
        ).scalar_one_or_none()
        if found is None:
            raise InvalidPayload(f"There is no topic '{topic}'; create it first or use '{OTHER}'.")
        topic = found
    label = Label(
        comment_id=comment_id,
        topic=topic.strip().lower() if topic is not None and topic.strip().lower() == OTHER else topic,
        sentiment=data.sentiment,
        flags={str(k): v for k, v in data.flags.items()} if data.flags else None,
        actor=principal.actor,
    )
    session.add(label)
    await session.flush()
    await dispatch.reroute_comment(session, comment_id, now=now)
    job_ids = await reclassify.enqueue_recent(session, settings=settings, now=now) if topic is not None else []
    return LabelPublic.model_validate(label, from_attributes=True), job_ids
