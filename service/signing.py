"""Standard Webhooks signing (https://www.standardwebhooks.com), both ways: secrets, and the v1 signature.

Inbound, `service.connectors.standard` verifies platforms' deliveries with it; outbound, Switchboard signs
what it sends to platforms' callbacks and to generic webhook channels the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"  # noqa: S105  (Standard Webhooks' prefix for secrets, not a secret)


def generate_secret() -> str:
    """A Standard Webhooks signing secret: 'whsec_' + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def decode_secret(secret: str) -> bytes:
    """The HMAC key inside a `whsec_<base64>` secret."""
    raw = secret.removeprefix(SECRET_PREFIX)
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def digest(secret: str, *, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    """The HMAC-SHA256 of `id.timestamp.body` under the secret."""
    to_sign = f"{webhook_id}.{timestamp}.".encode() + body
    return hmac.new(decode_secret(secret), to_sign, hashlib.sha256).digest()


def sign(secret: str, *, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery (what a sender puts in webhook-signature)."""
    return "v1," + base64.b64encode(digest(secret, webhook_id=webhook_id, timestamp=str(timestamp), body=body)).decode()
