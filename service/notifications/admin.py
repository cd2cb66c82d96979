"""Admin and member use cases for who is told what: subscriptions (channel x events x member | team | everything)
and members' preferences (which events, which channels, a daily digest)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.database import insert_ignore, table
from service.errors import InvalidPayload, InvalidState, NotFound
from service.models import Member, Team
from service.models.directory import ID_PATTERN
from service.models.source import SLUG_PATTERN
from service.notifications.channels import SUBSCRIPTIONS_CACHE
from service.notifications.tables import DEFAULT_DIGEST_HOUR, NotificationEvent, Preference, Subscription
from service.outbound.tables import Channel
from service.pagination import ColumnInt, decode_cursor, encode_cursor

MAX_PAGE = 500
_CURSOR: TypeAdapter[tuple[int]] = TypeAdapter(tuple[ColumnInt])  # the last subscription's id


# ---- schemas --------------------------------------------------------------------------------------------------


class SubscriptionIn(BaseModel):
    """Body of POST /v1/admin/subscriptions: a channel hears of `events` for one member's items, one team's items,
    or (neither) every item."""

    model_config = ConfigDict(extra="forbid")

    channel: str = Field(pattern=SLUG_PATTERN, description="The channel's id.")
    events: list[NotificationEvent] = Field(min_length=1, max_length=len(NotificationEvent))
    member: str | None = Field(None, pattern=ID_PATTERN, description="Only items owned by this member.")
    team: str | None = Field(None, pattern=ID_PATTERN, description="Only items of this team.")

    @model_validator(mode="after")
    def _one_scope(self) -> SubscriptionIn:
        if self.member is not None and self.team is not None:
            raise ValueError("Name a member or a team (or neither, for every item), not both.")
        if len(set(self.events)) != len(self.events):
            raise ValueError("events: each event once.")
        return self


class SubscriptionFilter(BaseModel):
    """Query of GET /v1/admin/subscriptions."""

    model_config = ConfigDict(extra="forbid")

    channel: str | None = None
    member: str | None = None
    team: str | None = None
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(None, description="`next_cursor` of the previous page.")


class SubscriptionPublic(BaseModel):
    """A subscription."""

    id: int
    channel: str
    events: list[NotificationEvent]
    member: str | None
    team: str | None
    created_at: datetime
    updated_at: datetime


class SubscriptionPage(BaseModel):
    """One page of subscriptions, by id."""

    items: list[SubscriptionPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; None on the last page.")


class PreferenceIn(BaseModel):
    """Body of PUT .../notification-preferences: replaces the member's preferences (for e-mail notifications)."""

    model_config = ConfigDict(extra="forbid")

    events: list[NotificationEvent] | None = Field(None, description="Only these events; null: every event.")
    channels: list[Annotated[str, Field(pattern=SLUG_PATTERN)]] | None = Field(
        None, max_length=100, description="Only these e-mail channels (ids); null: every channel."
    )
    digest: bool = Field(False, strict=True, description="One message a day at `digest_hour` instead of per burst.")
    digest_hour: int = Field(DEFAULT_DIGEST_HOUR, ge=0, le=23, strict=True, description="Hour of the digest, UTC.")


class PreferencePublic(BaseModel):
    """A member's notification preferences (the defaults when they never set any)."""

    member: str
    events: list[NotificationEvent] | None
    channels: list[str] | None
    digest: bool
    digest_hour: int
    updated_at: datetime | None = Field(description="When they were last set; null: never (the defaults).")


# ---- subscriptions --------------------------------------------------------------------------------------------


def _subscription_public(sub: Subscription) -> SubscriptionPublic:
    assert sub.id is not None  # a stored row has its id
    return SubscriptionPublic(
        id=sub.id, channel=sub.channel_id, events=[NotificationEvent(e) for e in sub.events], member=sub.member_id,
        team=sub.team_id, created_at=sub.created_at, updated_at=sub.updated_at,
    )  # fmt: skip


def _subscription_audit(sub: Subscription) -> dict[str, Any]:
    return {"channel": sub.channel_id, "events": sub.events, "member": sub.member_id, "team": sub.team_id}


async def _live(session: AsyncSession, model: type[Channel] | type[Member] | type[Team], entity_id: str) -> bool:
    found = await session.execute(
        sa.select(col(model.id)).where(col(model.id) == entity_id, col(model.deleted_at).is_(None))
    )
    return found.first() is not None


async def create_subscription(
    session: AsyncSession, *, data: SubscriptionIn, actor: str, now: datetime
) -> SubscriptionPublic:
    """Subscribe a live channel to events (for a live member's or team's items, or every item)."""
    if not await _live(session, Channel, data.channel):
        raise InvalidPayload(f"channel: there is no channel '{data.channel}'.")
    if data.member is not None and not await _live(session, Member, data.member):
        raise InvalidPayload(f"member: there is no member '{data.member}'.")
    if data.team is not None and not await _live(session, Team, data.team):
        raise InvalidPayload(f"team: there is no team '{data.team}'.")
    sub = Subscription(
        channel_id=data.channel, events=[e.value for e in data.events], member_id=data.member, team_id=data.team,
        created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(sub)
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="notification_subscription.created",
        target_type="notification_subscription", target_id=str(sub.id), after=_subscription_audit(sub),
    )  # fmt: skip
    session.info.pop(SUBSCRIPTIONS_CACHE, None)
    return _subscription_public(sub)


async def list_subscriptions(session: AsyncSession, *, query: SubscriptionFilter) -> SubscriptionPage:
    """Subscriptions matching every given filter, by id; cursor pagination."""
    stmt = sa.select(Subscription).order_by(col(Subscription.id)).limit(query.limit + 1)
    if query.channel is not None:
        stmt = stmt.where(col(Subscription.channel_id) == query.channel)
    if query.member is not None:
        stmt = stmt.where(col(Subscription.member_id) == query.member)
    if query.team is not None:
        stmt = stmt.where(col(Subscription.team_id) == query.team)
    if query.cursor is not None:
        (after,) = decode_cursor(_CURSOR, query.cursor)
        stmt = stmt.where(col(Subscription.id) > after)
    rows = list((await session.execute(stmt)).scalars())
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = None
    if more:
        assert page[-1].id is not None
        next_cursor = encode_cursor(_CURSOR, (page[-1].id,))
    return SubscriptionPage(items=[_subscription_public(s) for s in page], next_cursor=next_cursor)


async def delete_subscription(session: AsyncSession, *, subscription_id: int, actor: str, now: datetime) -> None:
    """Remove a subscription."""
    sub = await session.get(Subscription, subscription_id)
    if sub is None:
        raise NotFound(f"There is no subscription {subscription_id}.")
    before = _subscription_audit(sub)
    await session.delete(sub)
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="notification_subscription.deleted",
        target_type="notification_subscription", target_id=str(subscription_id), before=before,
    )  # fmt: skip
    session.info.pop(SUBSCRIPTIONS_CACHE, None)


# ---- preferences ----------------------------------------------------------------------------------------------


def _preference_public(member_id: str, pref: Preference | None) -> PreferencePublic:
    if pref is None:
        return PreferencePublic(
            member=member_id, events=None, channels=None, digest=False, digest_hour=DEFAULT_DIGEST_HOUR,
            updated_at=None,
        )  # fmt: skip
    return PreferencePublic(
        member=member_id, events=[NotificationEvent(e) for e in pref.events] if pref.events is not None else None,
        channels=pref.channels, digest=pref.digest, digest_hour=pref.digest_hour, updated_at=pref.updated_at,
    )  # fmt: skip


def _preference_audit(view: PreferencePublic) -> dict[str, Any]:
    return view.model_dump(mode="json", exclude={"member", "updated_at"})


def _member_of(member_id: str | None) -> str:
    if member_id is None:
        raise InvalidState("Only a key bound to a member has notification preferences (create one with --member).")
    return member_id


async def get_member(session: AsyncSession, member_id: str) -> Member:
    """A live (not deleted) member, or NotFound (read here: the directory's use cases sit above notifications)."""
    member = await session.get(Member, member_id)
    if member is None or member.deleted_at is not None:
        raise NotFound(f"There is no member '{member_id}'.")
    return member


async def read_preferences(session: AsyncSession, *, member_id: str) -> PreferencePublic:
    """A live member's preferences."""
    await get_member(session, member_id)
    return _preference_public(member_id, await session.get(Preference, member_id))


async def read_my_preferences(session: AsyncSession, *, member_id: str | None) -> PreferencePublic:
    """The caller's own preferences (`member_id`: the member the caller's key is bound to; 409 for none)."""
    return await read_preferences(session, member_id=_member_of(member_id))


async def put_preferences(
    session: AsyncSession, *, member_id: str, data: PreferenceIn, actor: str, now: datetime
) -> PreferencePublic:
    """Replace a live member's preferences."""
    await get_member(session, member_id)
    channels = sorted(set(data.channels)) if data.channels is not None else None
    if channels:
        live = set(
            (
                await session.execute(
                    sa.select(col(Channel.id)).where(col(Channel.id).in_(channels), col(Channel.deleted_at).is_(None))
                )
            ).scalars()
        )
        unknown = [c for c in channels if c not in live]
        if unknown:
            raise InvalidPayload(f"channels: there is no channel {', '.join(repr(c) for c in unknown)}.")
    events = sorted({e.value for e in data.events}) if data.events is not None else None
    existing = await session.get(Preference, member_id)
    before = _preference_audit(_preference_public(member_id, existing))
    row = Preference(member_id=member_id, events=events, channels=channels, digest=data.digest,
                     digest_hour=data.digest_hour, updated_at=now)  # fmt: skip
    values = {c: getattr(row, c) for c in ("member_id", "events", "channels", "digest", "digest_hour", "updated_at")}
    # An upsert: two first PUTs at once must not collide on the primary key.
    await insert_ignore(
        session, table(Preference), values, conflict_columns=["member_id"], update_columns=list(values)[1:]
    )
    if existing is not None:
        await session.refresh(existing)
    view = _preference_public(member_id, row)
    await audit.record(
        session, now=now, actor=actor, action="notification_preference.updated", target_type="member",
        target_id=member_id, before=before, after=_preference_audit(view),
    )  # fmt: skip
    return view


async def put_my_preferences(
    session: AsyncSession, *, member_id: str | None, data: PreferenceIn, actor: str, now: datetime
) -> PreferencePublic:
    """Replace the caller's own preferences (`member_id`: the member the caller's key is bound to; 409 for none)."""
    return await put_preferences(session, member_id=_member_of(member_id), data=data, actor=actor, now=now)
