"""What a source's platform is told: replies to post, moderation decisions, resolved items (Standard Webhooks
events to the source's `callback_url`), and how the echo of a delivered reply is recognised.

Events (the body's `type`):
- `reply.created`: a responder answered through Switchboard; the platform posts the reply under the comment and may
  answer `{"external_id": "<the reply's id on the platform>"}`.
- `comment.held`: routing (or a moderator) held the comment for moderation: hide it until released.
- `comment.released`: a held comment was approved: show it.
- `comment.rejected`: a held comment was closed without approval, or a comment was marked spam: keep it hidden.
- `item.resolved`: the item of a comment was closed (answered, answered on the platform, no reply needed, ...).

Every event is an outbox row written in the transaction of its cause, ordered per comment (a release never
overtakes its hold). A source without a callback URL is told nothing (its replies are `unsent`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.models import Comment, ItemState, Member, QueueItem, Reply, ReplyDelivery, Resolution, Source, Thread
from service.models.queue import CLOSED_STATES, WAITING_STATES
from service.outbound import outbox
from service.outbound.tables import MessageKind

SOURCE_TARGET_PREFIX = "source:"
# Resolutions that need no word to the platform: the comment is gone.
_SILENT_RESOLUTIONS = (Resolution.comment_deleted.value,)


def source_target(slug: str) -> str:
    """The outbox target of a source's callback."""
    return SOURCE_TARGET_PREFIX + slug


def capabilities(source: Source) -> list[str]:
    """What Switchboard can do on this source's platform (the generic connector: everything, once it has a
    callback URL; without one it only receives)."""
    if not source.callback_url:
        return ["receive"]
    return ["receive", "reply", "hold", "release", "reject", "resolve"]


def _event(kind: MessageKind, now: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind.value, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}


async def _comment_ref(session: AsyncSession, comment_id: uuid.UUID) -> tuple[Comment, dict[str, Any]]:
    comment = await session.get(Comment, comment_id)
    assert comment is not None  # an item's comment is never removed, only marked deleted
    thread = await session.get(Thread, comment.thread_id) if comment.thread_id is not None else None
    ref = {
        "id": comment.external_id,
        "thread_id": thread.external_id if thread is not None else None,
        "parent_id": comment.parent_external_id,
    }
    return comment, ref


async def _callback_source(session: AsyncSession, source_id: int) -> Source | None:
    source = await session.get(Source, source_id)
    if source is None or source.deleted_at is not None or not source.callback_url:
        return None
    return source


async def reply_created(session: AsyncSession, reply: Reply, item: QueueItem, *, now: datetime) -> None:
    """Queue the reply for its platform (or mark it unsent when the source has no callback URL)."""
    source = await _callback_source(session, item.source_id)
    if source is None:
        reply.delivery_state = ReplyDelivery.unsent.value
        session.add(reply)
        return
    comment, ref = await _comment_ref(session, item.comment_id)
    member = await session.get(Member, reply.member_id) if reply.member_id else None
    data = {
        "source": source.slug,
        "item": {"id": str(item.id)},
        "comment": ref,
        "reply": {
            "id": str(reply.id),
            "body": reply.body,
            "author": {"member": reply.member_id, "name": member.name if member is not None else reply.actor},
        },
    }
    target = source_target(source.slug)
    await outbox.emit(
        session, kind=MessageKind.reply_created, target=target, cause=f"reply:{reply.id}",
        payload=_event(MessageKind.reply_created, now, data), now=now, ordering_key=f"{target}:{comment.id}",
        comment_id=comment.id, item_id=item.id, reply_id=reply.id,
    )  # fmt: skip


def _decisions(item: QueueItem, before_state: str | None) -> list[MessageKind]:
    """The platform events an item's change means (before_state None: the item was just created)."""
    state = item.state
    if before_state is None:
        return [MessageKind.comment_held] if state == ItemState.held.value else []
    if before_state == state:
        return []
    found: list[MessageKind] = []
    if state == ItemState.held.value:
        found.append(MessageKind.comment_held)
    elif before_state == ItemState.held.value:
        closed = state in CLOSED_STATES
        found.append(MessageKind.comment_rejected if closed else MessageKind.comment_released)
    elif item.resolution == Resolution.spam.value and state in CLOSED_STATES:
        found.append(MessageKind.comment_rejected)
    if (
        state in CLOSED_STATES
        and before_state in WAITING_STATES
        and item.resolution not in _SILENT_RESOLUTIONS
        and before_state != ItemState.held.value
    ):
        found.append(MessageKind.item_resolved)
    return found


async def item_changed(
    session: AsyncSession, item: QueueItem, *, before_state: str | None, actor: str, now: datetime
) -> None:
    """Queue the platform events of an item's change (called for every audited transition)."""
    kinds = _decisions(item, before_state)
    if not kinds:
        return
    source = await _callback_source(session, item.source_id)
    if source is None:
        return
    comment, ref = await _comment_ref(session, item.comment_id)
    target = source_target(source.slug)
    for kind in kinds:
        data: dict[str, Any] = {
            "source": source.slug,
            "item": {"id": str(item.id), "state": item.state, "resolution": item.resolution},
            "comment": ref,
            "actor": actor,
        }
        if kind == MessageKind.comment_held:
            data["reason"] = item.reason
        await outbox.emit(
            session, kind=kind, target=target, cause=f"{kind.value}:{item.id}:{now.isoformat()}",
            payload=_event(kind, now, data), now=now, ordering_key=f"{target}:{comment.id}", comment_id=comment.id,
            item_id=item.id,
        )  # fmt: skip


async def echo_of(session: AsyncSession, *, source_id: int, external_id: str, marker: str | None) -> uuid.UUID | None:
    """The reply a new comment echoes: by the marker the platform passed back (our reply id), or by the id the
    platform gave the reply when we delivered it. None: an ordinary comment."""
    if marker is not None:
        try:
            reply_id = uuid.UUID(marker)
        except ValueError:
            reply_id = None
        if reply_id is not None:
            found = (
                await session.execute(
                    sa.select(col(Reply.id))
                    .join(QueueItem, col(QueueItem.id) == col(Reply.item_id))
                    .where(col(Reply.id) == reply_id, col(QueueItem.source_id) == source_id)
                )
            ).scalar_one_or_none()
            if found is not None:
                return found
    return (
        await session.execute(
            sa.select(col(Reply.id))
            .join(QueueItem, col(QueueItem.id) == col(Reply.item_id))
            .where(col(Reply.external_id) == external_id, col(QueueItem.source_id) == source_id)
            .limit(1)
        )
    ).scalar_one_or_none()
