"""Turn waiting notifications into outbound messages: one message per recipient and channel per burst.

A recipient's waiting notifications on a channel form a group. The group is sent once the burst is over (nothing
new for `notify_quiet_seconds`), or once its oldest has waited `notify_batch_seconds`, or (a digest) once its
digest time has come: fifty new items for a team within a minute are one message to each subscriber. The message is
rendered now, from the items as they are, and written to the outbox with the cause `notify:<first notification id>`,
so running `flush` again (or twice at once) never makes a second message for the same notifications.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.database import SessionFactory, dialect_name, transaction
from service.models import Comment, CommentAnalysis, Member, QueueItem, Thread
from service.notifications import render
from service.notifications.render import Entry
from service.notifications.tables import Notification, NotificationEvent
from service.outbound import outbox
from service.outbound.endpoints import channel_target
from service.outbound.tables import Channel, ChannelKind, MessageKind, OutboundMessage
from service.settings import Settings

MAX_GROUPS = 500  # messages written per flush at most; the rest wait for the next round


@dataclass(slots=True)
class Group:
    """A recipient's waiting notifications on one channel (digest ones apart from the others)."""

    channel_id: str
    recipient: str
    digest: bool
    member_id: str | None = None
    rows: list[Notification] = field(default_factory=list)


def is_due(
    now: datetime, *, digest_at: datetime | None, newest: datetime, oldest: datetime, quiet: timedelta, batch: timedelta
) -> bool:
    """Is it time to send a group: its digest time came, or its burst went quiet, or its oldest waited long enough."""
    if digest_at is not None:
        return digest_at <= now
    return newest <= now - quiet or oldest <= now - batch


async def flush(factory: SessionFactory, *, settings: Settings, now: datetime) -> int:
    """Write one outbound message per due group, in one transaction; returns how many messages were written."""
    async with transaction(factory) as session:
        return await flush_session(session, settings=settings, now=now)


async def _due_groups(session: AsyncSession, *, settings: Settings, now: datetime) -> list[Group]:
    """The due groups, their rows loaded (and locked on PostgreSQL: a concurrent flush waits, then skips them)."""
    quiet, batch = timedelta(seconds=settings.notify_quiet_seconds), timedelta(seconds=settings.notify_batch_seconds)
    digest = col(Notification.due_at).is_not(None)
    unflushed = col(Notification.flushed_at).is_(None)
    summary = await session.execute(
        sa.select(
            col(Notification.channel_id), col(Notification.recipient), digest, sa.func.min(Notification.due_at),
            sa.func.max(Notification.created_at), sa.func.min(Notification.created_at),
        )
        .where(unflushed)
        .group_by(col(Notification.channel_id), col(Notification.recipient), digest)
    )  # fmt: skip
    groups = {
        (channel_id, recipient, bool(is_digest)): Group(channel_id, recipient, bool(is_digest))
        for channel_id, recipient, is_digest, digest_at, newest, oldest in summary.all()
        if is_due(now, digest_at=digest_at, newest=newest, oldest=oldest, quiet=quiet, batch=batch)
    }
    if not groups:
        return []
    chosen = sorted(groups)[:MAX_GROUPS]
    which = sa.or_(
        *(
            sa.and_(col(Notification.channel_id) == c, col(Notification.recipient) == r, digest if d else ~digest)
            for c, r, d in chosen
        )
    )
    stmt = sa.select(Notification).where(unflushed, which).order_by(col(Notification.id))
    if dialect_name(session) == "postgresql":
        stmt = stmt.with_for_update()
    for row in (await session.execute(stmt)).scalars():
        group = groups[(row.channel_id, row.recipient, row.due_at is not None)]
        group.member_id = group.member_id or row.member_id
        group.rows.append(row)
    return [g for key in chosen if (g := groups[key]).rows]


async def flush_session(session: AsyncSession, *, settings: Settings, now: datetime) -> int:
    """`flush` in the caller's transaction."""
    due = await _due_groups(session, settings=settings, now=now)
    if not due:
        return 0
    channels = await _channels(session, {g.channel_id for g in due})
    addresses = await _addresses(session, {g.member_id for g in due if g.member_id})
    entries = await _entries(session, {r.item_id for g in due for r in g.rows}, settings)
    written = 0
    for group in due:
        message_id = await _send(session, group, channels, addresses, entries, settings=settings, now=now)
        written += message_id is not None
        await session.execute(
            sa.update(Notification)
            .where(col(Notification.id).in_([r.id for r in group.rows]))
            .values(flushed_at=now, message_id=message_id)
        )
    return written


async def _send(
    session: AsyncSession,
    group: Group,
    channels: dict[str, Channel],
    addresses: dict[str, str],
    entries: dict[uuid.UUID, dict[str, Any]],
    *,
    settings: Settings,
    now: datetime,
) -> int | None:
    """Emit the group's message; None when there is no one to send it to any more (channel or address gone)."""
    channel = channels.get(group.channel_id)
    if channel is None:
        return None
    kind = ChannelKind(channel.kind)
    to = addresses.get(group.member_id) if group.member_id else None
    if kind == ChannelKind.email and to is None:
        return None
    shown = _batch_entries(group.rows, entries)
    if not shown:
        return None
    base_url = settings.public_base_url.rstrip("/")
    payload = render.payload(kind, shown, to=to, recipient=group.recipient, base_url=base_url, now=now)
    cause = f"notify:{group.rows[0].id}"
    items = {e.item_id for e in shown}
    message_id = await outbox.emit(
        session, kind=MessageKind.notification, target=channel_target(channel.id), cause=cause, payload=payload,
        now=now, item_id=next(iter(items)) if len(items) == 1 else None,
    )  # fmt: skip
    if message_id is None:  # this cause's message exists already: point the rows at it
        message_id = (
            await session.execute(
                sa.select(col(OutboundMessage.id)).where(col(OutboundMessage.key) == outbox.key_for(cause))
            )
        ).scalar_one()
    return message_id


def _batch_entries(rows: Sequence[Notification], entries: dict[uuid.UUID, dict[str, Any]]) -> list[Entry]:
    """The group's entries in the order they happened, each (event, item) once."""
    seen: set[tuple[str, uuid.UUID]] = set()
    shown: list[Entry] = []
    for row in rows:
        fields = entries.get(row.item_id)
        if fields is None or (row.event, row.item_id) in seen:
            continue
        seen.add((row.event, row.item_id))
        shown.append(Entry(event=NotificationEvent(row.event), **fields))
    return shown


async def _channels(session: AsyncSession, ids: set[str]) -> dict[str, Channel]:
    rows = await session.execute(
        sa.select(Channel).where(
            col(Channel.id).in_(sorted(ids)), col(Channel.active).is_(True), col(Channel.deleted_at).is_(None)
        )
    )
    return {c.id: c for c in rows.scalars()}


async def _addresses(session: AsyncSession, member_ids: set[str | None]) -> dict[str, str]:
    ids = sorted(m for m in member_ids if m)
    if not ids:
        return {}
    rows = await session.execute(
        sa.select(col(Member.id), col(Member.email)).where(
            col(Member.id).in_(ids), col(Member.deleted_at).is_(None), col(Member.email).is_not(None)
        )
    )
    return {member_id: email for member_id, email in rows.all() if email}


async def _entries(
    session: AsyncSession, item_ids: set[uuid.UUID], settings: Settings
) -> dict[uuid.UUID, dict[str, Any]]:
    """What each item shows in a message (without the event), its texts cleaned of personal data."""
    base_url = settings.public_base_url.rstrip("/")
    stmt = (
        sa.select(QueueItem, Comment, Thread, CommentAnalysis)
        .join(Comment, col(Comment.id) == col(QueueItem.comment_id))
        .outerjoin(Thread, col(Thread.id) == col(QueueItem.thread_id))
        .outerjoin(CommentAnalysis, col(CommentAnalysis.comment_id) == col(Comment.id))
        .where(col(QueueItem.id).in_(sorted(item_ids)))
    )
    found: dict[uuid.UUID, dict[str, Any]] = {}
    for item, comment, thread, analysis in (await session.execute(stmt)).all():
        spans = analysis.pii if analysis is not None and analysis.comment_version == comment.version else []
        channel = item.channel or (thread.channel if thread is not None else None)
        found[item.id] = {
            "item_id": item.id,
            "title": render.clean(thread.title if thread is not None and thread.title else "(untitled)",
                                  render.TITLE_CHARS),
            "channel": render.clean(channel, 200) if channel else None,
            "excerpt": "(deleted on the platform)" if comment.deleted_at else render.excerpt(comment.body, spans),
            "reason": render.clean(item.reason or "", render.REASON_CHARS),
            "priority": item.priority,
            "due_at": item.due_at,
            "url": f"{base_url}/v1/queue/{item.id}",
        }  # fmt: skip
    return found


async def prune(factory: SessionFactory, *, settings: Settings, now: datetime) -> int:
    """Forget sent notifications older than the outbound retention period; returns how many."""
    cutoff = now - timedelta(days=settings.outbound_retention_days)
    async with transaction(factory) as session:
        result = await session.execute(
            sa.delete(Notification).where(
                col(Notification.created_at) < cutoff, col(Notification.flushed_at).is_not(None)
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)
