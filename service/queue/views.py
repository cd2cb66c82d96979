"""What responders see of a queue item: in a list, and in full with its comment, thread, replies and history."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from classifiers.pii import redact
from service.items import transitions as items
from service.models import Comment, ItemState, QueueItem, ReplyDelivery, Source
from service.models.base import to_schema
from service.models.queue import Priority

EXCERPT_CHARS = 200


class QueueItemPublic(BaseModel):
    """A queue item as a responder sees it in a list."""

    id: uuid.UUID
    comment_id: uuid.UUID
    source: str
    state: ItemState
    priority: Priority
    member: str | None = Field(description="The member who owns it (None: the team's pool, or unassigned).")
    team: str | None
    claimed_by: str | None
    claim_expires_at: datetime | None
    due_at: datetime | None = Field(description="When the first response is due (the rule's SLA).")
    overdue: bool
    snoozed_until: datetime | None
    tags: list[str]
    no_reply: bool
    topic: str | None
    sentiment: str | None
    channel: str | None
    rule_id: str
    ruleset_version: int
    reason: str = Field(description="Why it was placed here: the rule that matched and how the owner was chosen.")
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    first_response_at: datetime | None
    answered_by: str | None
    escalated_at: datetime | None
    reopen_count: int
    excerpt: str = Field(description=f"The first {EXCERPT_CHARS} characters of the comment, personal data redacted.")
    created_at: datetime
    updated_at: datetime


class QueuePage(BaseModel):
    """One page of the queue, most urgent first (held items, then priority, then due time)."""

    items: list[QueueItemPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; None on the last page.")


class QueueCommentPublic(BaseModel):
    """The comment behind an item."""

    id: uuid.UUID
    external_id: str
    parent_external_id: str | None
    author_external_id: str | None
    author_name: str | None
    author_department: str | None
    body: str
    version: int
    posted_at: datetime | None
    received_at: datetime


class QueueThreadPublic(BaseModel):
    """The story or forum topic it was posted under."""

    external_id: str
    title: str | None
    url: str | None
    kind: str | None
    channel: str | None
    author_external_id: str | None
    author_name: str | None


class ContextCommentPublic(BaseModel):
    """Another comment in the same thread (excerpt, personal data redacted)."""

    id: uuid.UUID
    external_id: str
    parent_external_id: str | None
    author_name: str | None
    excerpt: str
    posted_at: datetime | None


class ReplyPublic(BaseModel):
    """An answer written through Switchboard."""

    id: uuid.UUID
    member: str | None
    body: str
    delivery_state: ReplyDelivery = Field(
        description="pending -> delivered (on the platform) | failed (being retried) | dead; unsent: the source has "
        "no callback URL, so the reply is recorded here only."
    )
    delivered_at: datetime | None = Field(description="When the platform accepted the reply.")
    external_id: str | None = Field(description="The reply's id on the platform.")
    last_error: str | None = Field(description="Why the last delivery attempt failed.")
    created_at: datetime


class HistoryEntryPublic(BaseModel):
    """One transition of the item."""

    at: datetime
    actor: str
    action: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class QueueItemDetail(QueueItemPublic):
    """One item with its comment, thread context, classification explanation, replies and history."""

    comment: QueueCommentPublic
    thread: QueueThreadPublic | None
    thread_context: list[ContextCommentPublic]
    classification: dict[str, Any] | None = Field(
        description="As POST /v1/classify returns it (with nearest examples), with responders' corrections applied: "
        "a corrected head names who corrected it in `corrected_by`."
    )
    replies: list[ReplyPublic]
    history: list[HistoryEntryPublic]


def to_public(item: QueueItem, *, source: str, body: str, now: datetime) -> QueueItemPublic:
    """The list view of an item (`body`: its comment's text, for the excerpt)."""
    return to_schema(
        QueueItemPublic, item, source=source, member=item.member_id, team=item.team_id,
        overdue=item.due_at is not None and item.due_at < now and items.is_waiting(item),
        excerpt=redact(body)[:EXCERPT_CHARS],  # redact first: a cut must not expose half an e-mail
    )  # fmt: skip


async def source_and_comment(session: AsyncSession, item: QueueItem) -> tuple[str, Comment]:
    """The slug of the item's source, and its comment."""
    row = (
        await session.execute(
            sa.select(col(Source.slug), Comment)
            .join(Comment, col(Comment.source_id) == col(Source.id))
            .where(col(Comment.id) == item.comment_id)
        )
    ).one()
    return row[0], row[1]


async def public_of(session: AsyncSession, item: QueueItem, now: datetime) -> QueueItemPublic:
    """The list view of an item, its source and comment loaded."""
    slug, comment = await source_and_comment(session, item)
    return to_public(item, source=slug, body=comment.body, now=now)
