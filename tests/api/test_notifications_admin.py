"""Notification channels, subscriptions and preferences through the API: CRUD, validation, write-only secrets,
access, and a new item reaching its owner's inbox without the comment's personal data."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col

from service.notifications import batching
from service.outbound.tables import OutboundMessage
from tests.clock import FakeClock
from tests.conftest import drain
from tests.factories import (
    ADMIN,
    comment_payload,
    create_member,
    create_source,
    create_team,
    post_event,
    put_rules,
    responder_headers,
)

SMTP_PASSWORD = "smtp-pa55word-never-shown"
SLACK_URL = "https://hooks.slack.com/services/T000/B000/slacktokenneverShown"
TEAMS_URL = "https://prod-01.westeurope.logic.azure.com/workflows/abc/triggers/manual/run?sig=teamsSigNeverShown"
WEBHOOK_URL = "https://receiver.example/hooks/switchboard?token=hookTokenNeverShown"
SECRETS = (SMTP_PASSWORD, "slacktokenneverShown", "teamsSigNeverShown", "hookTokenNeverShown")


def email_channel(channel_id: str = "mail", **config: Any) -> dict[str, Any]:
    return {
        "id": channel_id,
        "name": "Corporate mail",
        "kind": "email",
        "config": {
            "host": "smtp.corp.example", "port": 587, "security": "starttls", "username": "switchboard",
            "password": SMTP_PASSWORD, "from_address": "switchboard@corp.example", **config,
        },
    }  # fmt: skip


def url_channel(channel_id: str, kind: str, url: str) -> dict[str, Any]:
    return {"id": channel_id, "name": channel_id.title(), "kind": kind, "config": {"url": url}}


async def create_channel(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/admin/channels", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    code: str = response.json()["code"]
    return code


# ---- channels ------------------------------------------------------------------------------------------------


async def test_an_admin_creates_reads_updates_and_deletes_an_email_channel(client: httpx.AsyncClient) -> None:
    created = await create_channel(client, email_channel())
    assert created["config"] == {
        "host": "smtp.corp.example", "port": 587, "security": "starttls", "username": "switchboard",
        "from_address": "switchboard@corp.example", "password_set": True,
    }  # fmt: skip
    assert created["secret"] is None
    assert created["active"] is True

    listed = (await client.get("/v1/admin/channels", headers=ADMIN)).json()
    assert [c["id"] for c in listed] == ["mail"]
    patched = await client.patch(
        "/v1/admin/channels/mail", json={"name": "Mail", "config": {"port": 465, "security": "tls"}}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["name"] == "Mail"
    assert patched.json()["config"] == created["config"] | {"port": 465, "security": "tls"}  # password kept
    off = await client.patch("/v1/admin/channels/mail", json={"active": False}, headers=ADMIN)
    assert off.json()["active"] is False
    assert (await client.get("/v1/admin/channels/mail", headers=ADMIN)).json()["config"]["port"] == 465

    assert (await client.delete("/v1/admin/channels/mail", headers=ADMIN)).status_code == 204
    gone = await client.get("/v1/admin/channels/mail", headers=ADMIN)
    assert gone.status_code == 404
    assert problem_code(gone) == "not_found"
    assert (await client.get("/v1/admin/channels", headers=ADMIN)).json() == []
    again = await client.post("/v1/admin/channels", json=email_channel(), headers=ADMIN)
    assert again.status_code == 409
    assert problem_code(again) == "already_exists"


async def test_a_duplicate_channel_id_is_a_conflict(client: httpx.AsyncClient) -> None:
    await create_channel(client, url_channel("ops", "slack", SLACK_URL))
    response = await client.post("/v1/admin/channels", json=url_channel("ops", "teams", TEAMS_URL), headers=ADMIN)
    assert response.status_code == 409
    assert problem_code(response) == "already_exists"


async def test_a_webhook_channel_secret_is_shown_once_and_no_secret_is_ever_returned_or_audited(
    client: httpx.AsyncClient,
) -> None:
    await create_channel(client, email_channel())
    slack = await create_channel(client, url_channel("slack-hr", "slack", SLACK_URL))
    teams = await create_channel(client, url_channel("teams-hr", "teams", TEAMS_URL))
    hook = await create_channel(client, url_channel("hook", "webhook", WEBHOOK_URL))
    assert hook["secret"].startswith("whsec_")
    assert slack["secret"] is None
    assert teams["secret"] is None
    assert slack["config"] == {"url_host": "hooks.slack.com"}
    assert hook["config"] == {"url_host": "receiver.example"}
    for created in (slack, teams):
        assert not any(s in json.dumps(created) for s in SECRETS)

    new_url = "https://hooks.slack.com/services/T000/B000/rotatedTokenNeverShown"
    patched = await client.patch("/v1/admin/channels/slack-hr", json={"config": {"url": new_url}}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    seen = [
        patched.text,
        (await client.get("/v1/admin/channels", headers=ADMIN)).text,
        *[(await client.get(f"/v1/admin/channels/{c}", headers=ADMIN)).text for c in ("mail", "slack-hr", "hook")],
        (await client.get("/v1/admin/audit", params={"target_type": "channel"}, headers=ADMIN)).text,
    ]
    for text in seen:
        for secret in (*SECRETS, "rotatedTokenNeverShown", hook["secret"]):
            assert secret not in text
    audit = (await client.get("/v1/admin/audit", params={"target_type": "channel"}, headers=ADMIN)).json()
    assert {e["action"] for e in audit["items"]} == {"channel.created", "channel.updated"}


async def test_channel_configs_are_validated(client: httpx.AsyncClient) -> None:
    bad = [
        url_channel("a", "slack", "ftp://hooks.example/x"),
        url_channel("b", "teams", "not a url"),
        url_channel("c", "webhook", "https://"),
        email_channel("d", port=0),
        email_channel("e", port=70000),
        email_channel("f", security="ssl"),
        email_channel("g", from_address="not-an-address"),
        email_channel("h", host="smtp corp"),
        {
            **email_channel("i"),
            "config": {"host": "smtp.corp.example", "from_address": "a@b.example", "username": "only-a-user"},
        },
        {**url_channel("j", "slack", SLACK_URL), "kind": "email"},  # a URL for an e-mail channel
        {**email_channel("k"), "kind": "slack"},
        {**url_channel("l", "slack", SLACK_URL), "extra": 1},
        {**url_channel("m", "slack", SLACK_URL), "config": {"url": SLACK_URL, "token": "x"}},
        url_channel("Bad_Id", "slack", SLACK_URL),
        url_channel("n", "sms", SLACK_URL),
    ]
    for body in bad:
        response = await client.post("/v1/admin/channels", json=body, headers=ADMIN)
        assert response.status_code == 422, (body, response.text)
        assert SMTP_PASSWORD not in response.text
        assert "slacktokenneverShown" not in response.text
    assert (await client.get("/v1/admin/channels", headers=ADMIN)).json() == []

    await create_channel(client, email_channel())
    for patch in ({"config": {"port": "587x"}}, {"config": {"password": None}}, {"config": {"url": SLACK_URL}},
                  {"active": "yes"}, {"nope": 1}):  # fmt: skip
        response = await client.patch("/v1/admin/channels/mail", json=patch, headers=ADMIN)
        assert response.status_code == 422, (patch, response.text)
    cleared = await client.patch(
        "/v1/admin/channels/mail", json={"config": {"username": None, "password": None}}, headers=ADMIN
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["config"]["password_set"] is False

    await create_channel(client, url_channel("hook", "webhook", WEBHOOK_URL))
    response = await client.patch("/v1/admin/channels/hook", json={"config": {"url": "javascript:alert(1)"}},
                                  headers=ADMIN)  # fmt: skip
    assert response.status_code == 422
    assert problem_code(response) == "invalid_payload"
    for method in ("get", "patch", "delete"):
        kwargs: dict[str, Any] = {"json": {"name": "x"}} if method == "patch" else {}
        response = await client.request(method, "/v1/admin/channels/nothing-here", headers=ADMIN, **kwargs)
        assert response.status_code == 404
        assert problem_code(response) == "not_found"


# ---- subscriptions -------------------------------------------------------------------------------------------


async def test_subscriptions_are_created_listed_paged_and_deleted(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "hr1", email="hr1@corp.example")
    await create_team(client, "hr", ["hr1"])
    await create_channel(client, email_channel())
    await create_channel(client, url_channel("slack-hr", "slack", SLACK_URL))
    bodies = [
        {"channel": "mail", "events": ["item.assigned", "item.escalated"], "member": "hr1"},
        {"channel": "slack-hr", "events": ["comment.held"], "team": "hr"},
        {"channel": "slack-hr", "events": ["item.escalated"]},
    ]
    ids = []
    for body in bodies:
        response = await client.post("/v1/admin/subscriptions", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        assert response.json()["channel"] == body["channel"]
        ids.append(response.json()["id"])

    page = (await client.get("/v1/admin/subscriptions", params={"limit": 2}, headers=ADMIN)).json()
    assert [s["id"] for s in page["items"]] == ids[:2]
    rest = await client.get("/v1/admin/subscriptions", params={"cursor": page["next_cursor"]}, headers=ADMIN)
    assert [s["id"] for s in rest.json()["items"]] == ids[2:]
    assert rest.json()["next_cursor"] is None
    slack = (await client.get("/v1/admin/subscriptions", params={"channel": "slack-hr"}, headers=ADMIN)).json()
    assert [s["id"] for s in slack["items"]] == ids[1:]
    bad_cursor = await client.get("/v1/admin/subscriptions", params={"cursor": "nope"}, headers=ADMIN)
    assert bad_cursor.status_code == 422
    assert problem_code(bad_cursor) == "invalid_cursor"

    assert (await client.delete(f"/v1/admin/subscriptions/{ids[0]}", headers=ADMIN)).status_code == 204
    again = await client.delete(f"/v1/admin/subscriptions/{ids[0]}", headers=ADMIN)
    assert again.status_code == 404
    assert problem_code(again) == "not_found"
    assert (await client.delete("/v1/admin/subscriptions/99999999999", headers=ADMIN)).status_code == 422

    # Deleting a channel removes its subscriptions.
    assert (await client.delete("/v1/admin/channels/slack-hr", headers=ADMIN)).status_code == 204
    left = (await client.get("/v1/admin/subscriptions", headers=ADMIN)).json()
    assert left["items"] == []


async def test_subscriptions_are_validated(client: httpx.AsyncClient) -> None:
    await create_member(client, "hr1")
    await create_team(client, "hr", ["hr1"])
    await create_channel(client, email_channel())
    invalid = [
        ({"channel": "nothing", "events": ["item.assigned"]}, "invalid_payload"),
        ({"channel": "mail", "events": ["item.assigned"], "member": "ghost"}, "invalid_payload"),
        ({"channel": "mail", "events": ["item.assigned"], "team": "ghosts"}, "invalid_payload"),
        ({"channel": "mail", "events": ["item.assigned"], "member": "hr1", "team": "hr"}, "validation_error"),
        ({"channel": "mail", "events": ["item.exploded"]}, "validation_error"),
        ({"channel": "mail", "events": []}, "validation_error"),
        ({"channel": "mail", "events": ["item.assigned", "item.assigned"]}, "validation_error"),
        ({"channel": "mail", "events": ["item.assigned"], "extra": True}, "validation_error"),
    ]
    for body, code in invalid:
        response = await client.post("/v1/admin/subscriptions", json=body, headers=ADMIN)
        assert response.status_code == 422, (body, response.text)
        assert problem_code(response) == code, body
    assert (await client.get("/v1/admin/subscriptions", headers=ADMIN)).json()["items"] == []


# ---- preferences ---------------------------------------------------------------------------------------------


async def test_admins_and_members_read_and_replace_notification_preferences(client: httpx.AsyncClient) -> None:
    await create_member(client, "hr1", email="hr1@corp.example")
    await create_channel(client, email_channel())
    url = "/v1/admin/members/hr1/notification-preferences"
    defaults = (await client.get(url, headers=ADMIN)).json()
    assert defaults == {"member": "hr1", "events": None, "channels": None, "digest": False, "digest_hour": 8,
                        "updated_at": None}  # fmt: skip

    body = {"events": ["item.escalated", "item.assigned"], "channels": ["mail"], "digest": True, "digest_hour": 6}
    put = await client.put(url, json=body, headers=ADMIN)
    assert put.status_code == 200, put.text
    assert put.json()["events"] == ["item.assigned", "item.escalated"]
    assert put.json()["updated_at"] is not None
    assert (await client.get(url, headers=ADMIN)).json() == put.json()

    member = await responder_headers(client, "hr1")
    mine = await client.get("/v1/me/notification-preferences", headers=member)
    assert mine.status_code == 200
    assert mine.json() == put.json()
    changed = await client.put("/v1/me/notification-preferences", json={"digest": False}, headers=member)
    assert changed.status_code == 200, changed.text
    assert changed.json() | {"updated_at": None} == defaults  # a PUT replaces: the rest back to defaults
    audit = (await client.get("/v1/admin/audit", params={"action": "notification_preference."}, headers=ADMIN)).json()
    assert next(e["actor"] for e in audit["items"]) == "key:2:responder hr1"  # the member's key, as in the queue

    for bad in ({"digest_hour": 24}, {"digest_hour": -1}, {"digest": "yes"}, {"events": ["nope"]},
                {"channels": ["nothing"]}, {"unknown": 1}):  # fmt: skip
        response = await client.put(url, json=bad, headers=ADMIN)
        assert response.status_code == 422, (bad, response.text)
    missing = await client.get("/v1/admin/members/ghost/notification-preferences", headers=ADMIN)
    assert missing.status_code == 404
    assert problem_code(missing) == "not_found"
    no_member = await client.get("/v1/me/notification-preferences", headers=ADMIN)
    assert no_member.status_code == 409
    assert problem_code(no_member) == "invalid_state"


async def test_responders_cannot_use_the_admin_notification_routes(client: httpx.AsyncClient) -> None:
    await create_member(client, "hr1")
    responder = await responder_headers(client, "hr1")
    calls = [
        ("post", "/v1/admin/channels", email_channel()),
        ("get", "/v1/admin/channels", None),
        ("get", "/v1/admin/channels/mail", None),
        ("patch", "/v1/admin/channels/mail", {"name": "x"}),
        ("delete", "/v1/admin/channels/mail", None),
        ("post", "/v1/admin/subscriptions", {"channel": "mail", "events": ["item.assigned"]}),
        ("get", "/v1/admin/subscriptions", None),
        ("delete", "/v1/admin/subscriptions/1", None),
        ("get", "/v1/admin/members/hr1/notification-preferences", None),
        ("put", "/v1/admin/members/hr1/notification-preferences", {"digest": True}),
    ]
    for method, path, body in calls:
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        response = await client.request(method, path, headers=responder, **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        assert (await client.request(method, path, **kwargs)).status_code == 401
    assert (await client.get("/v1/admin/channels", headers=ADMIN)).json() == []


# ---- end to end ----------------------------------------------------------------------------------------------


async def test_a_member_with_email_notifications_gets_one_message_for_a_new_item_without_personal_data(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    secret = await create_source(client)
    await create_member(client, "author", email="author@corp.example", external={"intranet": "u-7"})
    await put_rules(client, [{
        "id": "stories", "name": "News stories go to their author",
        "when": {"field": "thread_kind", "op": "eq", "value": "news"},
        "then": {"assign": {"to": "thread_author"}, "sla": "PT4H"},
    }])  # fmt: skip
    await create_channel(client, email_channel())
    subscription = {"channel": "mail", "events": ["item.assigned"], "member": "author"}
    assert (await client.post("/v1/admin/subscriptions", json=subscription, headers=ADMIN)).status_code == 201

    body = "Why was my expense claim refused? Reach me at pat.smith@example.org or +44 20 7946 0958."
    assert (await post_event(client, secret, comment_payload("c-1", body=body))).status_code == 202
    await drain(client)

    services = client.app.state.services  # type: ignore[attr-defined]
    now = clock() + timedelta(seconds=services.settings.notify_quiet_seconds + 1)
    assert await batching.flush(services.session_factory, settings=services.settings, now=now) == 1
    assert await batching.flush(services.session_factory, settings=services.settings, now=now) == 0
    async with services.session_factory() as session:
        sent = list((await session.execute(sa.select(OutboundMessage).where(
            col(OutboundMessage.target) == "channel:mail"))).scalars())  # fmt: skip
    assert len(sent) == 1
    payload = sent[0].payload
    assert payload["to"] == ["author@corp.example"]
    assert "New canteen opening hours" in payload["subject"]
    everything = json.dumps(payload)
    for personal in ("pat.smith@example.org", "pat.smith", "+44 20", "7946 0958"):
        assert personal not in everything
    assert "expense claim refused" in payload["text"]
    assert f"/v1/queue/{sent[0].item_id}" in payload["text"]
