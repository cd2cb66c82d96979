"""Platform connectors through the API: a source's kind selects its connector, whose settings and credentials are
checked, stored (credentials encrypted, never shown again) and reflected in the source's capabilities; a WordPress
source takes the plugin's events at the same webhook URL. (Real WordPress: tests/e2e/test_wordpress_e2e.py.)"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from service.database import create_engine
from tests.conftest import drain
from tests.factories import ADMIN, encode, signed_headers

WORDPRESS = {
    "slug": "news",
    "name": "Intranet news",
    "kind": "wordpress",
    "settings": {"site_url": "https://intranet.example", "username": "switchboard", "reject_as": "trash"},
    "credentials": {"application_password": "abcd efgh ijkl mnop qrst uvwx"},
}


def plugin_event(kind: str, comment_id: str = "41", **comment: Any) -> dict[str, Any]:
    """An event as the WordPress plugin sends it."""
    return {
        "type": kind,
        "event_id": f"wpc_{uuid.uuid4().hex}",
        "occurred_at": "2026-12-01T10:05:00Z",
        "site": {"url": "https://intranet.example", "name": "Intranet"},
        "comment": {
            "id": comment_id, "post_id": "7", "parent_id": None, "status": "approved",
            "content": "Will the shuttle bus run during the strike?", "date_gmt": "2026-12-01T10:00:00Z",
            "link": "https://intranet.example/news/shuttle#comment-41",
            "author": {"user_id": "12", "name": "Sam", "email": "sam@example.com"},
            "switchboard_reply_id": None, **comment,
        },
        "post": {
            "id": "7", "title": "Shuttle bus timetable", "link": "https://intranet.example/news/shuttle",
            "type": "post", "categories": ["Facilities", "News"],
            "author": {"user_id": "3", "name": "Anna", "email": "anna@example.com"},
        },
    }  # fmt: skip


async def test_a_wordpress_source_keeps_its_password_secret_and_can_reply_and_moderate(
    client: httpx.AsyncClient, database_url: str
) -> None:
    created = await client.post("/v1/admin/sources", json=WORDPRESS, headers=ADMIN)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["kind"] == "wordpress"
    assert body["settings"] == WORDPRESS["settings"]
    assert body["credentials_set"] == ["application_password"]
    assert body["capabilities"] == ["receive", "reply", "hold", "release", "reject"]  # no `resolve` in WordPress
    assert "abcd efgh" not in created.text
    listed = await client.get("/v1/admin/sources/news", headers=ADMIN)
    assert "abcd efgh" not in listed.text
    engine = create_engine(database_url)
    async with engine.connect() as connection:
        stored = (await connection.execute(sa.text("SELECT credentials FROM source"))).scalar_one()
    await engine.dispose()
    assert stored.startswith("enc:v1:")  # encrypted at rest
    # Removing the password (null) leaves a source that only receives.
    patched = await client.patch(
        "/v1/admin/sources/news", json={"credentials": {"application_password": None}}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["credentials_set"] == []
    assert patched.json()["capabilities"] == ["receive"]
    assert patched.json()["settings"] == WORDPRESS["settings"]


@pytest.mark.parametrize(
    ("settings", "credentials"),
    [
        ({"site": "https://x.example"}, {}),  # an unknown setting
        ({"site_url": "ftp://x.example"}, {}),
        ({"reject_as": "delete"}, {}),
        ({}, {"password": "x"}),  # an unknown credential
        ({"username": ""}, {}),
    ],
)
async def test_bad_connector_settings_are_refused_and_nothing_is_created(
    client: httpx.AsyncClient, settings: dict[str, Any], credentials: dict[str, Any]
) -> None:
    body = {**WORDPRESS, "settings": settings, "credentials": credentials}
    response = await client.post("/v1/admin/sources", json=body, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_payload"
    assert (await client.get("/v1/admin/sources", headers=ADMIN)).json() == []


async def test_a_standard_source_takes_no_platform_settings(client: httpx.AsyncClient) -> None:
    body = {"slug": "generic", "name": "Generic", "settings": {"site_url": "https://x.example"}}
    response = await client.post("/v1/admin/sources", json=body, headers=ADMIN)
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_payload"


async def test_the_plugins_events_become_comments_threads_and_deletions(client: httpx.AsyncClient) -> None:
    created = await client.post("/v1/admin/sources", json=WORDPRESS, headers=ADMIN)
    secret = created.json()["secret"]

    async def send(event: dict[str, Any], webhook_id: str | None = None) -> httpx.Response:
        raw = encode(event)
        return await client.post(
            "/v1/webhooks/news", content=raw, headers=signed_headers(secret, raw, webhook_id=webhook_id)
        )

    first = plugin_event("comment.created")
    accepted = await send(first, webhook_id=first["event_id"])
    assert accepted.status_code == 202, accepted.text
    again = await send(first, webhook_id=first["event_id"])  # the plugin's retry of the same event
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    await drain(client)
    comment_id = accepted.json()["id"]
    comment = (await client.get(f"/v1/comments/{comment_id}", headers=ADMIN)).json()
    assert comment["external_id"] == "41"
    assert comment["body"] == "Will the shuttle bus run during the strike?"
    assert comment["thread"]["id"] == "7"
    assert comment["thread"]["title"] == "Shuttle bus timetable"
    assert comment["thread"]["channel"] == "Facilities"
    assert comment["thread"]["author_id"] == "3"
    assert comment["author_id"] == "12"
    edited = plugin_event("comment.updated", content="Will the shuttle bus run during the strike on Friday?")
    edited["occurred_at"] = "2026-12-01T10:07:00Z"
    assert (await send(edited)).status_code == 202
    assert (await client.get(f"/v1/comments/{comment_id}", headers=ADMIN)).json()["version"] == 2
    spammed = plugin_event("comment.deleted", status="spam")
    assert (await send(spammed)).status_code == 202
    assert (await client.get(f"/v1/comments/{comment_id}", headers=ADMIN)).json()["deleted_at"] is not None


async def test_a_plugin_event_that_is_not_the_plugins_format_is_refused_with_problem_details(
    client: httpx.AsyncClient,
) -> None:
    secret = (await client.post("/v1/admin/sources", json=WORDPRESS, headers=ADMIN)).json()["secret"]
    for event in ({"type": "comment.created"}, {**plugin_event("comment.created"), "type": "comment.liked"}):
        raw = encode(event)
        response = await client.post("/v1/webhooks/news", content=raw, headers=signed_headers(secret, raw))
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_payload"
    raw = encode(plugin_event("comment.created"))
    unsigned = await client.post("/v1/webhooks/news", content=raw, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401
