"""Notifications: which item changes tell whom, through which channel and when, batched into one message per
recipient per burst, with no personal data from the comment in what is sent."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col

from service.database import SessionFactory, create_engine, create_session_factory, transaction
from service.items import transitions as items
from service.models import Comment, CommentAnalysis, ItemState, Member, QueueItem, Source, Team, TeamMember
from service.notifications import admin, batching, channels, events
from service.notifications.admin import PreferenceIn, SubscriptionIn
from service.notifications.channels import ChannelIn, EmailConfig, UrlConfig
from service.notifications.tables import Notification, NotificationEvent
from service.outbound.tables import ChannelKind, MessageKind, OutboundMessage
from service.settings import Settings
from tests.clock import FakeClock
from tests.conftest import make_settings
from tests.queue_seed import seed_items

ACTOR = "test"
PII_BODY = (
    "My payslip is wrong again, please call me on +44 20 7946 0958 or write to jane.doe@example.com "
    "before Friday - Jane"
)


@pytest.fixture
async def factory(database_url: str) -> AsyncIterator[SessionFactory]:
    """A migrated database with a source, three members with addresses (hr1, hr2 in team hr; boss alone) and one
    member without an address (nomail, in hr)."""
    engine = create_engine(database_url)
    made = create_session_factory(engine)
    async with transaction(made) as session:
        session.add(Source(slug="intranet", name="Intranet", kind="standard", secret="whsec_AAAA"))
        for member_id in ("hr1", "hr2", "boss"):
            session.add(Member(id=member_id, name=member_id.title(), email=f"{member_id}@corp.example"))
        session.add(Member(id="nomail", name="No Mail"))
        session.add(Team(id="hr", name="HR", lead_id="boss"))
        await session.flush()
        for position, member_id in enumerate(("hr1", "hr2", "nomail")):
            session.add(TeamMember(team_id="hr", member_id=member_id, position=position))
    yield made
    await engine.dispose()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url, public_base_url="https://switchboard.example/", notify_quiet_seconds=10,
                         notify_batch_seconds=60)  # fmt: skip


async def add_channel(factory: SessionFactory, channel_id: str, kind: ChannelKind, now: datetime) -> None:
    config: EmailConfig | UrlConfig
    if kind == ChannelKind.email:
        config = EmailConfig(host="smtp.corp.example", from_address="switchboard@corp.example")
    else:
        config = UrlConfig(url=f"https://hooks.example/{channel_id}/T0KEN")
    async with transaction(factory) as session:
        await channels.create(
            session, data=ChannelIn(id=channel_id, name=channel_id, kind=kind, config=config), actor=ACTOR, now=now
        )


async def subscribe(
    factory: SessionFactory, channel: str, evts: list[NotificationEvent], now: datetime, **scope: str
) -> None:
    async with transaction(factory) as session:
        await admin.create_subscription(
            session, data=SubscriptionIn(channel=channel, events=evts, **scope), actor=ACTOR, now=now
        )


async def new_items(
    factory: SessionFactory, now: datetime, count: int = 1, *, body: str | None = None, **owner: Any
) -> list[uuid.UUID]:
    """Open items as routing creates them, each reported to `item_changed` as created."""
    async with transaction(factory) as session:
        ids = await seed_items(session, source="intranet", count=count, now=now, **owner)
        if body is not None:
            await session.execute(
                sa.update(Comment)
                .where(col(Comment.id).in_(sa.select(col(QueueItem.comment_id)).where(col(QueueItem.id).in_(ids))))
                .values(body=body)
            )
        for item_id in ids:
            item = await session.get(QueueItem, item_id)
            assert item is not None
            await events.item_changed(session, item, action="created", before=None, now=now)
    return ids


async def change(factory: SessionFactory, item_id: uuid.UUID, action: str, now: datetime, **changes: Any) -> None:
    """An item transition, reported to `item_changed` as items.transition reports it."""
    async with transaction(factory) as session:
        item = await session.get(QueueItem, item_id)
        assert item is not None
        before = items.audit_view(item)
        for name, value in changes.items():
            setattr(item, name, value)
        await session.flush()
        await events.item_changed(session, item, action=action, before=before, now=now)


async def pending(factory: SessionFactory) -> list[tuple[str, str, str]]:
    """(channel, recipient, event) of the notifications not yet flushed."""
    async with factory() as session:
        rows = await session.execute(
            sa.select(Notification).where(col(Notification.flushed_at).is_(None)).order_by(col(Notification.id))
        )
        return [(n.channel_id, n.recipient, n.event) for n in rows.scalars()]


async def messages(factory: SessionFactory) -> list[OutboundMessage]:
    async with factory() as session:
        rows = await session.execute(sa.select(OutboundMessage).order_by(col(OutboundMessage.id)))
        return list(rows.scalars())


def texts(message: OutboundMessage) -> str:
    return json.dumps(message.payload, ensure_ascii=False)


# ---- who is told ---------------------------------------------------------------------------------------------


async def test_nothing_is_recorded_when_nothing_is_subscribed(factory: SessionFactory, clock: FakeClock) -> None:
    await new_items(factory, clock(), 3, team="hr")
    assert await pending(factory) == []


async def test_a_team_subscription_tells_each_team_member_with_an_address_and_a_chat_channel_once(
    factory: SessionFactory, clock: FakeClock
) -> None:
    now = clock()
    await add_channel(factory, "mail", ChannelKind.email, now)
    await add_channel(factory, "slack-hr", ChannelKind.slack, now)
    await subscribe(factory, "mail", [NotificationEvent.item_assigned], now, team="hr")
    await subscribe(factory, "slack-hr", [NotificationEvent.item_assigned], now, team="hr")
    await new_items(factory, now, 1, team="hr")
    await new_items(factory, now, 1, team=None, member="boss")  # not the team's: nobody subscribed to it

    assert sorted(await pending(factory)) == [
        ("mail", "hr1", "item.assigned"),
        ("mail", "hr2", "item.assigned"),  # nomail has no address
        ("slack-hr", "*", "item.assigned"),
    ]


async def test_a_member_subscription_follows_the_items_they_own(factory: SessionFactory, clock: FakeClock) -> None:
    now = clock()
    await add_channel(factory, "mail", ChannelKind.email, now)
    await subscribe(factory, "mail", list(NotificationEvent), now, member="hr2")
    [mine] = await new_items(factory, now, 1, team="hr", member="hr2")
    [other] = await new_items(factory, now, 1, team="hr", member="hr1")
    await change(factory, other, "reassigned", now + timedelta(seconds=1), member_id="hr2")

    assert await pending(factory) == [("mail", "hr2", "item.assigned"), ("mail", "hr2", "item.assigned")]
    async with factory() as session:
        told = (await session.execute(sa.select(col(Notification.item_id)))).scalars().all()
    assert sorted(told) == sorted([mine, other])


async def test_an_everything_subscription_emails_the_owner_else_the_team(
    factory: SessionFactory, clock: FakeClock
) -> None:
    now = clock()
    await add_channel(factory, "mail", ChannelKind.email, now)
    await subscribe(factory, "mail", [NotificationEvent.item_assigned], now)
    await new_items(factory, now, 1, member="boss")
    await new_items(factory, now, 1, team="hr")
    assert sorted(await pending(factory)) == [
        ("mail", "boss", "item.assigned"),
        ("mail", "hr1", "item.assigned"),
        ("mail", "hr2", "item.assigned"),
    ]


async def test_each_change_maps_to_its_event(factory: SessionFactory, clock: FakeClock) -> None:
    now = clock()
    await add_channel(factory, "hook", ChannelKind.webhook, now)
    await subscribe(factory, "hook", list(NotificationEvent), now)
    [held] = await new_items(factory, now, 1, team="hr", state=ItemState.held)
    [item] = await new_items(factory, now, 1, team="hr")
    later = [now + timedelta(seconds=s) for s in range(1, 8)]
    await change(factory, held, "approved", later[0], state=ItemState.open.value, team_id="hr")
    await change(factory, item, "sla_reminder", later[1], reminded_at=later[1])
    await change(factory, item, "escalated", later[2], state=ItemState.escalated.value, member_id="boss")
    await change(factory, item, "claimed", later[3], state=ItemState.claimed.value, claimed_by="boss")
    await change(factory, item, "answered", later[4], state=ItemState.answered.value)
    await change(factory, item, "reopened", later[5], state=ItemState.open.value)
    await change(factory, item, "rerouted", later[6], state=ItemState.held.value)

    assert [e for _, _, e in await pending(factory)] == [
        "comment.held", "item.assigned", "comment.approved", "item.sla_reminder", "item.escalated",
        "item.reopened", "comment.held",
    ]  # fmt: skip


async def test_the_same_change_reported_twice_is_recorded_once(factory: SessionFactory, clock: FakeClock) -> None:
    now = clock()
    await add_channel(factory, "mail", ChannelKind.email, now)
    await subscribe(factory, "mail", [NotificationEvent.item_reopened], now, member="hr1")
    [item] = await new_items(factory, now, 1, member="hr1")
    for _ in range(2):
        async with transaction(factory) as session:
            row = await session.get(QueueItem, item)
            assert row is not None
            await events.item_changed(session, row, action="reopened", before=items.audit_view(row), now=now)
    assert await pending(factory) == [("mail", "hr1", "item.reopened")]


async def test_inactive_or_deleted_channels_and_unsubscribed_events_tell_nobody(
    factory: SessionFactory, clock: FakeClock
) -> None:
    now = clock()
    for channel_id in ("off", "gone", "mail"):
        await add_channel(factory, channel_id, ChannelKind.email, now)
        await subscribe(factory, channel_id, [NotificationEvent.item_escalated], now, team="hr")
    async with transaction(factory) as session:
        await channels.update(
            session, channel_id="off", data=channels.ChannelUpdate(active=False), actor=ACTOR, now=now
        )
        await channels.delete(session, channel_id="gone", actor=ACTOR, now=now)
    await new_items(factory, now, 2, team="hr")  # item.assigned: not subscribed
    assert await pending(factory) == []


# ---- preferences ---------------------------------------------------------------------------------------------


async def test_preferences_filter_events_and_channels_for_email(factory: SessionFactory, clock: FakeClock) -> None:
    now = clock()
    await add_channel(factory, "mail", ChannelKind.email, now)
    await add_channel(factory, "mail2", ChannelKind.email, now)
    for channel_id in ("mail", "mail2"):
        await subscribe(factory, channel_id, list(NotificationEvent), now, team="hr")
    async with transaction(factory) as session:
        # hr1 wants only escalations; hr2 only through mail2.
        await admin.put_preferences(
            session, member_id="hr1", data=PreferenceIn(events=[NotificationEvent.item_escalated]), actor=ACTOR,
            now=now,
        )  # fmt: skip
        await admin.put_preferences(session, member_id="hr2", data=PreferenceIn(channels=["mail2"]), actor=ACTOR,
                                    now=now)  # fmt: skip
    [item] = await new_items(factory, now, 1, team="hr")
    await change(factory, item, "escalated", now + timedelta(seconds=1), state=ItemState.escalated.value)
    assert await pending(factory) == [
        ("mail2", "hr2", "item.assigned"),
        ("mail", "hr1", "item.escalated"),
        ("mail2", "hr1", "item.escalated"),
        ("mail2", "hr2", "item.escalated"),
    ]


def test_the_next_digest_is_the_coming_digest_hour_in_utc() -> None:
    assert events.next_digest(datetime(2026, 3, 2, 7, 59, tzinfo=UTC), 8) == datetime(2026, 3, 2, 8, tzinfo=UTC)
    assert events.next_digest(datetime(2026, 3, 2, 8, 0, tzinfo=UTC), 8) == datetime(2026, 3, 3, 8, tzinfo=UTC)
    assert events.next_digest(datetime(2026, 3, 2, 23, 30, tzinfo=UTC), 0) == datetime(2026, 3, 3, 0, tzinfo=UTC)


async def test_a_digest_member_gets_one_message_at_their_hour(factory: SessionFactory, settings: Settings) -> None:
    now = datetime(2026, 3, 2, 9, 15, tzinfo=UTC)
    await add_channel(factory, "mail", ChannelKind.email, now)
    await subscribe(factory, "mail", [NotificationEvent.item_assigned], now, team="hr")
    async with transaction(factory) as session:
        await admin.put_preferences(
            session, member_id="hr1", data=PreferenceIn(digest=True, digest_hour=7), actor=ACTOR, now=now
        )
    # hr2 (no digest) gets a message per burst; hr1's wait for 07:00 UTC the next day.
    for minutes in (0, 90, 600):
        await new_items(factory, now + timedelta(minutes=minutes), 2, team="hr")
        await batching.flush(factory, settings=settings, now=now + timedelta(minutes=minutes + 2))
    await batching.flush(factory, settings=settings, now=datetime(2026, 3, 3, 6, 59, tzinfo=UTC))
    assert [m.payload["to"] for m in await messages(factory)] == [["hr2@corp.example"]] * 3
    await batching.flush(factory, settings=settings, now=datetime(2026, 3, 3, 7, 0, tzinfo=UTC))
    sent = await messages(factory)
    assert [m.payload["to"] for m in sent[3:]] == [["hr1@corp.example"]]
    assert "6 notifications" in sent[3].payload["subject"]
    assert await pending(factory) == []


# ---- batching ------------------------------------------------------------------------------------------------


async def test_fifty_items_for_a_team_within_a_minute_are_one_message_per_subscriber(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    start = clock()
    await add_channel(factory, "mail", ChannelKind.email, start)
    await add_channel(factory, "slack-hr", ChannelKind.slack, start)
    await add_channel(factory, "teams-hr", ChannelKind.teams, start)
    for channel_id in ("mail", "slack-hr", "teams-hr"):
        await subscribe(factory, channel_id, [NotificationEvent.item_assigned], start, team="hr")
    for i in range(50):  # one a second: the burst never goes quiet for 10 s, so the 60 s window closes it
        at = start + timedelta(seconds=i)
        await new_items(factory, at, 1, team="hr")
        assert await batching.flush(factory, settings=settings, now=at) == 0
    assert await batching.flush(factory, settings=settings, now=start + timedelta(seconds=60)) == 4
    assert await batching.flush(factory, settings=settings, now=start + timedelta(seconds=61)) == 0  # idempotent

    sent = await messages(factory)
    assert sorted((m.target, tuple(m.payload.get("to", ()))) for m in sent) == [
        ("channel:mail", ("hr1@corp.example",)),
        ("channel:mail", ("hr2@corp.example",)),
        ("channel:slack-hr", ()),
        ("channel:teams-hr", ()),
    ]
    assert {m.kind for m in sent} == {MessageKind.notification.value}
    assert all(m.item_id is None for m in sent)  # many items
    mail = next(m for m in sent if m.target == "channel:mail")
    assert mail.payload["subject"] == "[Switchboard] 50 notifications"
    assert "and 30 more" in mail.payload["text"]
    slack = next(m for m in sent if m.target == "channel:slack-hr")
    assert len(slack.payload["blocks"]) <= 50
    async with factory() as session:
        unsent = await session.execute(sa.select(sa.func.count()).where(col(Notification.message_id).is_(None)))
        assert unsent.scalar_one() == 0


async def test_a_quiet_burst_is_sent_after_the_quiet_window_and_carries_the_item(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    start = clock()
    await add_channel(factory, "mail", ChannelKind.email, start)
    await subscribe(factory, "mail", [NotificationEvent.item_assigned], start, member="boss")
    [item] = await new_items(factory, start, 1, member="boss")
    assert await batching.flush(factory, settings=settings, now=start + timedelta(seconds=9)) == 0
    assert await batching.flush(factory, settings=settings, now=start + timedelta(seconds=10)) == 1
    [message] = await messages(factory)
    assert message.item_id == item
    assert message.cause.startswith("notify:")
    assert f"https://switchboard.example/v1/queue/{item}" in message.payload["text"]
    assert "seeded" in message.payload["text"]  # the routing reason
    assert "Seeded question number 0?" in message.payload["text"]


async def test_notifications_whose_channel_went_away_are_dropped_not_sent(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    start = clock()
    await add_channel(factory, "hook", ChannelKind.webhook, start)
    await subscribe(factory, "hook", [NotificationEvent.item_assigned], start)
    await new_items(factory, start, 2, team="hr")
    async with transaction(factory) as session:
        await channels.delete(session, channel_id="hook", actor=ACTOR, now=start)
    assert await batching.flush(factory, settings=settings, now=start + timedelta(minutes=5)) == 0
    assert await pending(factory) == []
    assert await messages(factory) == []


# ---- what a message says -------------------------------------------------------------------------------------


async def test_no_email_address_or_phone_number_from_a_comment_reaches_any_channel(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    start = clock()
    for channel_id, kind in (("mail", ChannelKind.email), ("slack-hr", ChannelKind.slack),
                             ("teams-hr", ChannelKind.teams), ("hook", ChannelKind.webhook)):  # fmt: skip
        await add_channel(factory, channel_id, kind, start)
        await subscribe(factory, channel_id, [NotificationEvent.item_assigned], start, member="hr1")
    [item] = await new_items(factory, start, 1, member="hr1", team="hr", body=PII_BODY)
    assert await batching.flush(factory, settings=settings, now=start + timedelta(seconds=30)) == 4

    sent = await messages(factory)
    assert len(sent) == 4
    for message in sent:
        text = texts(message)
        for secret in ("jane.doe@example.com", "jane.doe", "+44 20", "7946 0958"):
            assert secret not in text, (message.target, secret)
        assert "[EMAIL]" in text
        assert "[PHONE]" in text
        assert "payslip" in text
    assert sent[0].item_id == item


async def test_stored_pii_spans_are_redacted_even_where_the_detectors_would_not_look(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    """Processing finds national numbers with the deployment's region; the excerpt uses what it stored."""
    start = clock()
    await add_channel(factory, "mail", ChannelKind.email, start)
    await subscribe(factory, "mail", [NotificationEvent.item_assigned], start, member="hr1")
    body = "Call 020 7946 0958 after six"
    [item] = await new_items(factory, start, 1, member="hr1", body=body)
    async with transaction(factory) as session:
        row = await session.get(QueueItem, item)
        assert row is not None
        session.add(CommentAnalysis(comment_id=row.comment_id, comment_version=1, model_version="t", embedding=b"",
                                    pii=[{"kind": "phone", "start": 5, "end": 18}], processed_at=start))  # fmt: skip
    await batching.flush(factory, settings=settings, now=start + timedelta(seconds=30))
    [message] = await messages(factory)
    assert "7946" not in texts(message)
    assert "Call [PHONE] after six" in message.payload["text"]


async def test_slack_has_a_top_level_text_and_escapes_user_text(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    start = clock()
    await add_channel(factory, "slack-hr", ChannelKind.slack, start)
    await subscribe(factory, "slack-hr", [NotificationEvent.item_assigned], start)
    await new_items(factory, start, 1, team="hr", body="<!channel> Tom & Jerry <https://evil.example|click>")
    await batching.flush(factory, settings=settings, now=start + timedelta(seconds=30))
    [message] = await messages(factory)
    payload = message.payload
    assert isinstance(payload["text"], str)
    assert payload["text"]
    assert payload["blocks"][0]["type"] == "header"
    section = payload["blocks"][1]["text"]["text"]
    assert "&lt;!channel&gt; Tom &amp; Jerry &lt;https://evil.example|click&gt;" in section
    assert "<!channel>" not in texts(message)


async def test_teams_gets_an_adaptive_card_in_a_workflows_message(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    start = clock()
    await add_channel(factory, "teams-hr", ChannelKind.teams, start)
    await subscribe(factory, "teams-hr", [NotificationEvent.item_assigned], start)
    [item] = await new_items(factory, start, 1, team="hr")
    await batching.flush(factory, settings=settings, now=start + timedelta(seconds=30))
    [message] = await messages(factory)
    payload = message.payload
    assert payload["type"] == "message"
    [attachment] = payload["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert card["body"][0]["type"] == "TextBlock"
    assert card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open the item", "url": f"https://switchboard.example/v1/queue/{item}"}
    ]


async def test_a_webhook_channel_gets_a_notification_event(
    factory: SessionFactory, settings: Settings, clock: FakeClock
) -> None:
    start = clock()
    await add_channel(factory, "hook", ChannelKind.webhook, start)
    await subscribe(factory, "hook", [NotificationEvent.comment_held], start)
    [item] = await new_items(factory, start, 1, team="hr", state=ItemState.held)
    await batching.flush(factory, settings=settings, now=start + timedelta(seconds=30))
    [message] = await messages(factory)
    assert message.payload["type"] == "notification"
    assert datetime.fromisoformat(message.payload["timestamp"])
    data = message.payload["data"]
    assert data["recipient"] == "*"
    assert [(e["event"], e["item_id"]) for e in data["events"]] == [("comment.held", str(item))]
    assert data["events"][0]["due_at"] is not None
