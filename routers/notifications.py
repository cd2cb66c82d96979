"""Admin and member API: notification channels, subscriptions (who hears of what) and members' preferences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from routers.deps import AdminDep, ClockDep, SessionDep, StaffDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.notifications import admin, channels
from service.notifications.admin import (
    PreferenceIn,
    PreferencePublic,
    SubscriptionFilter,
    SubscriptionIn,
    SubscriptionPage,
    SubscriptionPublic,
)
from service.notifications.channels import ChannelCreated, ChannelIn, ChannelPublic, ChannelUpdate
from service.pagination import ColumnInt

admin_channels = api_router(
    prefix="/v1/admin/channels", tags=["admin: notifications"], responses=problem_responses(401, 403)
)
admin_subscriptions = api_router(
    prefix="/v1/admin/subscriptions", tags=["admin: notifications"], responses=problem_responses(401, 403)
)
admin_preferences = api_router(
    prefix="/v1/admin/members", tags=["admin: notifications"], responses=problem_responses(401, 403)
)
mine = api_router(prefix="/v1/me", tags=["notifications"], responses=problem_responses(401, 403))


@admin_channels.post("", status_code=201, operation_id="create_channel", responses=problem_responses(409, 422))
async def create_channel(data: ChannelIn, session: SessionDep, admin_key: AdminDep, now: ClockDep) -> ChannelCreated:
    """Add a notification channel; a webhook channel's signing secret is in this response and never shown again."""
    return await channels.create(session, data=data, actor=admin_key.actor, now=now)


@admin_channels.get("", operation_id="list_channels")
async def list_channels(session: SessionDep, _admin: AdminDep) -> list[ChannelPublic]:
    """Every channel (never its secrets)."""
    return await channels.list_all(session)


@admin_channels.get("/{channel_id}", operation_id="get_channel", responses=problem_responses(404))
async def get_channel(channel_id: str, session: SessionDep, _admin: AdminDep) -> ChannelPublic:
    """One channel (never its secrets)."""
    return await channels.read(session, channel_id=channel_id)


@admin_channels.patch("/{channel_id}", operation_id="update_channel", responses=problem_responses(404, 422))
async def update_channel(
    channel_id: str, data: ChannelUpdate, session: SessionDep, admin_key: AdminDep, now: ClockDep
) -> ChannelPublic:
    """Rename a channel, switch it off and on, or change its configuration."""
    return await channels.update(session, channel_id=channel_id, data=data, actor=admin_key.actor, now=now)


@admin_channels.delete(
    "/{channel_id}", status_code=204, operation_id="delete_channel", responses=problem_responses(404)
)
async def delete_channel(channel_id: str, session: SessionDep, admin_key: AdminDep, now: ClockDep) -> Response:
    """Retire a channel: its secrets are erased and its subscriptions removed."""
    await channels.delete(session, channel_id=channel_id, actor=admin_key.actor, now=now)
    return Response(status_code=204)


@admin_subscriptions.post("", status_code=201, operation_id="create_subscription", responses=problem_responses(422))
async def create_subscription(
    data: SubscriptionIn, session: SessionDep, admin_key: AdminDep, now: ClockDep
) -> SubscriptionPublic:
    """Send these events to a channel: for one member's items, one team's items, or every item."""
    return await admin.create_subscription(session, data=data, actor=admin_key.actor, now=now)


@admin_subscriptions.get("", operation_id="list_subscriptions", responses=problem_responses(422))
async def list_subscriptions(
    query: Annotated[SubscriptionFilter, Query()], session: SessionDep, _admin: AdminDep
) -> SubscriptionPage:
    """Subscriptions, by id; cursor pagination."""
    return await admin.list_subscriptions(session, query=query)


@admin_subscriptions.delete(
    "/{subscription_id}", status_code=204, operation_id="delete_subscription", responses=problem_responses(404, 422)
)
async def delete_subscription(
    subscription_id: ColumnInt, session: SessionDep, admin_key: AdminDep, now: ClockDep
) -> Response:
    """Remove a subscription."""
    await admin.delete_subscription(session, subscription_id=subscription_id, actor=admin_key.actor, now=now)
    return Response(status_code=204)


@admin_preferences.get(
    "/{member_id}/notification-preferences", operation_id="get_member_notification_preferences",
    responses=problem_responses(404),
)  # fmt: skip
async def get_member_preferences(member_id: str, session: SessionDep, _admin: AdminDep) -> PreferencePublic:
    """A member's notification preferences."""
    return await admin.read_preferences(session, member_id=member_id)


@admin_preferences.put(
    "/{member_id}/notification-preferences", operation_id="put_member_notification_preferences",
    responses=problem_responses(404, 422),
)  # fmt: skip
async def put_member_preferences(
    member_id: str, data: PreferenceIn, session: SessionDep, admin_key: AdminDep, now: ClockDep
) -> PreferencePublic:
    """Replace a member's notification preferences."""
    return await admin.put_preferences(session, member_id=member_id, data=data, actor=admin_key.actor, now=now)


@mine.get("/notification-preferences", operation_id="get_my_notification_preferences", responses=problem_responses(409))
async def get_my_preferences(session: SessionDep, principal: StaffDep) -> PreferencePublic:
    """My notification preferences (a key bound to a member)."""
    return await admin.read_my_preferences(session, member_id=principal.member_id)


@mine.put(
    "/notification-preferences", operation_id="put_my_notification_preferences", responses=problem_responses(409, 422)
)
async def put_my_preferences(
    data: PreferenceIn, session: SessionDep, principal: StaffDep, now: ClockDep
) -> PreferencePublic:
    """Replace my notification preferences: which events, which e-mail channels, a daily digest."""
    return await admin.put_my_preferences(
        session, member_id=principal.member_id, data=data, actor=principal.actor, now=now
    )


router = api_router()
router.include_router(admin_channels)
router.include_router(admin_subscriptions)
router.include_router(admin_preferences)
router.include_router(mine)
