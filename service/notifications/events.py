"""From an item's change to the notifications it causes: which event, who hears of it, through which channel, when.

`item_changed` runs inside every queue item transition (the processing path included), so it costs one query per
session when nothing is subscribed: the live subscriptions are read once and kept in `session.info` (the admin
use cases that change them drop the copy).

Recipients, per subscription whose events include the event:
- `member: X`: items owned by X (`item.member_id`); e-mail goes to X;
- `team: T`: items of team T; e-mail goes to each live member of T with an address;
- neither: every item; e-mail goes to the item's owner, else to its team's members.
A chat or webhook channel is told once per event (recipient '*'). E-mail recipients' preferences apply: the events
and channels they want, and a daily digest (the notification then waits for their digest hour).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.database import dialect_name, table
from service.models import ItemState, Member, QueueItem, Team, TeamMember
from service.models.queue import WAITING_STATES
from service.notifications.channels import SUBSCRIPTIONS_CACHE
from service.notifications.tables import CHANNEL_RECIPIENT, Notification, NotificationEvent, Preference, Subscription
from service.outbound.tables import Channel, ChannelKind

_REASSIGNING = ("reassigned", "rerouted", "unassigned")


@dataclass(frozen=True, slots=True)
class LiveSubscription:
    """A subscription of a live, active channel (what matching needs)."""

    channel_id: str
    email: bool  # an e-mail channel (people) rather than a chat or webhook channel
    events: frozenset[str]
    member_id: str | None
    team_id: str | None


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who one notification is for on one channel."""

    channel_id: str
    recipient: str  # a member id (e-mail) or '*' (the channel)
    member_id: str | None = None
    due_at: datetime | None = None  # the member's digest time; None: batched as it comes


async def live_subscriptions(session: AsyncSession) -> list[LiveSubscription]:
    """The subscriptions of active channels, read once per session."""
    cached: list[LiveSubscription] | None = session.info.get(SUBSCRIPTIONS_CACHE)
    if cached is not None:
        return cached
    rows = await session.execute(
        sa.select(Subscription, col(Channel.kind))
        .join(Channel, col(Channel.id) == col(Subscription.channel_id))
        .where(col(Channel.active).is_(True), col(Channel.deleted_at).is_(None))
        .order_by(col(Subscription.id))
    )
    found = [
        LiveSubscription(
            channel_id=sub.channel_id,
            email=kind == ChannelKind.email.value,
            events=frozenset(sub.events),
            member_id=sub.member_id,
            team_id=sub.team_id,
        )
        for sub, kind in rows.all()
    ]
    session.info[SUBSCRIPTIONS_CACHE] = found
    return found


def events_of(item: QueueItem, *, action: str, before: dict[str, Any] | None) -> list[NotificationEvent]:
    """What an item's change means to the people who own it (nothing, for most changes)."""
    state = item.state
    if before is None:  # created
        if state == ItemState.held:
            return [NotificationEvent.comment_held]
        if state == ItemState.open and (item.member_id or item.team_id):
            return [NotificationEvent.item_assigned]
        return []
    if action == "sla_reminder":
        return [NotificationEvent.item_sla_reminder]
    if action == "escalated":
        return [NotificationEvent.item_escalated]
    if action == "reopened":
        return [NotificationEvent.item_reopened]
    if state == ItemState.held:
        return [NotificationEvent.comment_held] if before.get("state") != ItemState.held else []
    if action == "approved":
        return [NotificationEvent.comment_approved] if state in WAITING_STATES else []
    moved = (before.get("member_id"), before.get("team_id")) != (item.member_id, item.team_id)
    if action in _REASSIGNING and moved and state in WAITING_STATES and (item.member_id or item.team_id):
        return [NotificationEvent.item_assigned]
    return []


def _matches(sub: LiveSubscription, item: QueueItem) -> bool:
    if sub.member_id is not None:
        return item.member_id == sub.member_id
    if sub.team_id is not None:
        return item.team_id == sub.team_id
    return True


async def _team_members(session: AsyncSession, team_id: str) -> list[str]:
    rows = await session.execute(
        sa.select(col(TeamMember.member_id))
        .join(Team, col(Team.id) == col(TeamMember.team_id))
        .where(col(TeamMember.team_id) == team_id, col(Team.deleted_at).is_(None))
        .order_by(col(TeamMember.position))
    )
    return list(rows.scalars())


async def recipients(
    session: AsyncSession, item: QueueItem, event: NotificationEvent, subscriptions: Iterable[LiveSubscription]
) -> tuple[list[Recipient], set[str]]:
    """The channels told once, and (channel, member) pairs for e-mail before preferences; plus the members named."""
    found: dict[tuple[str, str], Recipient] = {}
    members: set[str] = set()
    for sub in subscriptions:
        if event.value not in sub.events or not _matches(sub, item):
            continue
        if not sub.email:
            found.setdefault((sub.channel_id, CHANNEL_RECIPIENT), Recipient(sub.channel_id, CHANNEL_RECIPIENT))
            continue
        if sub.member_id is not None:
            people = [sub.member_id]
        elif sub.team_id is not None:
            people = await _team_members(session, sub.team_id)
        elif item.member_id is not None:
            people = [item.member_id]
        elif item.team_id is not None:
            people = await _team_members(session, item.team_id)
        else:
            people = []
        for person in people:
            found.setdefault((sub.channel_id, person), Recipient(sub.channel_id, person, person))
            members.add(person)
    return list(found.values()), members


def next_digest(now: datetime, hour: int) -> datetime:
    """The next time the clock shows `hour`:00 UTC after `now`."""
    at = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return at if at > now else at + timedelta(days=1)


def notification_key(event: str, item_id: uuid.UUID, recipient: str, channel_id: str, now: datetime) -> str:
    """Stable per cause: the same change reported twice adds nothing."""
    cause = f"{event}|{item_id}|{channel_id}|{recipient}|{now.isoformat()}"
    return hashlib.sha256(cause.encode()).hexdigest()


async def item_changed(
    session: AsyncSession, item: QueueItem, *, action: str, before: dict[str, Any] | None, now: datetime
) -> None:
    """Record the notifications an item's change causes (in the caller's transaction; `before` None: created)."""
    subscriptions = await live_subscriptions(session)
    if not subscriptions:
        return
    events = events_of(item, action=action, before=before)
    if not events:
        return
    for event in events:
        wanted = [s for s in subscriptions if event.value in s.events]
        if not wanted:
            continue
        found, members = await recipients(session, item, event, wanted)
        if members:
            found = await _apply_preferences(session, found, members, event, now)
        await _insert(session, found, event, item, now)


async def _apply_preferences(
    session: AsyncSession, found: list[Recipient], members: set[str], event: NotificationEvent, now: datetime
) -> list[Recipient]:
    """Drop e-mail recipients without a live address or who do not want this; set digest times."""
    reachable = set(
        (
            await session.execute(
                sa.select(col(Member.id)).where(
                    col(Member.id).in_(sorted(members)), col(Member.deleted_at).is_(None),
                    col(Member.email).is_not(None), col(Member.email) != "",
                )
            )
        ).scalars()
    )  # fmt: skip
    preferences = {
        p.member_id: p
        for p in (
            await session.execute(sa.select(Preference).where(col(Preference.member_id).in_(sorted(reachable))))
        ).scalars()
    }
    kept: list[Recipient] = []
    for r in found:
        if r.member_id is None:
            kept.append(r)
            continue
        if r.member_id not in reachable:
            continue
        pref = preferences.get(r.member_id)
        if pref is not None:
            if pref.events is not None and event.value not in pref.events:
                continue
            if pref.channels is not None and r.channel_id not in pref.channels:
                continue
            if pref.digest:
                r = replace(r, due_at=next_digest(now, pref.digest_hour))
        kept.append(r)
    return kept


async def _insert(
    session: AsyncSession, found: list[Recipient], event: NotificationEvent, item: QueueItem, now: datetime
) -> None:
    """One statement for every recipient of the event (this runs in the routing transaction of every item)."""
    if not found:
        return
    rows = [
        {
            "key": notification_key(event.value, item.id, r.recipient, r.channel_id, now),
            "channel_id": r.channel_id,
            "recipient": r.recipient,
            "member_id": r.member_id,
            "event": event.value,
            "item_id": item.id,
            "created_at": now,
            "due_at": r.due_at,
        }
        for r in found
    ]
    dialect = postgresql if dialect_name(session) == "postgresql" else sqlite
    await session.execute(
        dialect.insert(table(Notification)).values(rows).on_conflict_do_nothing(index_elements=["key"])
    )
