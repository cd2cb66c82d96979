"""Plain helpers that build test data through the public API, the way a platform or an admin would."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx

from service.signing import sign

ADMIN_KEY = "sbk_test-admin-key-0123456789abcdefghijklmnopqrstuvwxyz"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEST_ENCRYPTION_KEY = "LQ4xRj0CkN0pHcAk3sTRJ5l2cV2Ydw0hJ0nB3fUq3xM="  # a Fernet key for the suite only


def comment_payload(
    comment_id: str = "c-1001",
    *,
    event: str = "comment.created",
    body: str = "Will the canteen open earlier for the night shift?",
    thread_id: str = "story-42",
    parent_id: str | None = None,
    updated_at: str | None = None,
) -> dict[str, Any]:
    """A generic-format event like the README's example (a question on a news story)."""
    if event == "comment.deleted":
        return {"type": event, "data": {"id": comment_id}}
    data: dict[str, Any] = {
        "id": comment_id,
        "thread": {
            "id": thread_id,
            "title": "New canteen opening hours",
            "url": "https://intranet.example/news/42",
            "kind": "news",
            "channel": "news/facilities",
            "author": {"id": "u-7", "name": "Story Author", "email": "author@example.com"},
        },
        "parent_id": parent_id,
        "author": {"id": "u-9", "name": "Commenter", "department": "Finance"},
        "body": body,
        "created_at": "2026-11-21T10:00:00Z",
    }
    if updated_at is not None:
        data["updated_at"] = updated_at
    return {"type": event, "data": data}


def signed_headers(
    secret: str, body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """Standard Webhooks headers for this body."""
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id=webhook_id, timestamp=timestamp, body=body),
        "content-type": "application/json",
    }


def encode(payload: dict[str, Any]) -> bytes:
    """JSON bytes as a platform would send them."""
    return json.dumps(payload).encode()


async def create_source(client: httpx.AsyncClient, slug: str = "intranet") -> str:
    """Create a source through the admin API; returns its signing secret."""
    response = await client.post("/v1/admin/sources", json={"slug": slug, "name": slug.title()}, headers=ADMIN)
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


async def post_event(
    client: httpx.AsyncClient,
    secret: str,
    payload: dict[str, Any],
    *,
    slug: str = "intranet",
    webhook_id: str | None = None,
) -> httpx.Response:
    """Sign and POST one event."""
    body = encode(payload)
    return await client.post(
        f"/v1/webhooks/{slug}", content=body, headers=signed_headers(secret, body, webhook_id=webhook_id)
    )


# ---- the directory, rules and the queue ---------------------------------------------------------------------


async def create_member(
    client: httpx.AsyncClient, member_id: str, *, external: dict[str, str] | None = None, **fields: Any
) -> dict[str, Any]:
    """Create a member; `external` maps source slug -> the member's user id there."""
    body = {
        "id": member_id,
        "name": member_id.title(),
        "external_ids": [{"source": s, "id": i} for s, i in (external or {}).items()],
        **fields,
    }
    response = await client.post("/v1/admin/members", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def create_team(
    client: httpx.AsyncClient,
    team_id: str,
    members: list[str],
    *,
    lead: str | None = None,
    strategy: str = "round_robin",
) -> dict[str, Any]:
    """Create a team."""
    body = {"id": team_id, "name": team_id.upper(), "members": members, "lead": lead, "strategy": strategy}
    response = await client.post("/v1/admin/teams", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def put_rules(client: httpx.AsyncClient, rules: list[dict[str, Any]]) -> dict[str, Any]:
    """Replace the routing rules; a default rule (unassigned pool) is appended unless the last has no `when`."""
    if not rules or rules[-1].get("when") is not None:
        rules = [*rules, {"id": "default", "name": "Default", "then": {}}]
    response = await client.put("/v1/admin/rules", json={"rules": rules}, headers=ADMIN)
    assert response.status_code == 200, response.text
    saved: dict[str, Any] = response.json()
    return saved


async def responder_headers(client: httpx.AsyncClient, member_id: str) -> dict[str, str]:
    """A responder API key bound to the member (created as `switchboard create-key` does)."""
    from service.auth.keys import create_key
    from service.database import transaction
    from service.models import Role
    from service.models.base import utcnow

    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        _, raw = await create_key(
            session, role=Role.responder, name=f"responder {member_id}", member_id=member_id, now=utcnow()
        )
    return {"Authorization": f"Bearer {raw}"}
