"""Admin use cases for API keys: issue, list, revoke, rotate (every change audited by the key's prefix).

A raw key exists only in the response that issues it; the table keeps its SHA-256 and the trail its prefix.
Rotation issues a successor with the same name, role, member and expiry. The old key stays valid for a grace
period by moving its `expires_at` forward to the end of the grace (never later than it already was), so that
`keys.authenticate` refuses it from then on with no extra state; with no grace it is revoked at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.audit.tables import AuditEvent
from service.auth.keys import Principal, generate_key, hash_key
from service.directory import members as directory
from service.errors import InvalidPayload, InvalidState, NotFound
from service.inputs import UtcDatetime
from service.models import ApiKey, Role
from service.models.base import to_schema

MAX_GRACE_SECONDS = 7 * 24 * 3600
KeyState = Literal["active", "expired", "revoked"]


class ApiKeyIn(BaseModel):
    """A key to issue."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="A label to recognise the key by.")
    role: Role = Field(description="admin, or responder (bound to a member).")
    member: str | None = Field(None, description="The live member the key acts as; required for responders.")
    expires_at: UtcDatetime | None = Field(None, description="When the key stops working (future; UTC if no offset).")


class ApiKeyRotateIn(BaseModel):
    """How long the key being replaced keeps working."""

    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        0,
        ge=0,
        le=MAX_GRACE_SECONDS,
        strict=True,
        description="The old key keeps working this long (0: revoked at once; max 7 days).",
    )


class ApiKeyPublic(BaseModel):
    """An API key as admins see it: never the key or its hash."""

    id: int
    prefix: str = Field(description="The key's first characters, to recognise it (and in the audit trail).")
    name: str
    role: Role
    member: str | None
    state: KeyState
    created_at: datetime
    last_used_at: datetime | None = Field(description="To the minute.")
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyWithSecret(ApiKeyPublic):
    """A newly issued key, with the raw key."""

    key: str = Field(description="The API key (sbk_...). Shown only this once; only its hash is stored.")


def _state(key: ApiKey, now: datetime) -> KeyState:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"


def _public(key: ApiKey, now: datetime) -> ApiKeyPublic:
    return to_schema(ApiKeyPublic, key, member=key.member_id, state=_state(key, now))


def _with_secret(key: ApiKey, raw: str, now: datetime) -> ApiKeyWithSecret:
    return ApiKeyWithSecret(**_public(key, now).model_dump(), key=raw)


def _audit_view(key: ApiKey) -> dict[str, Any]:
    # The prefix (target_id) names the key; never the raw key or its hash.
    return {
        "id": key.id,
        "name": key.name,
        "role": key.role,
        "member_id": key.member_id,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


async def _get(session: AsyncSession, key_id: int) -> ApiKey:
    key = (
        await session.execute(sa.select(ApiKey).where(col(ApiKey.id) == key_id).with_for_update())
    ).scalar_one_or_none()
    if key is None:
        raise NotFound(f"There is no API key {key_id}.")
    return key


async def _issue(
    session: AsyncSession,
    *,
    name: str,
    role: Role,
    member_id: str | None,
    expires_at: datetime | None,
    actor: str,
    now: datetime,
    rotated_from: ApiKey | None = None,
) -> tuple[ApiKey, str]:
    raw = generate_key()
    key = ApiKey(
        key_hash=hash_key(raw), prefix=raw[:12], name=name, role=role, member_id=member_id, expires_at=expires_at,
        created_at=now,
    )  # fmt: skip
    session.add(key)
    await session.flush()
    after = _audit_view(key)
    if rotated_from is not None:
        after["rotated_from"] = rotated_from.prefix
    await audit.record(
        session,
        now=now,
        actor=actor,
        action="api_key.created",
        target_type="api_key",
        target_id=key.prefix,
        after=after,
    )
    return key, raw


async def create(session: AsyncSession, *, data: ApiKeyIn, actor: str, now: datetime) -> ApiKeyWithSecret:
    """Issue a key; the response is the only place the raw key ever appears."""
    if data.role is Role.responder and not data.member:
        raise InvalidPayload("member: a responder key must be bound to a member.")
    if data.member is not None:
        try:
            await directory.get_member(session, data.member)
        except NotFound:
            raise InvalidPayload(f"member: there is no member '{data.member}'.") from None
    expires_at = data.expires_at  # UtcDatetime: already UTC
    if expires_at is not None and expires_at <= now:
        raise InvalidPayload("expires_at: must be in the future.")
    key, raw = await _issue(
        session, name=data.name, role=data.role, member_id=data.member, expires_at=expires_at, actor=actor, now=now
    )
    return _with_secret(key, raw, now)


async def list_all(session: AsyncSession, *, now: datetime) -> list[ApiKeyPublic]:
    """Every key, newest first (revoked and expired ones too: they name past actors in the audit trail)."""
    rows = await session.execute(sa.select(ApiKey).order_by(col(ApiKey.id).desc()))
    return [_public(k, now) for k in rows.scalars()]


async def read(session: AsyncSession, *, key_id: int, now: datetime) -> ApiKeyPublic:
    """One key."""
    key = (await session.execute(sa.select(ApiKey).where(col(ApiKey.id) == key_id))).scalar_one_or_none()
    if key is None:
        raise NotFound(f"There is no API key {key_id}.")
    return _public(key, now)


async def revoke(session: AsyncSession, *, key_id: int, caller: Principal, now: datetime) -> ApiKeyPublic:
    """Revoke a key at once; 409 if it is already revoked or is the key making this request."""
    if key_id == caller.key_id:
        raise InvalidState("This is the key making the request; revoke it with another admin key.")
    key = await _get(session, key_id)
    if key.revoked_at is not None:
        raise InvalidState(f"API key {key_id} was already revoked at {key.revoked_at.isoformat()}.")
    await audit.record_update(
        session, key, {"revoked_at": now}, view=lambda: _audit_view(key), now=now, actor=caller.actor,
        action="api_key.revoked", target_type="api_key", target_id=key.prefix,
    )  # fmt: skip
    return _public(key, now)


async def _already_rotated(session: AsyncSession, key: ApiKey) -> bool:
    # Rotation leaves no mark on the row except a shortened expiry, so the trail says whether it happened.
    events = await session.execute(
        sa.select(col(AuditEvent.before)).where(
            col(AuditEvent.action) == "api_key.rotated", col(AuditEvent.target_id) == key.prefix
        )
    )
    return any(isinstance(before, dict) and before.get("id") == key.id for before in events.scalars())


async def rotate(
    session: AsyncSession, *, key_id: int, data: ApiKeyRotateIn, caller: Principal, now: datetime
) -> ApiKeyWithSecret:
    """Issue a successor to a live key (returned with its raw key); the old one works `grace_seconds` longer.

    409 for the key making the request with no grace: like revoking it, that would lock the caller out.
    """
    if key_id == caller.key_id and data.grace_seconds == 0:
        raise InvalidState(
            "This is the key making the request; rotating it with grace_seconds 0 would lock you out. "
            "Give a grace period to switch to the new key, or rotate it with another admin key."
        )
    actor = caller.actor
    key = await _get(session, key_id)
    state = _state(key, now)
    if state != "active":
        raise InvalidState(f"API key {key_id} is {state}; issue a new key instead.")
    if await _already_rotated(session, key):
        raise InvalidState(f"API key {key_id} was already rotated; rotate its successor instead.")
    successor, raw = await _issue(
        session,
        name=key.name,
        role=Role(key.role),
        member_id=key.member_id,
        expires_at=key.expires_at,
        actor=actor,
        now=now,
        rotated_from=key,
    )
    before = _audit_view(key)
    if data.grace_seconds == 0:
        key.revoked_at = now
    else:
        end = now + timedelta(seconds=data.grace_seconds)
        key.expires_at = end if key.expires_at is None else min(key.expires_at, end)
    await session.flush()
    after = {**_audit_view(key), "replaced_by": successor.prefix, "grace_seconds": data.grace_seconds}
    await audit.record(
        session, now=now, actor=actor, action="api_key.rotated", target_type="api_key", target_id=key.prefix,
        before=before, after=after,
    )  # fmt: skip
    return _with_secret(successor, raw, now)
