"""How a message reaches its target, and what the target's answer means.

A target is `source:<slug>` (the platform's callback URL, Standard Webhooks signed with the source's signing secret)
or `channel:<id>` (a notification channel: Slack or Teams webhook, signed generic webhook, SMTP server). Endpoints
are built from the database in the claiming transaction (credentials decrypted there) and used outside it.

Outcomes: 2xx is delivered; 408, 425, 429, 5xx, timeouts and connection errors are retried (Retry-After honoured);
any other 4xx is a permanent refusal (dead at once: retrying cannot help until an admin fixes something).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import smtplib
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any, Protocol

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service.errors import summarise
from service.models import Source
from service.outbound.platform import SOURCE_TARGET_PREFIX
from service.outbound.tables import Channel, ChannelKind
from service.signing import sign

CHANNEL_TARGET_PREFIX = "channel:"
USER_AGENT = "Switchboard/0.1 (+outbound)"
RETRYABLE_STATUSES = frozenset({408, 425, 429})
MAX_RETRY_AFTER_SECONDS = 86_400.0
MAX_ERROR_BODY = 300


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt came to."""

    delivered: bool
    status: int | None = None
    external_id: str | None = None
    retry_after: float | None = None  # seconds, from the target's Retry-After
    error: str | None = None
    permanent: bool = False  # retrying cannot succeed (a 4xx refusal, a missing target)


@dataclass(frozen=True, slots=True)
class Message:
    """What an endpoint needs of an outbox row."""

    id: int
    key: str
    kind: str
    payload: dict[str, Any]


class Endpoint(Protocol):
    """Sends one message to one target."""

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome: ...


def channel_target(channel_id: str) -> str:
    """The outbox target of a notification channel."""
    return CHANNEL_TARGET_PREFIX + channel_id


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A Retry-After header (delta-seconds or an HTTP date) in seconds from now; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), MAX_RETRY_AFTER_SECONDS)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER_SECONDS)


def _external_id(response: httpx.Response) -> str | None:
    try:
        document = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    value = document.get("external_id") if isinstance(document, dict) else None
    if isinstance(value, int | str) and not isinstance(value, bool) and 0 < len(str(value)) <= 200:
        return str(value)
    return None


def judge(response: httpx.Response, now: datetime) -> Outcome:
    """An HTTP answer as an outcome."""
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(delivered=True, status=status, external_id=_external_id(response))
    text = response.text[:MAX_ERROR_BODY].replace("\n", " ") if response.content else ""
    error = f"HTTP {status}" + (f": {text}" if text else "")
    retryable = status >= 500 or status in RETRYABLE_STATUSES
    return Outcome(
        delivered=False,
        status=status,
        error=error,
        retry_after=retry_after_seconds(response.headers.get("retry-after"), now),
        permanent=not retryable,
    )


async def _post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], now: datetime) -> Outcome:
    try:
        response = await client.post(url, content=body, headers={"user-agent": USER_AGENT, **headers})
    except httpx.HTTPError as exc:
        return Outcome(delivered=False, error=_scrubbed(exc, url))
    return judge(response, now)


def _scrubbed(exc: Exception, url: str) -> str:
    """An error as stored and shown to admins, without the URL (for Slack and Teams the URL is the credential)."""
    return summarise(exc).replace(url, "<the target's URL>")


def _body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class SignedWebhook:
    """A Standard Webhooks POST: the message key as webhook-id (the same on every attempt), a fresh timestamp and
    signature per attempt."""

    url: str
    secret: str = field(repr=False)

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:
        """POST the payload, signed."""
        body = _body(message.payload)
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, webhook_id=message.key, timestamp=timestamp, body=body),
        }
        return await _post(client, self.url, body, headers, now)


@dataclass(frozen=True, slots=True)
class ChatWebhook:
    """A Slack incoming webhook or a Teams Workflows webhook: the URL is the credential; the payload is the body."""

    url: str = field(repr=False)  # the URL is the credential
    kind: ChannelKind

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:
        """POST the payload (with the key as Idempotency-Key, which receivers may use)."""
        headers = {"user-agent": USER_AGENT, "content-type": "application/json", "idempotency-key": message.key}
        try:
            response = await client.post(self.url, content=_body(message.payload), headers=headers)
        except httpx.HTTPError as exc:
            return Outcome(delivered=False, error=_scrubbed(exc, self.url))
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
        if not source.callback_url:
            return Missing(f"the source '{slug}' has no callback URL")
        return SignedWebhook(url=source.callback_url, secret=source.secret)
    if target.startswith(CHANNEL_TARGET_PREFIX):
        channel = await session.get(Channel, target[len(CHANNEL_TARGET_PREFIX) :])
        if channel is None:
            return Missing(f"there is no channel '{target[len(CHANNEL_TARGET_PREFIX) :]}'")
        return channel_endpoint(channel, timeout=send_timeout)
    return Missing(f"unknown target {target!r}")
