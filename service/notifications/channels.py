"""Admin use cases for notification channels: create, list, read, update, delete.

A channel's secrets (the SMTP password, the Slack and Teams webhook URLs, a webhook's URL and signing secret) are
write-only: they live in `Channel.credentials` (one JSON document, encrypted at rest) and no response, log line or
audit record shows them after creation; the admin view shows a URL's host only. `Channel.settings` holds what may
be shown. The delivery runner reads both through `config_of`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.audit import chain as audit
from service.errors import AlreadyExists, InvalidPayload, NotFound
from service.models.source import SLUG_PATTERN
from service.notifications.tables import Subscription
from service.outbound.tables import Channel, ChannelKind
from service.signing import generate_secret

SUBSCRIPTIONS_CACHE = "notifications.subscriptions"  # session.info key of events.py's per-session cache

_HOST = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_IP6 = re.compile(r"^\[?[0-9A-Fa-f:.]+\]?$")
_ADDRESS = re.compile(r"^[^@\s<>\"(),;:]+@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def check_url(value: str) -> str:
    """An absolute http(s) URL with a host (no spaces or control characters)."""
    if _CONTROL.search(value) or " " in value:
        raise ValueError("The URL must not contain spaces or control characters.")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("Give an absolute http:// or https:// URL.")
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError:
        raise ValueError("The URL's port is not valid.") from None
    return value


def url_host(url: str) -> str:
    """What may be shown of a secret URL: its host."""
    return urlsplit(url).hostname or ""


class EmailConfig(BaseModel):
    """An SMTP server to send notification e-mails through."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=253, description="The SMTP server's host name or IP address.")
    port: int = Field(587, ge=1, le=65535, strict=True)
    security: Literal["starttls", "tls", "none"] = Field(
        "starttls", description="starttls (usually port 587), tls (implicit TLS, usually 465) or none."
    )
    username: str | None = Field(None, min_length=1, max_length=200, description="For SMTP AUTH, with `password`.")
    password: str | None = Field(None, min_length=1, max_length=500, description="Write-only; never shown again.")
    from_address: str = Field(max_length=320, description="The sender address, e.g. switchboard@example.com.")

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not (_HOST.fullmatch(value) or _IP6.fullmatch(value)):
            raise ValueError("Give a host name or an IP address.")
        return value

    @field_validator("from_address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _ADDRESS.fullmatch(value):
            raise ValueError("Give an e-mail address such as switchboard@example.com.")
        return value

    @field_validator("username", "password")
    @classmethod
    def _no_control(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("Control characters are not allowed.")
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> EmailConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("Give both `username` and `password` for SMTP AUTH, or neither.")
        return self


class UrlConfig(BaseModel):
    """A webhook URL: a Slack incoming webhook, a Teams Workflows webhook, or any endpoint for signed webhooks."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000, description="Write-only: the response shows its host only.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)


_CONFIGS: dict[ChannelKind, type[EmailConfig] | type[UrlConfig]] = {
    ChannelKind.email: EmailConfig,
    ChannelKind.slack: UrlConfig,
    ChannelKind.teams: UrlConfig,
    ChannelKind.webhook: UrlConfig,
}


class ChannelIn(BaseModel):
    """Body of POST /v1/admin/channels."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=SLUG_PATTERN, description="Stable id: lower-case letters, digits and dashes.")
    name: str = Field(min_length=1, max_length=200)
    kind: ChannelKind
    config: EmailConfig | UrlConfig = Field(
        description="email: host, port, security, username, password, from_address; slack, teams, webhook: url."
    )

    @model_validator(mode="after")
    def _config_fits_kind(self) -> ChannelIn:
        if not isinstance(self.config, _CONFIGS[self.kind]):
            wanted = "host, port, security, from_address" if self.kind == ChannelKind.email else "url"
            raise ValueError(f"A {self.kind.value} channel's config has {wanted}.")
        return self


class ChannelUpdate(BaseModel):
    """Body of PATCH /v1/admin/channels/{id}; absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    active: bool | None = Field(None, strict=True, description="An inactive channel is sent nothing.")
    config: dict[str, Any] | None = Field(
        None,
        description="Fields of the channel's config to change (the others stay); `password: null` removes the "
        "SMTP password.",
    )


class ChannelPublic(BaseModel):
    """A channel as admins see it: never its secrets."""

    id: str
    name: str
    kind: ChannelKind
    active: bool
    config: dict[str, Any] = Field(
        description="What may be shown: an e-mail channel's server and sender (and whether a password is set), "
        "a webhook channel's host."
    )
    created_at: datetime
    updated_at: datetime


class ChannelCreated(ChannelPublic):
    """A new channel; a webhook channel's signing secret is in it, shown only this once."""

    secret: str | None = Field(
        None, description="Standard Webhooks signing secret (whsec_...) of a webhook channel. Shown only this once."
    )


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """Everything needed to send through a channel (for the delivery runner; holds secrets: never log it)."""

    kind: ChannelKind
    url: str | None = None  # slack, teams, webhook
    secret: str | None = None  # webhook: the Standard Webhooks signing secret
    host: str | None = None  # email
    port: int | None = None
    security: str | None = None
    username: str | None = None
    password: str | None = None
    from_address: str | None = None

    def __repr__(self) -> str:
        return f"ChannelConfig(kind={self.kind.value!r}, host={self.host or url_host(self.url or '')!r})"


def config_of(channel: Channel) -> ChannelConfig:
    """A channel's full configuration, its secrets decrypted."""
    credentials: dict[str, Any] = json.loads(channel.credentials or "{}")
    settings = channel.settings or {}
    kind = ChannelKind(channel.kind)
    if kind == ChannelKind.email:
        return ChannelConfig(
            kind=kind, host=settings.get("host"), port=settings.get("port"), security=settings.get("security"),
            username=settings.get("username"), password=credentials.get("password"),
            from_address=settings.get("from_address"),
        )  # fmt: skip
    return ChannelConfig(kind=kind, url=credentials.get("url"), secret=credentials.get("secret"))


def _split(kind: ChannelKind, config: EmailConfig | UrlConfig, secret: str | None) -> tuple[dict[str, Any], str]:
    """(settings, credentials JSON) of a validated config."""
    if isinstance(config, EmailConfig):
        settings = config.model_dump(exclude={"password"})
        return settings, json.dumps({"password": config.password})
    credentials: dict[str, Any] = {"url": config.url}
    if kind == ChannelKind.webhook:
        credentials["secret"] = secret
    return {"url_host": url_host(config.url)}, json.dumps(credentials)


def _shown(channel: Channel) -> dict[str, Any]:
    settings = dict(channel.settings or {})
    if channel.kind == ChannelKind.email:
        settings["password_set"] = config_of(channel).password is not None
    return settings


def to_public(channel: Channel) -> ChannelPublic:
    """The admin view of a channel."""
    return ChannelPublic(
        id=channel.id, name=channel.name, kind=ChannelKind(channel.kind), active=channel.active,
        config=_shown(channel), created_at=channel.created_at, updated_at=channel.updated_at,
    )  # fmt: skip


def _audit_view(channel: Channel) -> dict[str, Any]:
    return {"name": channel.name, "kind": channel.kind, "active": channel.active, "config": _shown(channel)}


async def get_channel(session: AsyncSession, channel_id: str, *, for_update: bool = False) -> Channel:
    """A live (not deleted) channel, or NotFound."""
    stmt = sa.select(Channel).where(col(Channel.id) == channel_id, col(Channel.deleted_at).is_(None))
    if for_update:
        stmt = stmt.with_for_update()
    channel = (await session.execute(stmt)).scalar_one_or_none()
    if channel is None:
        raise NotFound(f"There is no channel '{channel_id}'.")
    return channel


async def create(session: AsyncSession, *, data: ChannelIn, actor: str, now: datetime) -> ChannelCreated:
    """Add a channel; a webhook channel gets a signing secret, returned in this response only."""
    taken = await session.execute(sa.select(col(Channel.id)).where(col(Channel.id) == data.id))
    if taken.first() is not None:
        raise AlreadyExists(f"A channel with id '{data.id}' exists (or existed: ids are never reused).")
    secret = generate_secret() if data.kind == ChannelKind.webhook else None
    settings, credentials = _split(data.kind, data.config, secret)
    channel = Channel(
        id=data.id, name=data.name, kind=data.kind.value, settings=settings, credentials=credentials, active=True,
        created_at=now, updated_at=now,
    )  # fmt: skip
    session.add(channel)
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="channel.created", target_type="channel", target_id=channel.id,
        after=_audit_view(channel),
    )  # fmt: skip
    return ChannelCreated(**to_public(channel).model_dump(), secret=secret)


async def list_all(session: AsyncSession) -> list[ChannelPublic]:
    """Every live channel, by id."""
    rows = await session.execute(sa.select(Channel).where(col(Channel.deleted_at).is_(None)).order_by(col(Channel.id)))
    return [to_public(c) for c in rows.scalars()]


async def read(session: AsyncSession, *, channel_id: str) -> ChannelPublic:
    """One live channel."""
    return to_public(await get_channel(session, channel_id))


def _merged(channel: Channel, patch: dict[str, Any]) -> EmailConfig | UrlConfig:
    """The channel's config with `patch` applied, validated (422 naming the fields, never their values)."""
    kind = ChannelKind(channel.kind)
    current = config_of(channel)
    if kind == ChannelKind.email:
        base: dict[str, Any] = {
            "host": current.host, "port": current.port, "security": current.security, "username": current.username,
            "password": current.password, "from_address": current.from_address,
        }  # fmt: skip
    else:
        base = {"url": current.url}
    try:
        return _CONFIGS[kind].model_validate({**base, **patch})
    except ValidationError as exc:
        problems = "; ".join(f"config.{'.'.join(map(str, e['loc'])) or '(all)'}: {e['msg']}" for e in exc.errors())
        raise InvalidPayload(problems[:1000]) from None


async def update(
    session: AsyncSession, *, channel_id: str, data: ChannelUpdate, actor: str, now: datetime
) -> ChannelPublic:
    """Rename a channel, switch it off and on, or change its config (its signing secret stays)."""
    channel = await get_channel(session, channel_id, for_update=True)
    changes: dict[str, Any] = {}
    if data.name is not None:
        changes["name"] = data.name
    if data.active is not None:
        changes["active"] = data.active
    if data.config is not None:
        kind = ChannelKind(channel.kind)
        settings, credentials = _split(kind, _merged(channel, data.config), config_of(channel).secret)
        changes |= {"settings": settings, "credentials": credentials}
    await audit.record_update(
        session, channel, changes | {"updated_at": now}, view=lambda: _audit_view(channel), now=now, actor=actor,
        action="channel.updated", target_type="channel", target_id=channel_id,
    )  # fmt: skip
    session.info.pop(SUBSCRIPTIONS_CACHE, None)
    return to_public(channel)


async def delete(session: AsyncSession, *, channel_id: str, actor: str, now: datetime) -> None:
    """Retire a channel: its secrets are erased and its subscriptions removed; nothing more is sent through it."""
    channel = await get_channel(session, channel_id, for_update=True)
    before = _audit_view(channel)
    subscriptions = await session.execute(
        sa.delete(Subscription).where(col(Subscription.channel_id) == channel_id).returning(col(Subscription.id))
    )
    removed = sorted(i for i in subscriptions.scalars() if i is not None)
    channel.deleted_at = channel.updated_at = now
    channel.active = False
    channel.credentials = "{}"
    await session.flush()
    await audit.record(
        session, now=now, actor=actor, action="channel.deleted", target_type="channel", target_id=channel_id,
        before=before, after={"subscriptions_removed": removed},
    )  # fmt: skip
    session.info.pop(SUBSCRIPTIONS_CACHE, None)
