"""The outbound tables: the outbox of messages to deliver, and the notification channels they may go to."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.crypto import EncryptedText
from service.models.base import ts_column, utcnow


class DeliveryState(StrEnum):
    """Life of an outbound message: pending -> running -> delivered | failed (retried later) | dead."""

    pending = "pending"  # waiting for its first attempt (or for an earlier message of its comment)
    running = "running"  # an attempt is in flight
    delivered = "delivered"
    failed = "failed"  # the last attempt failed; the next one is due at available_at
    dead = "dead"  # gave up after max_attempts (or a permanent refusal); an admin may retry it


# States in which a message still waits for delivery (and holds back later messages of its comment).
UNFINISHED_STATES = (DeliveryState.pending, DeliveryState.running, DeliveryState.failed)


class MessageKind(StrEnum):
    """What a message says. Platform events are named as the receiver sees them in the payload's `type`."""

    reply_created = "reply.created"
    comment_held = "comment.held"
    comment_released = "comment.released"
    comment_rejected = "comment.rejected"
    item_resolved = "item.resolved"
    notification = "notification"


PLATFORM_KINDS = (
    MessageKind.reply_created,
    MessageKind.comment_held,
    MessageKind.comment_released,
    MessageKind.comment_rejected,
    MessageKind.item_resolved,
)


class OutboundMessage(SQLModel, table=True):
    """One message to one target, written in the transaction of the change that causes it, delivered by a job.

    `key` is derived from `cause` (the change: e.g. `reply:<reply id>`), unique, and sent as the idempotency key
    (`webhook-id`) on every attempt: one cause, one row, one key. Messages with the same `ordering_key` (a comment
    at a target) are delivered in id order.
    """

    __tablename__ = "outbound_message"
    __table_args__ = (
        sa.Index("ix_outbound_message_due", "state", "available_at"),
        sa.Index("ix_outbound_message_order", "ordering_key", "id"),
        sa.Index("ix_outbound_message_target_state", "target", "state"),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                                             primary_key=True, autoincrement=True))  # fmt: skip
    key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    cause: str = Field(sa_column=sa.Column(sa.String(300), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    target: str = Field(sa_column=sa.Column(sa.String(100), nullable=False))
    ordering_key: str | None = Field(default=None, sa_column=sa.Column(sa.String(150), nullable=True))
    comment_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True, index=True))
    item_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True))
    reply_id: uuid.UUID | None = Field(default=None, sa_column=sa.Column(sa.Uuid, nullable=True, index=True))
    # What is sent, rendered when the cause happened (never personal data the detectors found in a comment).
    payload: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    state: str = Field(default=DeliveryState.pending, sa_column=sa.Column(sa.String(16), nullable=False))
    attempts: int = 0
    available_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    enqueued_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    started_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    last_attempt_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    delivered_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    last_status: int | None = None
    last_error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    # The id the receiver gave what we sent (a reply's id on the platform), from its 2xx answer.
    external_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(200), nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())


class ChannelKind(StrEnum):
    """Where notifications to people go."""

    email = "email"  # an SMTP server; each recipient member's e-mail address
    slack = "slack"  # a Slack incoming webhook (bound to one Slack channel)
    teams = "teams"  # a Microsoft Teams Workflows webhook ("When a Teams webhook request is received")
    webhook = "webhook"  # any HTTPS endpoint, signed with Standard Webhooks


class Channel(SQLModel, table=True):
    """A notification channel an admin configured. Its credentials (SMTP password, webhook URLs, signing secret)
    are one encrypted JSON document; `settings` holds what may be shown (SMTP host, port, sender)."""

    __tablename__ = "channel"

    id: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    kind: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=sa.Column(sa.JSON, nullable=False))
    credentials: str = Field(sa_column=sa.Column(EncryptedText(), nullable=False))
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    deleted_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
