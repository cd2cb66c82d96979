"""Where a message goes: `source:<slug>` (the source's platform, through its connector: `service.connectors`) or
`channel:<id>` (a notification channel: Slack or Teams webhook, signed generic webhook, SMTP server). Endpoints are
built from the database in the claiming transaction (credentials decrypted there) and used outside it. What an
answer means is `service.connectors.http.judge`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import connectors
from service.connectors.http import (
    USER_AGENT,
    Endpoint,
    Message,
    Outcome,
    SignedWebhook,
    body_of,
    judge,
    scrubbed,
)
from service.errors import summarise
from service.models import Source
from service.outbound.platform import SOURCE_TARGET_PREFIX
from service.outbound.tables import Channel, ChannelKind

CHANNEL_TARGET_PREFIX = "channel:"


def channel_target(channel_id: str) -> str:
    """The outbox target of a notification channel."""
    return CHANNEL_TARGET_PREFIX + channel_id


@dataclass(frozen=True, slots=True)
class ChatWebhook:
    """A Slack incoming webhook or a Teams Workflows webhook: the URL is the credential; the payload is the body."""

    url: str = field(repr=False)  # the URL is the credential
    kind: ChannelKind

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:
        """POST the payload (with the key as Idempotency-Key, which receivers may use)."""
        headers = {"user-agent": USER_AGENT, "content-type": "application/json", "idempotency-key": message.key}
        try:
            response = await client.post(self.url, content=body_of(message.payload), headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(delivered=False, error=scrubbed(exc, self.url))
        # Teams' connectors report throttling inside a 2xx body instead of answering 429.
        if self.kind == ChannelKind.teams and response.is_success and "HTTP error 429" in response.text:
            return Outcome(delivered=False, status=429, error="Teams: throttled (HTTP error 429 in the body)")
        return judge(response, now)


@dataclass(frozen=True, slots=True)
class Smtp:
    """An SMTP server: STARTTLS, implicit TLS or plain (a relay inside the intranet), with optional login."""

    host: str
    port: int
    security: str  # starttls | tls | none
    from_address: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout: float = 10.0

    def _send_sync(self, mail: EmailMessage) -> None:
        context = ssl.create_default_context()
        server: smtplib.SMTP
        if self.security == "tls":
            server = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            server = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with server:
            if self.security == "starttls":
                server.starttls(context=context)
            if self.username:
                server.login(self.username, self.password or "")
            server.send_message(mail)

    def compose(self, message: Message, now: datetime) -> EmailMessage:
        """The e-mail of a message: payload `to`, `subject`, `text`, optional `html`; a Message-ID from the key, so a
        retried delivery is recognisably the same mail."""
        payload = message.payload
        mail = EmailMessage()
        mail["From"] = self.from_address
        mail["To"] = ", ".join(payload["to"])
        mail["Subject"] = payload["subject"]
        mail["Date"] = email.utils.format_datetime(now)
        domain = self.from_address.rpartition("@")[2] or "switchboard.invalid"
        mail["Message-ID"] = f"<{message.key}@{domain}>"
        mail["Auto-Submitted"] = "auto-generated"
        mail.set_content(payload["text"])
        if payload.get("html"):
            mail.add_alternative(payload["html"], subtype="html")
        return mail

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:  # noqa: ARG002
        """Hand the mail to the server (in a thread: smtplib blocks). 4xx replies are retried, 5xx are not."""
        try:
            await asyncio.to_thread(self._send_sync, self.compose(message, now))
        except smtplib.SMTPResponseException as exc:
            code = exc.smtp_code
            return Outcome(delivered=False, status=code, error=f"SMTP {code}", permanent=500 <= code < 600)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            permanent = all(500 <= c < 600 for c in codes)
            return Outcome(delivered=False, error=f"SMTP recipients refused ({codes})", permanent=permanent)
        except (smtplib.SMTPException, OSError) as exc:
            return Outcome(delivered=False, error=summarise(exc))
        return Outcome(delivered=True, status=250)


@dataclass(frozen=True, slots=True)
class Missing:
    """A target that no longer exists (a deleted source or channel, a removed callback URL)."""

    reason: str

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:  # noqa: ARG002
        """Nothing can be sent."""
        return Outcome(delivered=False, error=self.reason, permanent=True)


def channel_endpoint(channel: Channel, *, timeout: float) -> Endpoint:
    """The endpoint of a notification channel (credentials decrypted by the column type)."""
    if channel.deleted_at is not None or not channel.active:
        return Missing(f"the channel '{channel.id}' is inactive or deleted")
    credentials: dict[str, Any] = json.loads(channel.credentials or "{}")
    settings = channel.settings or {}
    kind = ChannelKind(channel.kind)
    if kind in (ChannelKind.slack, ChannelKind.teams):
        return ChatWebhook(url=credentials["url"], kind=kind)
    if kind == ChannelKind.webhook:
        return SignedWebhook(url=settings.get("url") or credentials["url"], secret=credentials["secret"])
    return Smtp(
        host=settings["host"], port=int(settings["port"]), security=settings.get("security", "starttls"),
        from_address=settings["from_address"], username=settings.get("username"),
        password=credentials.get("password"), timeout=timeout,
    )  # fmt: skip


async def resolve(session: AsyncSession, target: str, *, send_timeout: float) -> Endpoint:
    """The endpoint of a target as configured now."""
    if target.startswith(SOURCE_TARGET_PREFIX):
        slug = target[len(SOURCE_TARGET_PREFIX) :]
        source = (await session.execute(sa.select(Source).where(col(Source.slug) == slug))).scalar_one_or_none()
        if source is None or source.deleted_at is not None:
            return Missing(f"the source '{slug}' is deleted")
        endpoint = connectors.connector_for(source.kind).endpoint(source)
        if endpoint is None:
            return Missing(f"the source '{slug}' is not set up to send to its platform")
        return endpoint
    if target.startswith(CHANNEL_TARGET_PREFIX):
        channel = await session.get(Channel, target[len(CHANNEL_TARGET_PREFIX) :])
        if channel is None:
            return Missing(f"there is no channel '{target[len(CHANNEL_TARGET_PREFIX) :]}'")
        return channel_endpoint(channel, timeout=send_timeout)
    return Missing(f"unknown target {target!r}")
