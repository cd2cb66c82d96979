"""Queue items: one per comment, with its owner, priority, SLA and state; and the replies written to them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column, utcnow


class ItemState(StrEnum):
    """Where a queue item is in its life."""

    held = "held"  # awaiting moderation
    open = "open"
    claimed = "claimed"  # a responder holds a lease on it
    escalated = "escalated"  # its SLA passed before anyone answered
    answered = "answered"  # answered through Switchboard
    resolved = "resolved"  # closed with a reason (answered on the platform, no reply needed, spam, ...)


WAITING_STATES = (ItemState.held, ItemState.open, ItemState.claimed, ItemState.escalated)
CLOSED_STATES = (ItemState.answered, ItemState.resolved)


class Priority(StrEnum):
    """How urgent an item is; the queue is sorted by it, then by due time."""

    urgent = "urgent"
    high = "high"
    normal = "normal"
    low = "low"


PRIORITY_RANK = {Priority.urgent: 0, Priority.high: 1, Priority.normal: 2, Priority.low: 3}
# Items without an SLA sort after every due item of the same priority.
NO_DUE = datetime(9999, 1, 1, tzinfo=UTC)


class Resolution(StrEnum):
    """Why an item was closed."""

    answered = "answered"  # a responder answered through Switchboard
    answered_on_platform = "answered_on_platform"  # the owner (or a colleague) replied in the thread
    no_reply_needed = "no_reply_needed"
    duplicate = "duplicate"
    spam = "spam"
    out_of_scope = "out_of_scope"
    follow_up = "follow_up"  # the comment is a follow-up: the original author's item was reopened instead
    staff_reply = "staff_reply"  # the comment is itself the answer to another item
    comment_deleted = "comment_deleted"


class QueueItem(SQLModel, table=True):
    """The work of answering one comment: who owns it, how urgent, by when, and where it is."""

    __tablename__ = "queue_item"
    # The queue's sort order first, so a page reads the index in order and stops at LIMIT (state last: a filter).
    __table_args__ = (sa.Index("ix_queue_item_order", "priority_rank", "sort_due", "id", "state"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    comment_id: uuid.UUID = Field(
        sa_column=sa.Column(sa.Uuid, sa.ForeignKey("comment.id"), nullable=False, unique=True)
    )
    source_id: int = Field(foreign_key="source.id", index=True)
    thread_id: int | None = Field(default=None, foreign_key="thread.id", index=True)
    state: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    priority: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    priority_rank: int = 2
    member_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True, index=True))
    team_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True, index=True))
    # Denormalised from the thread and the classification, so the queue filters without JSON queries.
    channel: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    topic: str | None = Field(default=None, sa_column=sa.Column(sa.String(100), nullable=True))
    sentiment: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    # A person chose the owner (reassign): re-routing after an edit or a refit keeps it.
    manually_assigned: bool = False
    rule_id: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    ruleset_version: int = 0
    reason: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False))
    tags: list[str] = Field(default_factory=list, sa_column=sa.Column(sa.JSON, nullable=False))
    no_reply: bool = False
    sla_seconds: int | None = None
    due_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True, index=True))
    sort_due: datetime = Field(sa_column=ts_column())  # due_at, or NO_DUE: the queue's sort key
    claimed_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    claim_expires_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    snoozed_until: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    resolution: str | None = Field(default=None, sa_column=sa.Column(sa.String(32), nullable=True))
    resolved_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    resolved_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    first_response_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    answered_by: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    escalated_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    reminded_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    reopen_count: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())


class ReplyDelivery(StrEnum):
    """Where a reply is on its way to the platform."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"  # the last attempt failed; it is retried
    dead = "dead"  # given up; an admin may retry the delivery
    unsent = "unsent"  # the source has no callback URL: recorded here only


class Reply(SQLModel, table=True):
    """An answer a responder wrote through Switchboard, posted back to the platform through the outbox."""

    __tablename__ = "reply"
    __table_args__ = (sa.Index("ix_reply_external_id", "external_id"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    item_id: uuid.UUID = Field(foreign_key="queue_item.id", index=True)
    comment_id: uuid.UUID = Field(foreign_key="comment.id", index=True)
    member_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    actor: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    body: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    # pending -> delivered | failed (retried) | dead; unsent: the source has no callback, nothing leaves.
    delivery_state: str = Field(default="pending", sa_column=sa.Column(sa.String(16), nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    # The reply's id on the platform (from the platform's answer to reply.created): its echo is recognised by it.
    external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
