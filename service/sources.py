"""Admin use cases for sources: create, list, read, update, delete, rotate the signing secret."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, UrlConstraints
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import connectors
from service.audit import chain as audit
from service.connectors.base import credentials_of
from service.errors import AlreadyExists, NotFound
from service.inputs import set_fields
from service.models import Source
from service.models.source import SLUG_PATTERN, SourceKind, ThresholdName
from service.outbound import platform
from service.signing import generate_secret

CallbackUrl = Annotated[AnyHttpUrl, UrlConstraints(max_length=2000, allowed_schemes=["http", "https"])]


def to_public(source: Source) -> SourcePublic:
    """The admin view of a source."""
    return SourcePublic(
        slug=source.slug,
        name=source.name,
        kind=source.kind,
        active=source.active,
        thresholds=dict(source.thresholds or {}),
        webhook_path=f"/v1/webhooks/{source.slug}",
        callback_url=source.callback_url,
        settings=dict(source.settings or {}),
        credentials_set=sorted(credentials_of(source)),
        capabilities=platform.capabilities(source),
        previous_secret_expires_at=source.previous_secret_expires_at,
        created_at=source.created_at,
        updated_at=source.updated_at,
    )


def _with_secret(source: Source) -> SourceWithSecret:
    return SourceWithSecret(**to_public(source).model_dump(), secret=source.secret)


def _audit_view(source: Source) -> dict[str, Any]:
    return {
        "slug": source.slug,
        "name": source.name,
        "kind": source.kind,
        "active": source.active,
        "thresholds": source.thresholds,
        "callback_url": source.callback_url,
        "settings": source.settings,
        "credentials_set": sorted(credentials_of(source)),  # names only, never values
    }


def valid_secrets(source: Source, now: datetime) -> list[str]:
    """Secrets a delivery may be signed with now: the current one, and the previous one during its grace."""
    found = [source.secret]
    if source.previous_secret and source.previous_secret_expires_at and source.previous_secret_expires_at > now:
        found.append(source.previous_secret)
    return found


async def get_by_slug(session: AsyncSession, slug: str, *, for_update: bool = False) -> Source:
    """A live (not deleted) source, or NotFound."""
    stmt = sa.select(Source).where(col(Source.slug) == slug, col(Source.deleted_at).is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    source = (await session.execute(stmt)).scalar_one_or_none()
    if source is None:
        raise NotFound(f"There is no source '{slug}'.")
    return source


async def create(session: AsyncSession, *, data: SourceIn, actor: str, now: datetime) -> SourceWithSecret:
    """Create a source and return it with its signing secret (shown only this once)."""
    taken = await session.execute(sa.select(col(Source.id)).where(col(Source.slug) == data.slug))
    if taken.first() is not None:
        raise AlreadyExists(f"A source with slug '{data.slug}' exists (or existed: slugs are never reused).")
    settings, credentials = data.settings or {}, data.credentials or {}
    connectors.connector_for(data.kind).check(settings, credentials)
    source = Source(
        slug=data.slug, name=data.name, kind=data.kind, secret=generate_secret(), created_at=now, updated_at=now,
        settings=settings or None, credentials=json.dumps(credentials) if credentials else None,
    )  # fmt: skip
    session.add(source)
    await session.flush()
    await audit.record(
        session,
        now=now,
        actor=actor,
        action="source.created",
        target_type="source",
        target_id=source.slug,
        after=_audit_view(source),
    )
    return _with_secret(source)


async def list_all(session: AsyncSession) -> list[SourcePublic]:
    """Every live source, by slug."""
    rows = await session.execute(sa.select(Source).where(col(Source.deleted_at).is_(None)).order_by(col(Source.slug)))
    return [to_public(s) for s in rows.scalars()]


async def read(session: AsyncSession, *, slug: str) -> SourcePublic:
    """One live source."""
    return to_public(await get_by_slug(session, slug))


async def update(session: AsyncSession, *, slug: str, data: SourceUpdate, actor: str, now: datetime) -> SourcePublic:
    """Change a source's name, active flag, thresholds, callback URL or platform settings and credentials (each a
    merge: a key set to null is removed)."""
    source = await get_by_slug(session, slug, for_update=True)
    changes = set_fields(data, clearable=("callback_url",))
    if "callback_url" in changes and changes["callback_url"] is not None:
        changes["callback_url"] = str(changes["callback_url"])
    settings = _merged(source.settings or {}, changes.pop("settings", None))
    credentials = _merged(credentials_of(source), changes.pop("credentials", None))
    connectors.connector_for(source.kind).check(settings, credentials)
    if data.settings is not None:
        changes["settings"] = settings or None
    if data.credentials is not None:
        changes["credentials"] = json.dumps(credentials) if credentials else None
    await audit.record_update(
        session, source, changes | {"updated_at": now}, view=lambda: _audit_view(source), now=now,
        actor=actor, action="source.updated", target_type="source", target_id=slug,
    )  # fmt: skip
    return to_public(source)


def _merged(current: dict[str, Any], patch: dict[str, Any] | None) -> dict[str, Any]:
    if patch is None:
        return current
    merged = {**current, **patch}
    return {key: value for key, value in merged.items() if value is not None}


async def delete(session: AsyncSession, *, slug: str, actor: str, now: datetime) -> None:
    """Retire a source: its webhooks are refused from now on; the comments it sent are kept."""
    source = await get_by_slug(session, slug, for_update=True)
    source.deleted_at = source.updated_at = now
    source.active = False
    await session.flush()
    await audit.record(
        session,
        now=now,
        actor=actor,
        action="source.deleted",
        target_type="source",
        target_id=slug,
        before=_audit_view(source),
    )


async def rotate_secret(
    session: AsyncSession, *, slug: str, grace: timedelta, actor: str, now: datetime
) -> SourceWithSecret:
    """Issue a new signing secret; the old one stays valid for `grace`."""
    source = await get_by_slug(session, slug, for_update=True)
    source.previous_secret = source.secret
    source.previous_secret_expires_at = now + grace
    source.secret = generate_secret()
    source.updated_at = now
    await session.flush()
    await audit.record(
        session,
        now=now,
        actor=actor,
        action="source.secret_rotated",
        target_type="source",
        target_id=slug,
        after={"previous_secret_expires_at": source.previous_secret_expires_at.isoformat()},
    )
    return _with_secret(source)


_SETTINGS = (
    "The platform connector's settings. wordpress: `site_url` (the site's address), `username` (the WordPress user "
    "of the Application Password, with `moderate_comments`), `reject_as` (`spam`, the default, or `trash`). "
    "discourse: `base_url` (the forum's address), `api_username` (the moderator or admin the API key acts as), "
    "`reject_as` (`hide`, the default, or `delete`)."
)
_CREDENTIALS = (
    "The platform connector's secrets, encrypted at rest and never shown again (only their names). wordpress: "
    "`application_password`. discourse: `api_key` (a key for all users lets replies be posted as the responders' "
    "own Discourse users)."
)


class SourceIn(BaseModel):
    """Body of POST /v1/admin/sources."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=SLUG_PATTERN, description="URL name: lower-case letters, digits and dashes.")
    name: str = Field(min_length=1, max_length=200)
    kind: SourceKind = Field(
        SourceKind.standard,
        description="The platform: `standard` (Switchboard's generic format), `wordpress` (the Switchboard "
        "Connector plugin; replies and moderation through the REST API) or `discourse` (Discourse's own webhooks, "
        "signed with the source's secret; replies and moderation through its REST API).",
    )
    settings: dict[str, Any] | None = Field(None, description=_SETTINGS)
    credentials: dict[str, Any] | None = Field(None, description=_CREDENTIALS)


class SourceUpdate(BaseModel):
    """Body of PATCH /v1/admin/sources/{slug}; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    active: bool | None = Field(None, strict=True, description="An inactive source's webhooks are refused with 403.")
    thresholds: dict[ThresholdName, Annotated[float, Field(ge=0, le=1, strict=True)]] | None = Field(
        None, description="Replace this source's head thresholds, e.g. {'offensive': 0.8}; {} resets to defaults."
    )
    callback_url: CallbackUrl | None = Field(
        None,
        description="Where Switchboard POSTs this platform's events (reply.created, comment.held / released / "
        "rejected, item.resolved), signed with the source's signing secret; null stops sending.",
    )
    settings: dict[str, Any] | None = Field(None, description=_SETTINGS + " Merged: a key set to null is removed.")
    credentials: dict[str, Any] | None = Field(
        None, description=_CREDENTIALS + " Merged: a key set to null is removed."
    )


class SourcePublic(BaseModel):
    """A source as admins see it (never its secret)."""

    slug: str
    name: str
    kind: SourceKind
    active: bool
    thresholds: dict[str, float]
    webhook_path: str
    callback_url: str | None
    settings: dict[str, Any] = Field(description="The platform connector's settings (see the source's kind).")
    credentials_set: list[str] = Field(description="The names of the credentials that are set (never their values).")
    capabilities: list[str] = Field(description="What Switchboard can do on the platform: receive, reply, hold, ...")
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class SourceWithSecret(SourcePublic):
    """A source with its signing secret: returned once, on creation and on rotation."""

    secret: str = Field(description="Standard Webhooks signing secret (whsec_...). Shown only this once.")
