"""API keys through the admin API: issued once, listed without secrets, revoked, rotated with a grace period."""

from __future__ import annotations

import base64
import json
import logging
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from classifiers.pipeline import BatchingAnalyser
from service.audit.tables import AuditEvent
from service.auth import keys
from service.database import transaction
from service.models import Role
from service.models.base import utcnow
from tests.clock import FakeClock
from tests.conftest import make_settings, running_app
from tests.factories import ADMIN, ADMIN_KEY, create_member, responder_headers

KEYS = "/v1/admin/api-keys"


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


async def issue(client: httpx.AsyncClient, headers: dict[str, str] = ADMIN, **body: Any) -> dict[str, Any]:
    response = await client.post(KEYS, json={"name": "ops", "role": "admin", **body}, headers=headers)
    assert response.status_code == 201, response.text
    issued: dict[str, Any] = response.json()
    return issued


async def works(client: httpx.AsyncClient, raw: str) -> int:
    """The status of an authenticated request made with this key (200, or 401 once it no longer works)."""
    return (await client.get("/v1/queue", headers=bearer(raw))).status_code


async def audit_records(client: httpx.AsyncClient) -> list[AuditEvent]:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with factory() as session:
        return list((await session.execute(sa.select(AuditEvent).order_by(col(AuditEvent.id)))).scalars())


async def test_an_issued_key_has_the_prefix_and_at_least_128_random_bits_and_is_shown_once(
    client: httpx.AsyncClient,
) -> None:
    await create_member(client, "ana")
    first = await issue(client, role="responder", member="ana", name="ana's laptop")
    second = await issue(client, role="responder", member="ana", name="ana's phone")
    for issued in (first, second):
        raw = issued["key"]
        assert raw.startswith(keys.KEY_PREFIX)
        assert issued["prefix"] == raw[:12]
        random_part = base64.urlsafe_b64decode(raw[len(keys.KEY_PREFIX) :] + "=")
        assert len(random_part) * 8 >= 128
        # Even after the prefix (shown in lists and the audit trail) is known, >= 128 bits stay secret.
        assert (len(raw) - len(issued["prefix"])) * 6 >= 128
        assert (issued["role"], issued["member"], issued["state"]) == ("responder", "ana", "active")
        assert await works(client, raw) == 200
    assert first["key"] != second["key"]

    listed = await client.get(KEYS, headers=ADMIN)
    assert listed.status_code == 200
    by_id = {k["id"]: k for k in listed.json()}
    assert set(by_id[first["id"]]) == {
        "id", "prefix", "name", "role", "member", "state", "created_at", "last_used_at", "expires_at", "revoked_at",
    }  # fmt: skip
    assert by_id[first["id"]]["last_used_at"] is not None
    for issued in (first, second):
        assert issued["key"] not in listed.text
        assert keys.hash_key(issued["key"]) not in listed.text
    single = await client.get(f"{KEYS}/{first['id']}", headers=ADMIN)
    assert single.json() == by_id[first["id"]]


async def test_a_responder_key_needs_a_live_member_and_expiry_must_be_in_the_future(client: httpx.AsyncClient) -> None:
    await create_member(client, "gone")
    assert (await client.delete("/v1/admin/members/gone", headers=ADMIN)).status_code == 204
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    for body in (
        {"name": "x", "role": "responder"},
        {"name": "x", "role": "responder", "member": "nobody"},
        {"name": "x", "role": "responder", "member": "gone"},
        {"name": "x", "role": "admin", "expires_at": past},
    ):
        response = await client.post(KEYS, json=body, headers=ADMIN)
        assert response.status_code == 422, body
        assert response.json()["code"] == "invalid_payload"
    for body in ({"name": "x", "role": "owner"}, {"name": "x", "role": "admin", "key_hash": "0" * 64}):
        assert (await client.post(KEYS, json=body, headers=ADMIN)).json()["code"] == "validation_error"


async def test_a_revoked_key_is_refused_and_revoking_it_again_is_a_conflict(client: httpx.AsyncClient) -> None:
    issued = await issue(client)
    revoked = await client.post(f"{KEYS}/{issued['id']}/revoke", headers=ADMIN)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "revoked"
    assert revoked.json()["revoked_at"] is not None
    assert await works(client, issued["key"]) == 401
    again = await client.post(f"{KEYS}/{issued['id']}/revoke", headers=ADMIN)
    assert (again.status_code, again.json()["code"]) == (409, "invalid_state")
    assert (await client.post(f"{KEYS}/99999/revoke", headers=ADMIN)).status_code == 404


async def test_an_admin_cannot_revoke_the_key_it_is_using(client: httpx.AsyncClient) -> None:
    own = next(k for k in (await client.get(KEYS, headers=ADMIN)).json() if k["name"] == "bootstrap")
    response = await client.post(f"{KEYS}/{own['id']}/revoke", headers=ADMIN)
    assert (response.status_code, response.json()["code"]) == (409, "invalid_state")
    assert (await client.get(KEYS, headers=ADMIN)).status_code == 200
    # Another admin key may revoke it.
    other = await issue(client, name="second admin")
    assert (await client.post(f"{KEYS}/{own['id']}/revoke", headers=bearer(other["key"]))).status_code == 200
    assert (await client.get(KEYS, headers=ADMIN)).status_code == 401


async def test_an_admin_cannot_rotate_the_key_it_is_using_without_a_grace_period(client: httpx.AsyncClient) -> None:
    own = next(k for k in (await client.get(KEYS, headers=ADMIN)).json() if k["name"] == "bootstrap")
    for body in (None, {"grace_seconds": 0}):
        response = await client.post(f"{KEYS}/{own['id']}/rotate", json=body, headers=ADMIN)
        assert (response.status_code, response.json()["code"]) == (409, "invalid_state")
        assert "lock you out" in response.json()["detail"]
    assert (await client.get(KEYS, headers=ADMIN)).status_code == 200
    assert [k["name"] for k in (await client.get(KEYS, headers=ADMIN)).json()] == ["bootstrap"]  # no successor
    assert not [r for r in await audit_records(client) if r.action == "api_key.rotated"]
    # With a grace period the caller can switch to the successor; another admin key may rotate it at once.
    successor = await client.post(f"{KEYS}/{own['id']}/rotate", json={"grace_seconds": 60}, headers=ADMIN)
    assert successor.status_code == 200, successor.text
    assert await works(client, ADMIN_KEY) == 200
    other = await issue(client, name="second admin", headers=bearer(successor.json()["key"]))
    now = await client.post(f"{KEYS}/{successor.json()['id']}/rotate", headers=bearer(other["key"]))
    assert now.status_code == 200, now.text
    assert await works(client, successor.json()["key"]) == 401


@pytest.mark.parametrize("retire", ["revoke", "rotate"])
async def test_a_restart_does_not_bring_back_a_revoked_or_rotated_bootstrap_key(
    database_url: str, analyser: BatchingAnalyser, caplog: pytest.LogCaptureFixture, retire: str
) -> None:
    settings = make_settings(database_url)
    async with running_app(settings, analyser) as client:
        other = await issue(client, name="second admin")
        own = next(k for k in (await client.get(KEYS, headers=ADMIN)).json() if k["name"] == "bootstrap")
        retired = await client.post(f"{KEYS}/{own['id']}/{retire}", headers=bearer(other["key"]))
        assert retired.status_code == 200, retired.text
        assert await works(client, ADMIN_KEY) == 401

    with caplog.at_level(logging.WARNING, logger="service.auth.keys"):
        async with running_app(settings, analyser) as client:
            assert await works(client, ADMIN_KEY) == 401
            listed = {k["name"]: k["state"] for k in (await client.get(KEYS, headers=bearer(other["key"]))).json()}
    assert listed["bootstrap"] == "revoked"
    assert any("bootstrap admin key" in r.getMessage() and own["prefix"] in r.getMessage() for r in caplog.records), (
        caplog.text
    )


async def test_rotation_keeps_the_old_key_working_during_the_grace_period_then_refuses_it(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await create_member(client, "ana")
    expires = (utcnow() + timedelta(days=30)).isoformat()
    old = await issue(client, role="responder", member="ana", name="ana's laptop", expires_at=expires)
    response = await client.post(f"{KEYS}/{old['id']}/rotate", json={"grace_seconds": 3}, headers=ADMIN)
    assert response.status_code == 200, response.text
    new = response.json()
    assert new["key"] != old["key"]
    assert new["id"] != old["id"]
    assert {k: new[k] for k in ("name", "role", "member", "expires_at")} == {
        k: old[k] for k in ("name", "role", "member", "expires_at")
    }
    assert await works(client, new["key"]) == 200
    assert await works(client, old["key"]) == 200  # within the grace period
    listed = {k["id"]: k for k in (await client.get(KEYS, headers=ADMIN)).json()}
    grace_end = datetime.fromisoformat(listed[old["id"]]["expires_at"])
    assert grace_end <= clock() + timedelta(seconds=3)
    assert listed[old["id"]]["revoked_at"] is None

    again = await client.post(f"{KEYS}/{old['id']}/rotate", json={}, headers=ADMIN)
    assert (again.status_code, again.json()["code"]) == (409, "invalid_state")  # rotate the successor instead

    clock.advance(3)  # the grace period ends
    assert clock() >= grace_end
    assert await works(client, old["key"]) == 401
    assert await works(client, new["key"]) == 200
    listed = {k["id"]: k for k in (await client.get(KEYS, headers=ADMIN)).json()}
    assert listed[old["id"]]["state"] == "expired"


async def test_rotation_without_grace_revokes_the_old_key_at_once(client: httpx.AsyncClient) -> None:
    old = await issue(client)
    response = await client.post(f"{KEYS}/{old['id']}/rotate", headers=ADMIN)  # no body: grace 0
    assert response.status_code == 200, response.text
    assert await works(client, old["key"]) == 401
    assert await works(client, response.json()["key"]) == 200
    listed = {k["id"]: k for k in (await client.get(KEYS, headers=ADMIN)).json()}
    assert listed[old["id"]]["state"] == "revoked"
    # A revoked key cannot be rotated; grace is at most 7 days.
    revoked = await client.post(f"{KEYS}/{old['id']}/rotate", headers=ADMIN)
    assert (revoked.status_code, revoked.json()["code"]) == (409, "invalid_state")
    too_long = await client.post(
        f"{KEYS}/{response.json()['id']}/rotate", json={"grace_seconds": 7 * 86400 + 1}, headers=ADMIN
    )
    assert too_long.status_code == 422


async def test_an_expired_key_is_refused(client: httpx.AsyncClient) -> None:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        _, expired = await keys.create_key(
            session, role=Role.admin, name="old", expires_at=utcnow() - timedelta(seconds=1), now=utcnow()
        )
        _, live = await keys.create_key(
            session, role=Role.admin, name="new", expires_at=utcnow() + timedelta(hours=1), now=utcnow()
        )
    response = await client.get(KEYS, headers=bearer(expired))
    assert (response.status_code, response.json()["code"]) == (401, "unauthenticated")
    assert (await client.get(KEYS, headers=bearer(live))).status_code == 200
    listed = {k["name"]: k["state"] for k in (await client.get(KEYS, headers=ADMIN)).json()}
    assert (listed["old"], listed["new"]) == ("expired", "active")


async def test_a_responder_key_cannot_manage_keys(client: httpx.AsyncClient) -> None:
    await create_member(client, "ana")
    responder = await responder_headers(client, "ana")
    other = await issue(client)
    for method, path, body in (
        ("GET", KEYS, None),
        ("GET", f"{KEYS}/{other['id']}", None),
        ("POST", KEYS, {"name": "mine", "role": "admin"}),
        ("POST", f"{KEYS}/{other['id']}/revoke", None),
        ("POST", f"{KEYS}/{other['id']}/rotate", None),
    ):
        response = await client.request(method, path, json=body, headers=responder)
        assert (response.status_code, response.json()["code"]) == (403, "forbidden"), (method, path)
    assert await works(client, other["key"]) == 200
    assert (await client.get(KEYS)).status_code == 401


async def test_every_key_change_is_audited_by_prefix_without_the_key_or_its_hash(client: httpx.AsyncClient) -> None:
    await create_member(client, "ana")
    created = await issue(client, role="responder", member="ana", name="ana's laptop")
    rotated = (await client.post(f"{KEYS}/{created['id']}/rotate", json={"grace_seconds": 60}, headers=ADMIN)).json()
    await client.post(f"{KEYS}/{rotated['id']}/revoke", headers=ADMIN)

    records = [r for r in await audit_records(client) if r.target_type == "api_key"]
    actions = [(r.action, r.target_id) for r in records if r.action != "api_key.bootstrapped"]
    assert actions == [
        ("api_key.created", created["prefix"]),
        ("api_key.created", rotated["prefix"]),
        ("api_key.rotated", created["prefix"]),
        ("api_key.revoked", rotated["prefix"]),
    ]
    bootstrap = next(k for k in (await client.get(KEYS, headers=ADMIN)).json() if k["name"] == "bootstrap")
    assert {r.actor for r in records if r.action != "api_key.bootstrapped"} == {f"key:{bootstrap['id']}:bootstrap"}
    rotation = next(r for r in records if r.action == "api_key.rotated")
    assert rotation.after is not None
    assert (rotation.after["replaced_by"], rotation.after["grace_seconds"]) == (rotated["prefix"], 60)
    trail = json.dumps([[r.actor, r.target_id, r.before, r.after] for r in records])
    for raw in (created["key"], rotated["key"]):
        assert raw not in trail
        assert keys.hash_key(raw) not in trail
