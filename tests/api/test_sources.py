"""Admin API for sources, secret rotation, and who may call it."""

from __future__ import annotations

import base64
from datetime import timedelta

import httpx
import pytest

from classifiers.pipeline import BatchingAnalyser
from service.models.base import utcnow
from tests.conftest import make_settings, running_app
from tests.factories import ADMIN, comment_payload, create_source, post_event


async def test_created_source_returns_its_secret_once(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/admin/sources", json={"slug": "news", "name": "Newsroom"}, headers=ADMIN)
    assert response.status_code == 201
    created = response.json()
    assert created["secret"].startswith("whsec_")
    assert len(base64.b64decode(created["secret"].removeprefix("whsec_"))) == 32
    assert created["webhook_path"] == "/v1/webhooks/news"
    listed = (await client.get("/v1/admin/sources", headers=ADMIN)).json()
    assert [s["slug"] for s in listed] == ["news"]
    assert "secret" not in listed[0]
    assert "secret" not in (await client.get("/v1/admin/sources/news", headers=ADMIN)).json()


async def test_source_slug_is_unique(client: httpx.AsyncClient) -> None:
    await create_source(client, "news")
    again = await client.post("/v1/admin/sources", json={"slug": "news", "name": "Again"}, headers=ADMIN)
    assert again.status_code == 409
    assert again.json()["code"] == "already_exists"


@pytest.mark.parametrize(
    "body",
    [
        {"slug": "Has Spaces", "name": "x"},
        {"slug": "ok", "name": ""},
        {"slug": "ok", "name": "x", "kind": "smoke-signals"},
        {"slug": "ok", "name": "x", "secret": "whsec_mine"},
    ],
)
async def test_invalid_source_is_422(client: httpx.AsyncClient, body: dict[str, str]) -> None:
    response = await client.post("/v1/admin/sources", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"
    assert (await client.get("/v1/admin/sources", headers=ADMIN)).json() == []


async def test_patch_renames_and_deactivates(client: httpx.AsyncClient) -> None:
    await create_source(client, "news")
    patched = await client.patch("/v1/admin/sources/news", json={"name": "Newsroom", "active": False}, headers=ADMIN)
    assert patched.status_code == 200
    assert (patched.json()["name"], patched.json()["active"]) == ("Newsroom", False)
    bad = await client.patch("/v1/admin/sources/news", json={"slug": "renamed"}, headers=ADMIN)
    assert bad.status_code == 422


async def test_deleted_source_refuses_webhooks_and_keeps_its_comments(client: httpx.AsyncClient) -> None:
    secret = await create_source(client)
    accepted = await post_event(client, secret, comment_payload())
    assert (await client.delete("/v1/admin/sources/intranet", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/admin/sources/intranet", headers=ADMIN)).status_code == 404
    assert (await post_event(client, secret, comment_payload("c-2"))).status_code == 404
    kept = await client.get(f"/v1/comments/{accepted.json()['id']}", headers=ADMIN)
    assert kept.status_code == 200
    assert kept.json()["source"] == "intranet"


async def test_unknown_source_routes_are_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/admin/sources/none"),
        ("PATCH", "/v1/admin/sources/none"),
        ("DELETE", "/v1/admin/sources/none"),
        ("POST", "/v1/admin/sources/none/rotate-secret"),
    ]:
        response = await client.request(method, path, headers=ADMIN, json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "not_found"


async def test_both_secrets_work_during_rotation_overlap(client: httpx.AsyncClient) -> None:
    old = await create_source(client)
    rotated = await client.post("/v1/admin/sources/intranet/rotate-secret", headers=ADMIN)
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new != old
    assert (await post_event(client, old, comment_payload("c-old"))).status_code == 202
    assert (await post_event(client, new, comment_payload("c-new"))).status_code == 202


async def test_only_the_new_secret_works_after_the_grace_period(database_url: str, analyser: BatchingAnalyser) -> None:
    # A zero grace period is the end of any overlap: the previous secret is refused at once.
    async with running_app(make_settings(database_url, secret_rotation_grace_hours=0), analyser) as client:
        old = await create_source(client)
        new = (await client.post("/v1/admin/sources/intranet/rotate-secret", headers=ADMIN)).json()["secret"]
        refused = await post_event(client, old, comment_payload("c-old"))
        assert refused.status_code == 401
        assert refused.json()["code"] == "invalid_signature"
        assert (await post_event(client, new, comment_payload("c-new"))).status_code == 202


def test_previous_secret_expires_exactly_at_the_end_of_grace() -> None:
    from service.models import Source
    from service.sources import valid_secrets

    now = utcnow()
    source = Source(
        slug="s",
        name="s",
        kind="standard",
        secret="whsec_new",
        previous_secret="whsec_old",
        previous_secret_expires_at=now + timedelta(hours=24),
    )
    assert valid_secrets(source, now) == ["whsec_new", "whsec_old"]
    assert valid_secrets(source, now + timedelta(hours=23, minutes=59)) == ["whsec_new", "whsec_old"]
    assert valid_secrets(source, now + timedelta(hours=24)) == ["whsec_new"]


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthenticated"),
        ({"Authorization": "Bearer sbk_nope"}, 401, "unauthenticated"),
        ({"Authorization": "Basic YWRtaW46YWRtaW4="}, 401, "unauthenticated"),
    ],
)
async def test_admin_routes_need_an_admin_key(
    client: httpx.AsyncClient, headers: dict[str, str], status: int, code: str
) -> None:
    for method, path in [
        ("GET", "/v1/admin/sources"),
        ("POST", "/v1/admin/sources"),
        ("GET", "/v1/admin/jobs"),
        ("GET", "/v1/comments/00000000-0000-0000-0000-000000000000"),
    ]:
        response = await client.request(method, path, headers=headers, json={"slug": "x", "name": "x"})
        assert response.status_code == status, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code


async def test_responder_key_is_forbidden_on_admin_routes(client: httpx.AsyncClient) -> None:
    from service.auth import keys
    from service.database import transaction
    from service.models import Role

    async with transaction(client.app.state.services.session_factory) as session:  # type: ignore[attr-defined]
        _, raw = await keys.create_key(session, role=Role.responder, name="hr", member_id="m-1", now=utcnow())
    response = await client.get("/v1/admin/sources", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden"


async def test_revoked_and_expired_keys_are_refused(client: httpx.AsyncClient) -> None:
    from service.auth import keys
    from service.database import transaction
    from service.models import Role

    async with transaction(client.app.state.services.session_factory) as session:  # type: ignore[attr-defined]
        revoked, revoked_raw = await keys.create_key(session, role=Role.admin, name="old", now=utcnow())
        revoked.revoked_at = utcnow()
        _, expired_raw = await keys.create_key(
            session, role=Role.admin, name="temp", expires_at=utcnow() - timedelta(seconds=1), now=utcnow()
        )
    for raw in (revoked_raw, expired_raw):
        response = await client.get("/v1/admin/sources", headers={"Authorization": f"Bearer {raw}"})
        assert response.status_code == 401


async def test_bootstrap_key_is_created_once_when_processes_start_together(database_url: str) -> None:
    import asyncio

    import sqlalchemy as sa

    from service.auth import keys
    from service.database import create_engine, create_session_factory, transaction
    from service.models import Role

    engine = create_engine(database_url)
    factory = create_session_factory(engine)

    async def start_one() -> None:
        async with transaction(factory) as session:
            await keys.ensure_key(session, raw="sbk_bootstrap-value", role=Role.admin, name="bootstrap", now=utcnow())

    await asyncio.gather(*[start_one() for _ in range(4)])
    async with factory() as session:
        count = (await session.execute(sa.text("SELECT count(*) FROM api_key"))).scalar_one()
        audited = (await session.execute(sa.text("SELECT count(*) FROM audit_event"))).scalar_one()
    await engine.dispose()
    assert (count, audited) == (1, 1)


async def test_source_thresholds_can_be_set_and_are_validated(client: httpx.AsyncClient) -> None:
    await create_source(client, "news")
    ok = await client.patch("/v1/admin/sources/news", json={"thresholds": {"offensive": 0.8}}, headers=ADMIN)
    assert ok.json()["thresholds"] == {"offensive": 0.8}
    for bad in ({"offensive": 1.5}, {"sarcasm": 0.5}):
        response = await client.patch("/v1/admin/sources/news", json={"thresholds": bad}, headers=ADMIN)
        assert response.status_code == 422
    assert (await client.get("/v1/admin/sources/news", headers=ADMIN)).json()["thresholds"] == {"offensive": 0.8}
    reset = await client.patch("/v1/admin/sources/news", json={"thresholds": {}}, headers=ADMIN)
    assert reset.json()["thresholds"] == {}
