"""The notification tables: subscriptions (who hears of what through which channel), members' preferences, and
the notifications waiting to be batched into one outbound message per recipient."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from service.models.base import ts_column, utcnow

# A chat or webhook channel's notifications go to the channel itself, not to a person.
CHANNEL_RECIPIENT = "*"
DEFAULT_DIGEST_HOUR = 8


class NotificationEvent(StrEnum):
    """What people can be told about."""

    item_assigned = "item.assigned"  # a new item for me or my team, or one reassigned or re-routed to us
    item_sla_reminder = "item.sla_reminder"  # an item's deadline is near
    item_escalated = "item.escalated"  # an item's deadline passed
    item_reopened = "item.reopened"  # the author followed up on a closed item
    comment_held = "comment.held"  # a comment waits for moderation
    comment_approved = "comment.approved"  # a held comment was approved into a queue


class Subscription(SQLModel, table=True):
    """A channel hears of these events: for one member's items, one team's items, or (neither) every item."""

    __tablename__ = "notification_subscription"

    id: int | None = Field(default=None, primary_key=True)
    channel_id: str = Field(sa_column=sa.Column(sa.String(64), sa.ForeignKey("channel.id"), nullable=False, index=True))
    events: list[str] = Field(sa_column=sa.Column(sa.JSON, nullable=False))
    member_id: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(64), sa.ForeignKey("member.id"), nullable=True)
    )
    team_id: str | None = Field(
        default=None, sa_column=sa.Column(sa.String(64), sa.ForeignKey("team.id"), nullable=True)
    )
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())


class Preference(SQLModel, table=True):
    """What one member wants to be told by e-mail (absent row: everything, on every channel, at once)."""

    __tablename__ = "notification_preference"

    member_id: str = Field(sa_column=sa.Column(sa.String(64), sa.ForeignKey("member.id"), primary_key=True))
    events: list[str] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))  # None: all
    channels: list[str] | None = Field(default=None, sa_column=sa.Column(sa.JSON, nullable=True))  # None: all
    digest: bool = False  # one message a day at digest_hour instead of one per burst
    digest_hour: int = DEFAULT_DIGEST_HOUR  # 0-23, UTC
    updated_at: datetime = Field(default_factory=utcnow, sa_column=ts_column())


class Notification(SQLModel, table=True):
    """One event about one item for one recipient on one channel, waiting to be batched into a message.

    `key` is stable per cause (event, item, recipient, channel, time), so a repeated call adds nothing. `flush`
    sets `flushed_at` when it handles the row, and `message_id` when a message carried it (a row whose channel or
    recipient went away in between is flushed without one).
    """

    __tablename__ = "notification"
    __table_args__ = (
        # What flush reads: the unflushed rows, by recipient. Partial, so the sent history does not slow it.
        sa.Index(
            "ix_notification_unflushed", "channel_id", "recipient", "id",
            postgresql_where=sa.text("flushed_at IS NULL"), sqlite_where=sa.text("flushed_at IS NULL"),
        ),
    )  # fmt: skip

    id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                                             primary_key=True, autoincrement=True))  # fmt: skip
    key: str = Field(sa_column=sa.Column(sa.String(64), nullable=False, unique=True))
    channel_id: str = Field(sa_column=sa.Column(sa.String(64), sa.ForeignKey("channel.id"), nullable=False))
    recipient: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))  # a member id, or '*' (the channel)
    member_id: str | None = Field(default=None, sa_column=sa.Column(sa.String(64), nullable=True))
    event: str = Field(sa_column=sa.Column(sa.String(40), nullable=False))
    item_id: uuid.UUID = Field(sa_column=sa.Column(sa.Uuid, sa.ForeignKey("queue_item.id"), nullable=False, index=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=ts_column(index=True))  # pruning reads it
    due_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))  # digest time; None: batch
    flushed_at: datetime | None = Field(default=None, sa_column=ts_column(nullable=True))
    message_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger().with_variant(sa.Integer, "sqlite"),
                                                                     nullable=True))  # fmt: skip
