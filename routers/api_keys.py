"""Admin API: API keys (issue, list, revoke, rotate); a raw key is shown once, when it is issued."""

from __future__ import annotations

from typing import Annotated

from fastapi import Body

from routers.deps import AdminDep, ClockDep, SessionDep
from routers.edge import api_router
from routers.params import RowId
from routers.problems import problem_responses
from service.auth import api_keys
from service.auth.api_keys import ApiKeyIn, ApiKeyPublic, ApiKeyRotateIn, ApiKeyWithSecret

router = api_router(prefix="/v1/admin/api-keys", tags=["admin: api keys"], responses=problem_responses(401, 403))


@router.get("", operation_id="list_api_keys")
async def list_api_keys(session: SessionDep, _admin: AdminDep, now: ClockDep) -> list[ApiKeyPublic]:
    """Every key, newest first: prefix, name, role, member and dates, never the key or its hash."""
    return await api_keys.list_all(session, now=now)


@router.post("", status_code=201, operation_id="create_api_key", responses=problem_responses(422))
async def create_api_key(data: ApiKeyIn, session: SessionDep, admin: AdminDep, now: ClockDep) -> ApiKeyWithSecret:
    """Issue a key; the raw key is in `key` of this response and never shown again (only its hash is stored)."""
    return await api_keys.create(session, data=data, actor=admin.actor, now=now)


@router.get("/{key_id}", operation_id="get_api_key", responses=problem_responses(404, 422))
async def get_api_key(key_id: RowId, session: SessionDep, _admin: AdminDep, now: ClockDep) -> ApiKeyPublic:
    """One key."""
    return await api_keys.read(session, key_id=key_id, now=now)


@router.post("/{key_id}/revoke", operation_id="revoke_api_key", responses=problem_responses(404, 409, 422))
async def revoke_api_key(key_id: RowId, session: SessionDep, admin: AdminDep, now: ClockDep) -> ApiKeyPublic:
    """Revoke a key at once; 409 if it is already revoked or is the key making this request."""
    return await api_keys.revoke(session, key_id=key_id, caller=admin, now=now)


@router.post("/{key_id}/rotate", operation_id="rotate_api_key", responses=problem_responses(404, 409, 422))
async def rotate_api_key(
    key_id: RowId,
    session: SessionDep,
    admin: AdminDep,
    now: ClockDep,
    data: Annotated[ApiKeyRotateIn | None, Body()] = None,
) -> ApiKeyWithSecret:
    """Issue a successor (same name, role, member, expiry); the new raw key is in `key` of this response, shown only
    this once. The old key works `grace_seconds` longer (default 0: revoked at once). 409 if the key is not active,
    was already rotated, or is the key making this request and `grace_seconds` is 0 (that would lock you out)."""
    return await api_keys.rotate(session, key_id=key_id, data=data or ApiKeyRotateIn(), caller=admin, now=now)
