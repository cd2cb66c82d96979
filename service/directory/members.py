"""Admin use cases for members (the people who answer): create, list, read, update, delete.

Ids are chosen by the admin and never reused: a deleted member's or team's id stays taken, because the audit
trail, queue items, replies and API keys keep naming it, and a newcomer must not inherit that history. Teams are
`service.directory.teams`; what every directory write shares (one writer at a time) is `service.directory.writes`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.database import table
from service.directory.schemas import (
    ExternalIdIn,
    MemberIn,
    MemberPublic,
    MemberUpdate,
)
from service.directory.teams import get_team, team_audit, team_views
from service.directory.writes import check_id_free, check_not_in_rules, serialise
from service.errors import AlreadyExists, InvalidPayload, InvalidState, NotFound
from service.inputs import set_fields
from service.items import transitions as items
from service.models import ApiKey, Member, MemberIdentity, Source, Team, TeamMember
from service.models.base import to_schema


async def get_member(session: AsyncSession, member_id: str, *, for_update: bool = False) -> Member:
    """A live (not deleted) member, or NotFound."""
    stmt = sa.select(Member).where(col(Member.id) == member_id, col(Member.deleted_at).is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    member = (await session.execute(stmt)).scalar_one_or_none()
    if member is None:
        raise NotFound(f"There is no member '{member_id}'.")
    return member


async def member_teams(session: AsyncSession, member_id: str) -> list[str]:
    """Ids of the live teams a member belongs to, sorted ([] for an unknown or deleted member)."""
    rows = await session.execute(
        sa.select(col(Team.id))
        .join(TeamMember, col(TeamMember.team_id) == col(Team.id))
        .where(col(TeamMember.member_id) == member_id, col(Team.deleted_at).is_(None))
        .order_by(col(Team.id))
    )
    return list(rows.scalars())


async def _external_ids(
    session: AsyncSession, member_ids: sa.ScalarSelect[Any] | list[str]
) -> dict[str, list[ExternalIdIn]]:
    # Ids on a deleted source are left out: its webhooks are refused, so they can never match an author again.
    rows = await session.execute(
        sa.select(col(MemberIdentity.member_id), col(Source.slug), col(MemberIdentity.external_id))
        .join(Source, col(Source.id) == col(MemberIdentity.source_id))
        .where(col(MemberIdentity.member_id).in_(member_ids), col(Source.deleted_at).is_(None))
        .order_by(col(MemberIdentity.id))
    )
    found: dict[str, list[ExternalIdIn]] = defaultdict(list)
    for member_id, slug, external_id in rows:
        found[member_id].append(ExternalIdIn(source=slug, id=external_id))
    return found


async def _teams_of(session: AsyncSession, member_ids: sa.ScalarSelect[Any] | list[str]) -> dict[str, list[str]]:
    rows = await session.execute(
        sa.select(col(TeamMember.member_id), col(Team.id))
        .join(Team, col(Team.id) == col(TeamMember.team_id))
        .where(col(TeamMember.member_id).in_(member_ids), col(Team.deleted_at).is_(None))
        .order_by(col(Team.id))
    )
    found: dict[str, list[str]] = defaultdict(list)
    for member_id, team_id in rows:
        found[member_id].append(team_id)
    return found


async def _member_views(
    session: AsyncSession, members: Sequence[Member], ids: sa.ScalarSelect[Any] | list[str]
) -> list[MemberPublic]:
    """Public views of `members`; `ids` selects their ids (a subquery for lists, so no huge IN lists)."""
    external_ids, teams = await _external_ids(session, ids), await _teams_of(session, ids)
    return [
        to_schema(
            MemberPublic, m, delegate=m.delegate_id, external_ids=external_ids.get(m.id, []), teams=teams.get(m.id, [])
        )
        for m in members
    ]


async def _member_view(session: AsyncSession, member: Member) -> MemberPublic:
    return (await _member_views(session, [member], [member.id]))[0]


def _member_audit(view: MemberPublic) -> dict[str, Any]:
    return view.model_dump(mode="json", exclude={"id", "created_at", "updated_at"})


async def _audit_view(session: AsyncSession, member: Member) -> dict[str, Any]:
    return _member_audit(await _member_view(session, member))


async def _resolve_external_ids(
    session: AsyncSession, external_ids: list[ExternalIdIn], *, member_id: str
) -> list[tuple[int, str]]:
    """(source id, external id) pairs for a member's ids; 422 for unknown sources, 409 for ids taken by others."""
    slugs = sorted({e.source for e in external_ids})
    rows = table(Source).c
    found = await session.execute(sa.select(rows.slug, rows.id).where(rows.slug.in_(slugs), rows.deleted_at.is_(None)))
    sources: dict[str, int] = dict(found.all())
    unknown = [s for s in slugs if s not in sources]
    if unknown:
        raise InvalidPayload(f"external_ids: there is no source {', '.join(repr(s) for s in unknown)}.")
    pairs: list[tuple[int, str]] = []
    for e in external_ids:
        pair = (sources[e.source], e.id)
        if pair in pairs:
            raise InvalidPayload(f"external_ids: {e.source} user id '{e.id}' is listed twice.")
        pairs.append(pair)
    if not pairs:
        return pairs
    taken = (
        await session.execute(
            sa.select(col(MemberIdentity.member_id), col(Source.slug), col(MemberIdentity.external_id))
            .join(Source, col(Source.id) == col(MemberIdentity.source_id))
            .where(
                sa.tuple_(col(MemberIdentity.source_id), col(MemberIdentity.external_id)).in_(pairs),
                col(MemberIdentity.member_id) != member_id,
            )
            .order_by(col(MemberIdentity.id))
        )
    ).first()
    if taken is not None:
        owner, slug, external_id = taken
        raise AlreadyExists(f"The {slug} user id '{external_id}' belongs to member '{owner}'.")
    return pairs


async def _replace_external_ids(session: AsyncSession, member_id: str, pairs: list[tuple[int, str]]) -> None:
    # A bulk DELETE before the INSERTs: a flush would insert before it deletes and trip the unique constraint.
    await session.execute(sa.delete(MemberIdentity).where(col(MemberIdentity.member_id) == member_id))
    session.add_all(MemberIdentity(member_id=member_id, source_id=s, external_id=e) for s, e in pairs)
    await session.flush()


async def _check_delegate(session: AsyncSession, delegate: str, *, member_id: str) -> None:
    if delegate == member_id:
        raise InvalidPayload("delegate: a member cannot be their own delegate.")
    live = await session.execute(
        sa.select(col(Member.id)).where(col(Member.id) == delegate, col(Member.deleted_at).is_(None))
    )
    if live.first() is None:
        raise InvalidPayload(f"delegate: there is no member '{delegate}'.")


async def create_member(session: AsyncSession, *, data: MemberIn, actor: str, now: datetime) -> MemberPublic:
    """Add a member with their external ids; 409 if the id is taken, even by a deleted member (never reused)."""
    await serialise(session)
    await check_id_free(session, Member, data.id)
    if data.delegate is not None:
        await _check_delegate(session, data.delegate, member_id=data.id)
    pairs = await _resolve_external_ids(session, data.external_ids, member_id=data.id)
    member = Member(
        id=data.id,
        name=data.name,
        email=data.email,
        capacity=data.capacity,
        away_until=data.away_until,
        delegate_id=data.delegate,
    )
    session.add(member)
    await session.flush()
    await _replace_external_ids(session, member.id, pairs)
    view = await _member_view(session, member)
    await audit.record(
        session, now=now, actor=actor, action="member.created", target_type="member", target_id=member.id,
        after=_member_audit(view),
    )  # fmt: skip
    return view


async def list_members(session: AsyncSession, *, team_id: str | None = None) -> list[MemberPublic]:
    """Live members by id; `team_id` keeps the members of that team (404 if there is no such team)."""
    stmt = sa.select(Member).where(col(Member.deleted_at).is_(None)).order_by(col(Member.id))
    if team_id is not None:
        await get_team(session, team_id)
        stmt = stmt.where(
            col(Member.id).in_(sa.select(col(TeamMember.member_id)).where(col(TeamMember.team_id) == team_id))
        )
    members = list((await session.execute(stmt)).scalars())
    ids = stmt.with_only_columns(col(Member.id)).order_by(None).scalar_subquery()
    return await _member_views(session, members, ids)


async def read_member(session: AsyncSession, *, member_id: str) -> MemberPublic:
    """One live member."""
    return await _member_view(session, await get_member(session, member_id))


async def update_member(
    session: AsyncSession, *, member_id: str, data: MemberUpdate, actor: str, now: datetime
) -> MemberPublic:
    """Change a member; `null` clears email, away_until and delegate; `external_ids` replaces the list."""
    await serialise(session)
    member = await get_member(session, member_id, for_update=True)
    if data.delegate is not None:
        await _check_delegate(session, data.delegate, member_id=member_id)
    pairs = None
    if data.external_ids is not None:
        pairs = await _resolve_external_ids(session, data.external_ids, member_id=member_id)
    # Like the other admin resources, an explicit null leaves a required field (name, capacity) as it is.
    changes = set_fields(
        data,
        clearable={"email", "away_until", "delegate"},
        columns={"delegate": "delegate_id"},
        exclude={"external_ids"},
    )
    await audit.record_update(
        session, member, changes | {"updated_at": now}, view=lambda: _audit_view(session, member),
        then=None if pairs is None else partial(_replace_external_ids, session, member_id, pairs), now=now,
        actor=actor, action="member.updated", target_type="member", target_id=member_id,
    )  # fmt: skip
    return await _member_view(session, member)


async def _check_not_a_lead(session: AsyncSession, member_id: str) -> None:
    # SLA escalations go to the lead: a team must not lose its lead silently.
    led = list(
        (
            await session.execute(
                sa.select(col(Team.id))
                .where(col(Team.lead_id) == member_id, col(Team.deleted_at).is_(None))
                .order_by(col(Team.id))
            )
        ).scalars()
    )
    if led:
        names = ", ".join(f"team '{team_id}'" for team_id in led)
        raise InvalidState(
            f"Member '{member_id}' leads {names}: give each another lead (or none) with "
            "PATCH /v1/admin/teams/{id} first.",
            teams=led,
        )


async def delete_member(session: AsyncSession, *, member_id: str, actor: str, now: datetime) -> None:
    """Retire a member: out of teams, external ids freed, delegations cleared, keys revoked (audited).

    409 while live rules assign to the member or the member leads a live team.
    """
    await serialise(session)
    # The teams before the member: routing writes team rows (last_assigned_id) and never member rows, so this
    # order cannot deadlock with it.
    teams = list(
        (
            await session.execute(
                sa.select(Team)
                .where(
                    col(Team.deleted_at).is_(None),
                    col(Team.id).in_(sa.select(col(TeamMember.team_id)).where(col(TeamMember.member_id) == member_id)),
                )
                .order_by(col(Team.id))
                .with_for_update()
            )
        ).scalars()
    )
    member = await get_member(session, member_id, for_update=True)
    await check_not_in_rules(session, member_id=member_id)
    await _check_not_a_lead(session, member_id)
    before = await _audit_view(session, member)
    await items.unassign(session, actor=actor, now=now, reason=f"member {member_id} deleted", member_id=member_id)

    team_ids = [t.id for t in teams]
    teams_before = [team_audit(v) for v in await team_views(session, teams, team_ids)]
    await session.execute(sa.delete(TeamMember).where(col(TeamMember.member_id) == member_id))
    for team in teams:
        team.updated_at = now
    await session.flush()
    teams_after = await team_views(session, teams, team_ids)
    for team, team_before, team_after in zip(teams, teams_before, teams_after, strict=True):
        await audit.record(
            session, now=now, actor=actor, action="team.updated", target_type="team", target_id=team.id,
            before=team_before, after=team_audit(team_after),
        )  # fmt: skip

    delegators = (
        await session.execute(
            sa.select(Member)
            .where(col(Member.delegate_id) == member_id, col(Member.deleted_at).is_(None))
            .order_by(col(Member.id))
            .with_for_update()
        )
    ).scalars()
    for delegator in delegators:
        delegator.delegate_id = None
        delegator.updated_at = now
        await audit.record(
            session, now=now, actor=actor, action="member.updated", target_type="member", target_id=delegator.id,
            before={"delegate": member_id}, after={"delegate": None},
        )  # fmt: skip

    keys = (
        await session.execute(
            sa.select(ApiKey)
            .where(col(ApiKey.member_id) == member_id, col(ApiKey.revoked_at).is_(None))
            .order_by(col(ApiKey.id))
            .with_for_update()
        )
    ).scalars()
    for key in keys:
        key.revoked_at = now
        await audit.record(
            session, now=now, actor=actor, action="api_key.revoked", target_type="api_key", target_id=key.prefix,
            before={"name": key.name, "role": key.role, "member_id": member_id},
            after={"revoked_at": now.isoformat(), "reason": "member deleted"},
        )  # fmt: skip

    await session.execute(sa.delete(MemberIdentity).where(col(MemberIdentity.member_id) == member_id))
    member.deleted_at = member.updated_at = now
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="member.deleted", target_type="member", target_id=member_id, before=before
    )
