"""The outbox does not grow forever: the reconciler forgets delivered messages and sent notifications after the
retention period, and keeps what is not finished (or dead, for admins to see)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col

from service.database import SessionFactory, create_engine, create_session_factory, transaction
from service.jobs.backends import reconcile
from service.models import Comment, QueueItem, Source
from service.models.base import utcnow
from service.notifications.tables import Notification
from service.outbound.tables import Channel, DeliveryState, MessageKind, OutboundMessage
from tests.conftest import make_settings


@pytest.fixture
async def factory(database_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(database_url)
    yield create_session_factory(engine)
    await engine.dispose()


async def test_reconciler_forgets_old_delivered_messages_and_sent_notifications_but_keeps_dead_and_open_ones(
    factory: SessionFactory, database_url: str
) -> None:
    settings = make_settings(database_url, outbound_retention_days=30)
    now = utcnow()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    async with transaction(factory) as session:
        source = Source(slug="s", name="S", kind="standard", secret="whsec_AAAA")
        session.add(source)
        session.add(Channel(id="mail", name="Mail", kind="email", credentials="{}"))
        await session.flush()
        assert source.id is not None
        comment = Comment(source_id=source.id, external_id="c1", body="?")
        session.add(comment)
        await session.flush()
        item = QueueItem(comment_id=comment.id, source_id=source.id, state="open", priority="normal", rule_id="d",
                         sort_due=now)  # fmt: skip
        session.add(item)
        await session.flush()
        for name, state, at in [
            ("delivered-old", DeliveryState.delivered, old),
            ("delivered-recent", DeliveryState.delivered, recent),
            ("dead-old", DeliveryState.dead, old),
            ("failed-old", DeliveryState.failed, old),
        ]:
            session.add(OutboundMessage(key=name, cause=name, kind=MessageKind.item_resolved.value, target="source:s",
                                        payload={}, state=state.value, available_at=at, created_at=at))  # fmt: skip
        for name, at, flushed in [("sent-old", old, old), ("sent-recent", recent, recent), ("waiting-old", old, None)]:
            session.add(Notification(key=name, channel_id="mail", recipient="*", event="item.assigned",
                                     item_id=item.id, created_at=at, flushed_at=flushed))  # fmt: skip

    async def nothing(_: object) -> None:
        return None

    await reconcile(factory, settings, nothing, now=now)
    async with factory() as session:
        messages = set((await session.execute(sa.select(col(OutboundMessage.key)))).scalars())
        notifications = set((await session.execute(sa.select(col(Notification.key)))).scalars())
    assert messages == {"delivered-recent", "dead-old", "failed-old"}
    assert notifications == {"sent-recent", "waiting-old"}
