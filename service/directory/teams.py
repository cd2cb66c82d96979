"""Admin use cases for teams (who share a queue): create, list, read, update, delete.

A team's id is chosen by the admin and never reused (see `service.directory.members`).
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
from service.directory.schemas import TeamIn, TeamPublic, TeamUpdate
from service.directory.writes import check_id_free, check_not_in_rules, serialise
from service.errors import InvalidPayload, NotFound
from service.inputs import set_fields
from service.items import transitions as items
from service.models import Member, Team, TeamMember
from service.models.base import to_schema


async def get_team(session: AsyncSession, team_id: str, *, for_update: bool = False) -> Team:
    """A live (not deleted) team, or NotFound."""
    stmt = sa.select(Team).where(col(Team.id) == team_id, col(Team.deleted_at).is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    team = (await session.execute(stmt)).scalar_one_or_none()
    if team is None:
        raise NotFound(f"There is no team '{team_id}'.")
    return team


async def team_views(
    session: AsyncSession, teams: Sequence[Team], ids: sa.ScalarSelect[Any] | list[str]
) -> list[TeamPublic]:
    """Public views of `teams`; `ids` selects their ids (a subquery for lists, so no huge IN lists)."""
    rows = await session.execute(
        sa.select(col(TeamMember.team_id), col(TeamMember.member_id))
        .where(col(TeamMember.team_id).in_(ids))
        .order_by(col(TeamMember.team_id), col(TeamMember.position))
    )
    members: dict[str, list[str]] = defaultdict(list)
    for team_id, member_id in rows:
        members[team_id].append(member_id)
    return [to_schema(TeamPublic, t, members=members.get(t.id, []), lead=t.lead_id) for t in teams]


async def _team_view(session: AsyncSession, team: Team) -> TeamPublic:
    return (await team_views(session, [team], [team.id]))[0]


def team_audit(view: TeamPublic) -> dict[str, Any]:
    """A team's view as the audit trail records it."""
    return view.model_dump(mode="json", exclude={"id", "created_at", "updated_at"})


async def _audit_view(session: AsyncSession, team: Team) -> dict[str, Any]:
    return team_audit(await _team_view(session, team))


async def _check_members(session: AsyncSession, members: list[str]) -> None:
    duplicates = sorted({m for m in members if members.count(m) > 1})
    if duplicates:
        raise InvalidPayload(f"members: {', '.join(repr(m) for m in duplicates)} listed more than once.")
    live = set(
        (
            await session.execute(
                sa.select(col(Member.id)).where(col(Member.id).in_(members), col(Member.deleted_at).is_(None))
            )
        ).scalars()
    )
    unknown = [m for m in members if m not in live]
    if unknown:
        raise InvalidPayload(f"members: there is no member {', '.join(repr(m) for m in unknown)}.")


async def _check_lead(session: AsyncSession, lead: str) -> None:
    live = await session.execute(
        sa.select(col(Member.id)).where(col(Member.id) == lead, col(Member.deleted_at).is_(None))
    )
    if live.first() is None:
        raise InvalidPayload(f"lead: there is no member '{lead}'.")


async def _replace_members(session: AsyncSession, team_id: str, members: list[str]) -> None:
    # A bulk DELETE before the INSERTs: a flush would insert before it deletes and trip the primary key.
    await session.execute(sa.delete(TeamMember).where(col(TeamMember.team_id) == team_id))
    session.add_all(TeamMember(team_id=team_id, member_id=m, position=i) for i, m in enumerate(members))
    await session.flush()


async def create_team(session: AsyncSession, *, data: TeamIn, actor: str, now: datetime) -> TeamPublic:
    """Add a team of live members (in round-robin order); 409 if the id is taken, even by a deleted team."""
    await serialise(session)
    await check_id_free(session, Team, data.id)
    await _check_members(session, data.members)
    if data.lead is not None:
        await _check_lead(session, data.lead)
    team = Team(id=data.id, name=data.name, lead_id=data.lead, strategy=data.strategy)
    session.add(team)
    await session.flush()
    await _replace_members(session, team.id, data.members)
    view = await _team_view(session, team)
    await audit.record(
        session, now=now, actor=actor, action="team.created", target_type="team", target_id=team.id,
        after=team_audit(view),
    )  # fmt: skip
    return view


async def list_teams(session: AsyncSession) -> list[TeamPublic]:
    """Live teams by id."""
    stmt = sa.select(Team).where(col(Team.deleted_at).is_(None)).order_by(col(Team.id))
    teams = list((await session.execute(stmt)).scalars())
    return await team_views(session, teams, stmt.with_only_columns(col(Team.id)).order_by(None).scalar_subquery())


async def read_team(session: AsyncSession, *, team_id: str) -> TeamPublic:
    """One live team."""
    return await _team_view(session, await get_team(session, team_id))


async def update_team(
    session: AsyncSession, *, team_id: str, data: TeamUpdate, actor: str, now: datetime
) -> TeamPublic:
    """Change a team; `members` replaces the list in the order given, `lead: null` clears the lead."""
    await serialise(session)
    team = await get_team(session, team_id, for_update=True)
    if data.members is not None:
        await _check_members(session, data.members)
    if data.lead is not None:
        await _check_lead(session, data.lead)
    # Like the other admin resources, an explicit null leaves a required field (name, strategy) as it is.
    changes = set_fields(data, clearable={"lead"}, columns={"lead": "lead_id"}, exclude={"members"})
    await audit.record_update(
        session, team, changes | {"updated_at": now}, view=lambda: _audit_view(session, team),
        then=None if data.members is None else partial(_replace_members, session, team_id, data.members), now=now,
        actor=actor, action="team.updated", target_type="team", target_id=team_id,
    )  # fmt: skip
    return await _team_view(session, team)


async def delete_team(session: AsyncSession, *, team_id: str, actor: str, now: datetime) -> None:
    """Retire a team: its memberships end; the id stays taken."""
    await serialise(session)
    team = await get_team(session, team_id, for_update=True)
    await check_not_in_rules(session, team_id=team_id)
    before = await _audit_view(session, team)
    await items.unassign(session, actor=actor, now=now, reason=f"team {team_id} deleted", team_id=team_id)
    await session.execute(sa.delete(TeamMember).where(col(TeamMember.team_id) == team_id))
    team.deleted_at = team.updated_at = now
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="team.deleted", target_type="team", target_id=team_id, before=before
    )
