"""What a source's platform is told: replies to post, moderation decisions, resolved items (Standard Webhooks
events; the source's connector, `service.connectors`, carries them to the platform: the generic connector POSTs
them to the source's `callback_url`), and how the echo of a delivered reply is recognised.

Events (the body's `type`):
- `reply.created`: a responder answered through Switchboard; the platform posts the reply under the comment and may
  answer `{"external_id": "<the reply's id on the platform>"}`.
- `comment.held`: routing (or a moderator) held the comment for moderation: hide it until released.
- `comment.released`: a held comment was approved: show it.
- `comment.rejected`: a held comment was closed without approval, or a comment was marked spam: keep it hidden.
- `item.resolved`: the item of a comment was closed (answered, answered on the platform, no reply needed, ...).

Every event is an outbox row written in the transaction of its cause, ordered per comment (a release never
overtakes its hold). An event the source's platform cannot take (no callback URL; WordPress has no `item.resolved`)
is not written at all; a reply it cannot take is `unsent`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import connectors
from service.models import (
    Comment,
    ItemState,
    Member,
    MemberIdentity,
    QueueItem,
    Reply,
    ReplyDelivery,
    Resolution,
    Source,
    Thread,
)
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
    """What Switchboard can do on this source's platform, as its connector is configured now."""
    return list(connectors.capabilities(source))


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


async def _sending_source(session: AsyncSession, source_id: int, event_type: MessageKind) -> Source | None:
    """The item's source, if it is live and its platform takes this event."""
    source = await session.get(Source, source_id)
    if source is None or source.deleted_at is not None or not connectors.can_send(source, event_type.value):
        return None
    return source


async def _platform_user(session: AsyncSession, member_id: str | None, source_id: int) -> str | None:
    """The member's user id on the source's platform, if the directory maps one."""
    if member_id is None:
        return None
    found = await session.execute(
        sa.select(col(MemberIdentity.external_id))
        .where(col(MemberIdentity.member_id) == member_id, col(MemberIdentity.source_id) == source_id)
        .order_by(col(MemberIdentity.id))
        .limit(1)
    )
    return found.scalar_one_or_none()


async def reply_created(session: AsyncSession, reply: Reply, item: QueueItem, *, now: datetime) -> None:
    """Queue the reply for its platform (or mark it unsent when the source's platform cannot take replies)."""
    source = await _sending_source(session, item.source_id, MessageKind.reply_created)
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
            "author": {
                "member": reply.member_id,
                "name": member.name if member is not None else reply.actor,
                "platform_user_id": await _platform_user(session, reply.member_id, item.source_id),
            },
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
    source = await session.get(Source, item.source_id)
    if source is None or source.deleted_at is not None:
        return
    kinds = [kind for kind in kinds if connectors.can_send(source, kind.value)]
    if not kinds:
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
