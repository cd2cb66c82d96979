"""Admin API: the directory of members (who answer comments) and teams (who share a queue)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response

from routers.deps import AdminDep, ClockDep, SessionDep
from routers.edge import api_router
from routers.problems import problem_responses
from service.directory import members as directory
from service.directory import teams as team_directory
from service.directory.schemas import MemberIn, MemberPublic, MemberUpdate, TeamIn, TeamPublic, TeamUpdate

members = api_router(prefix="/v1/admin/members", tags=["admin: members"], responses=problem_responses(401, 403))
teams = api_router(prefix="/v1/admin/teams", tags=["admin: teams"], responses=problem_responses(401, 403))


@members.post("", status_code=201, operation_id="create_member", responses=problem_responses(409, 422))
async def create_member(data: MemberIn, session: SessionDep, admin: AdminDep, now: ClockDep) -> MemberPublic:
    """Add a member with their user ids on the sources; ids are never reused, even after deletion."""
    return await directory.create_member(session, data=data, actor=admin.actor, now=now)


@members.get("", operation_id="list_members", responses=problem_responses(404))
async def list_members(
    session: SessionDep,
    _admin: AdminDep,
    team: Annotated[str | None, Query(description="Only the members of this team.")] = None,
) -> list[MemberPublic]:
    """Every member, by id, with their teams."""
    return await directory.list_members(session, team_id=team)


@members.get("/{member_id}", operation_id="get_member", responses=problem_responses(404))
async def get_member(member_id: str, session: SessionDep, _admin: AdminDep) -> MemberPublic:
    """One member."""
    return await directory.read_member(session, member_id=member_id)


@members.patch("/{member_id}", operation_id="update_member", responses=problem_responses(404, 409, 422))
async def update_member(
    member_id: str, data: MemberUpdate, session: SessionDep, admin: AdminDep, now: ClockDep
) -> MemberPublic:
    """Change a member; `external_ids` replaces the list, `null` clears email, away_until and delegate."""
    return await directory.update_member(session, member_id=member_id, data=data, actor=admin.actor, now=now)


@members.delete("/{member_id}", status_code=204, operation_id="delete_member", responses=problem_responses(404, 409))
async def delete_member(member_id: str, session: SessionDep, admin: AdminDep, now: ClockDep) -> Response:
    """Retire a member: out of their teams, external ids freed, delegations cleared, keys revoked, their waiting
    items back to their teams. 409 while the live rules assign to them or they lead a team (change the rules or the
    team's lead first)."""
    await directory.delete_member(session, member_id=member_id, actor=admin.actor, now=now)
    return Response(status_code=204)


@teams.post("", status_code=201, operation_id="create_team", responses=problem_responses(409, 422))
async def create_team(data: TeamIn, session: SessionDep, admin: AdminDep, now: ClockDep) -> TeamPublic:
    """Add a team of members (in round-robin order); ids are never reused, even after deletion."""
    return await team_directory.create_team(session, data=data, actor=admin.actor, now=now)


@teams.get("", operation_id="list_teams")
async def list_teams(session: SessionDep, _admin: AdminDep) -> list[TeamPublic]:
    """Every team, by id."""
    return await team_directory.list_teams(session)


@teams.get("/{team_id}", operation_id="get_team", responses=problem_responses(404))
async def get_team(team_id: str, session: SessionDep, _admin: AdminDep) -> TeamPublic:
    """One team."""
    return await team_directory.read_team(session, team_id=team_id)


@teams.patch("/{team_id}", operation_id="update_team", responses=problem_responses(404, 422))
async def update_team(
    team_id: str, data: TeamUpdate, session: SessionDep, admin: AdminDep, now: ClockDep
) -> TeamPublic:
    """Change a team; `members` replaces the list in the order given, `lead: null` clears the lead."""
    return await team_directory.update_team(session, team_id=team_id, data=data, actor=admin.actor, now=now)


@teams.delete("/{team_id}", status_code=204, operation_id="delete_team", responses=problem_responses(404, 409))
async def delete_team(team_id: str, session: SessionDep, admin: AdminDep, now: ClockDep) -> Response:
    """Retire a team: its memberships end. 409 while the live rules assign to it (change the rules first)."""
    await team_directory.delete_team(session, team_id=team_id, actor=admin.actor, now=now)
    return Response(status_code=204)


router = api_router()
router.include_router(members)
router.include_router(teams)
