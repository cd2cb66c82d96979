"""API keys: issued once, stored as SHA-256 hashes, looked up by hash."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.database import insert_ignore, table
from service.errors import Forbidden, Unauthenticated
from service.models import ApiKey, Role

log = logging.getLogger(__name__)

KEY_PREFIX = "sbk_"
_LAST_USED_RESOLUTION_SECONDS = 60  # don't write a row on every request just to say it was used


def hash_key(raw: str) -> str:
    """SHA-256 hex of a key; keys carry >= 256 random bits, so a plain hash is the right tool (not a KDF)."""
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an API key's identity and role."""

    key_id: int
    name: str
    role: Role
    member_id: str | None

    @property
    def actor(self) -> str:
        """How the audit trail names this caller."""
        return f"key:{self.key_id}:{self.name}"


def generate_key() -> str:
    """A new random key: 'sbk_' + 43 url-safe characters (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


async def create_key(
    session: AsyncSession,
    *,
    role: Role,
    name: str,
    member_id: str | None = None,
    raw: str | None = None,
    expires_at: datetime | None = None,
    actor: str = audit.SYSTEM_ACTOR,
    now: datetime,
) -> tuple[ApiKey, str]:
    """Store a new key (or the given raw value) and return it with the raw key, which is never stored."""
    if role is Role.responder and not member_id:
        raise ValueError("a responder key must be bound to a member (--member)")
    raw = raw or generate_key()
    key = ApiKey(
        key_hash=hash_key(raw),
        prefix=raw[:12],
        name=name,
        role=role,
        member_id=member_id,
        expires_at=expires_at,
        created_at=now,
    )
    session.add(key)
    await session.flush()
    await audit.record(
        session,
        now=now,
        actor=actor,
        action="api_key.created",
        target_type="api_key",
        target_id=key.prefix,
        after={"name": name, "role": role, "member_id": member_id},
    )
    return key, raw


async def ensure_key(session: AsyncSession, *, raw: str, role: Role, name: str, now: datetime) -> ApiKey:
    """Make sure a key with exactly this value exists with this role (bootstrap admin key).

    Several API processes start at once: the insert is ON CONFLICT DO NOTHING, so exactly one of them creates it.
    A key that was revoked, or rotated and past its grace period, stays so: an admin retired it on purpose, and a
    restart must not bring it back (a warning says so; set a new value to bootstrap a new key).
    """
    created = await insert_ignore(
        session,
        table(ApiKey),
        {"key_hash": hash_key(raw), "prefix": raw[:12], "name": name, "role": role, "created_at": now},
        conflict_columns=["key_hash"],
        returning=table(ApiKey).c.id,
    )
    key = (await session.execute(sa.select(ApiKey).where(col(ApiKey.key_hash) == hash_key(raw)))).scalar_one()
    if created is not None:
        await audit.record(
            session,
            now=now,
            actor=audit.SYSTEM_ACTOR,
            action="api_key.bootstrapped",
            target_type="api_key",
            target_id=key.prefix,
            after={"name": name, "role": role},
        )
    elif key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        log.warning(
            "the bootstrap admin key %s... was revoked or rotated; it stays unusable. Set "
            "SWITCHBOARD_BOOTSTRAP_ADMIN_KEY to a new value (or unset it) to stop this warning",
            key.prefix,
        )
    elif key.role != role:
        key.role = role
        await session.flush()
    return key


async def authenticate(session: AsyncSession, authorization: str | None, *, now: datetime) -> Principal:
    """Resolve an `Authorization: Bearer <key>` header to a principal, or raise Unauthenticated."""
    if not authorization:
        raise Unauthenticated("Send an API key as 'Authorization: Bearer <key>'.")
    scheme, _, raw = authorization.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise Unauthenticated("Send an API key as 'Authorization: Bearer <key>'.")
    key = (
        await session.execute(sa.select(ApiKey).where(col(ApiKey.key_hash) == hash_key(raw.strip())))
    ).scalar_one_or_none()
    if key is None or key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise Unauthenticated("The API key is unknown, revoked or expired.")
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() > _LAST_USED_RESOLUTION_SECONDS:
        key.last_used_at = now
        await session.flush()
    assert key.id is not None
    return Principal(key_id=key.id, name=key.name, role=Role(key.role), member_id=key.member_id)


def require_role(principal: Principal, *roles: Role) -> Principal:
    """Raise Forbidden unless the principal has one of `roles`."""
    if principal.role not in roles:
        raise Forbidden(f"This route needs a key with role {' or '.join(r.value for r in roles)}.")
    return principal
