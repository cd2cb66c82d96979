"""Admin API: sources (the platforms that send comments)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import Response

from routers.deps import AdminDep, ClockDep, SessionDep, SettingsDep
from routers.edge import api_router
from routers.problems import problem_responses
from service import sources
from service.sources import SourceIn, SourcePublic, SourceUpdate, SourceWithSecret

router = api_router(prefix="/v1/admin/sources", tags=["admin: sources"], responses=problem_responses(401, 403))


@router.post("", status_code=201, operation_id="create_source", responses=problem_responses(409, 422))
async def create_source(data: SourceIn, session: SessionDep, admin: AdminDep, now: ClockDep) -> SourceWithSecret:
    """Create a source; its signing secret is in this response and never shown again."""
    return await sources.create(session, data=data, actor=admin.actor, now=now)


@router.get("", operation_id="list_sources")
async def list_sources(session: SessionDep, _admin: AdminDep) -> list[SourcePublic]:
    """Every source."""
    return await sources.list_all(session)


@router.get("/{slug}", operation_id="get_source", responses=problem_responses(404))
async def get_source(slug: str, session: SessionDep, _admin: AdminDep) -> SourcePublic:
    """One source."""
    return await sources.read(session, slug=slug)


@router.patch("/{slug}", operation_id="update_source", responses=problem_responses(404, 422))
async def update_source(
    slug: str, data: SourceUpdate, session: SessionDep, admin: AdminDep, now: ClockDep
) -> SourcePublic:
    """Rename a source or switch it off and on."""
    return await sources.update(session, slug=slug, data=data, actor=admin.actor, now=now)


@router.delete("/{slug}", status_code=204, operation_id="delete_source", responses=problem_responses(404))
async def delete_source(slug: str, session: SessionDep, admin: AdminDep, now: ClockDep) -> Response:
    """Retire a source: its webhooks are refused; its comments are kept."""
    await sources.delete(session, slug=slug, actor=admin.actor, now=now)
    return Response(status_code=204)


@router.post("/{slug}/rotate-secret", operation_id="rotate_source_secret", responses=problem_responses(404))
async def rotate_secret(
    slug: str, session: SessionDep, settings: SettingsDep, admin: AdminDep, now: ClockDep
) -> SourceWithSecret:
    """Issue a new signing secret; the previous one stays valid for the grace period (default 24 h)."""
    grace = timedelta(hours=settings.secret_rotation_grace_hours)
    return await sources.rotate_secret(session, slug=slug, grace=grace, actor=admin.actor, now=now)
