"""Delivering a message over HTTP, and what the target's answer means: shared by every connector's outbound
endpoint and by the notification channels.

Outcomes: 2xx is delivered; 408, 425, 429, 5xx, timeouts and connection errors are retried (Retry-After honoured);
any other 4xx is a permanent refusal (dead at once: retrying cannot help until an admin fixes something).
"""

from __future__ import annotations

import email.utils
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from service.errors import summarise
from service.signing import sign

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


async def post(client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], now: datetime) -> Outcome:
    try:
        response = await client.post(url, content=body, headers={"user-agent": USER_AGENT, **headers})
    except httpx.HTTPError as exc:
        return Outcome(delivered=False, error=scrubbed(exc, url))
    return judge(response, now)


def scrubbed(exc: Exception, url: str) -> str:
    """An error as stored and shown to admins, without the URL (for Slack and Teams the URL is the credential)."""
    return summarise(exc).replace(url, "<the target's URL>")


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class SignedWebhook:
    """A Standard Webhooks POST: the message key as webhook-id (the same on every attempt), a fresh timestamp and
    signature per attempt."""

    url: str
    secret: str = field(repr=False)

    async def send(self, message: Message, *, client: httpx.AsyncClient, now: datetime) -> Outcome:
        """POST the payload, signed."""
        body = body_of(message.payload)
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "webhook-id": message.key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.secret, webhook_id=message.key, timestamp=timestamp, body=body),
        }
        return await post(client, self.url, body, headers, now)
