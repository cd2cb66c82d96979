"""Notifications to Slack, Microsoft Teams (Workflows) and signed webhook channels, end to end through a real HTTP
receiver on loopback, on SQLite and PostgreSQL: what each channel receives, that the generic webhook verifies with
the secret shown once at its creation, and that Teams' throttling inside a 2xx answer is retried."""

from __future__ import annotations

from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from classifiers.pipeline import BatchingAnalyser
from tests.clock import FakeClock
from tests.conftest import make_settings, running_app
from tests.e2e.test_notifications_smtp import QUIET, new_comment, settle
from tests.factories import ADMIN, create_member, create_source, create_team, put_rules
from tests.receiver import Answer, Receiver

BASE_URL = "https://switchboard.example"
BODY = "Is the car park closed on Friday? Call me on +44 20 7946 0958 or mail jane.doe@example.com."


async def channel(client: httpx.AsyncClient, channel_id: str, kind: str, url: str) -> dict[str, Any]:
    body = {"id": channel_id, "name": channel_id.title(), "kind": kind, "config": {"url": url}}
    response = await client.post("/v1/admin/channels", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    subscription = {"channel": channel_id, "events": ["item.assigned"], "team": "facilities"}
    response = await client.post("/v1/admin/subscriptions", json=subscription, headers=ADMIN)
    assert response.status_code == 201, response.text
    return created


async def facilities_team(client: httpx.AsyncClient) -> str:
    secret = await create_source(client)
    await create_member(client, "sam")
    await create_team(client, "facilities", ["sam"])
    await put_rules(client, [{"id": "all", "name": "Everything to facilities",
                              "then": {"assign": {"to": "team", "team": "facilities"}, "sla": "PT4H"}}])  # fmt: skip
    return secret


async def test_slack_teams_and_webhook_channels_each_receive_one_message_for_a_burst_without_personal_data(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock
) -> None:
    settings = make_settings(database_url, public_base_url=BASE_URL, notify_quiet_seconds=QUIET)
    with Receiver() as receiver:
        async with running_app(settings, analyser, clock=clock) as client:
            secret = await facilities_team(client)
            await channel(client, "slack", "slack", f"{receiver.url}/slack")
            await channel(client, "teams", "teams", f"{receiver.url}/teams")
            created = await channel(client, "hooks", "webhook", f"{receiver.url}/hooks")
            assert created["secret"].startswith("whsec_")  # shown once, here
            listed = (await client.get("/v1/admin/channels", headers=ADMIN)).text
            assert "/slack" not in listed  # a chat channel's URL is its credential: never shown
            assert "/teams" not in listed
            for n in range(3):
                await new_comment(client, secret, f"c-{n}", f"{BODY} ({n})", author=f"u-{n}")
            assert receiver.requests == []  # a burst is still arriving: nothing yet
            clock.advance(QUIET + 1)
            found = await settle(client)
    assert [d["state"] for d in found] == ["delivered"] * 3
    by_path = {r.path.rsplit("/", 1)[-1]: r for r in receiver.requests}
    assert sorted(by_path) == ["hooks", "slack", "teams"]  # one message each for the three items
    assert len(receiver.requests) == 3
    for request in by_path.values():
        assert "7946" not in request.body.decode()
        assert "jane.doe" not in request.body.decode()
        assert f"{BASE_URL}/v1/queue/" in request.body.decode()
    slack = by_path["slack"].json()
    assert slack["text"].startswith("[Switchboard] 3 notifications")  # the text mobile notifications show
    assert len([b for b in slack["blocks"] if b["type"] == "section"]) == 3
    teams = by_path["teams"].json()
    assert teams["type"] == "message"
    assert teams["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert teams["attachments"][0]["content"]["type"] == "AdaptiveCard"
    hooks = by_path["hooks"]
    event = Webhook(created["secret"]).verify(hooks.body, hooks.headers)
    assert event["type"] == "notification"
    assert hooks.webhook_id in {d["key"] for d in found}


async def test_teams_throttling_reported_inside_a_2xx_is_retried(
    database_url: str, analyser: BatchingAnalyser, clock: FakeClock
) -> None:
    settings = make_settings(database_url, notify_quiet_seconds=QUIET, outbound_backoff_seconds=1)
    with Receiver() as receiver:
        receiver.script(Answer(200, body=b"Microsoft Teams endpoint returned HTTP error 429"))
        async with running_app(settings, analyser, clock=clock) as client:
            secret = await facilities_team(client)
            await channel(client, "teams", "teams", f"{receiver.url}/teams")
            await new_comment(client, secret, "c-1", "Is the car park closed on Friday?", author="u-1")
            clock.advance(QUIET + 1)
            first = await settle(client)
            assert [(d["state"], d["attempts"], d["last_status"]) for d in first] == [("failed", 1, 429)]
            clock.advance(5)
            second = await settle(client)
    assert [(d["state"], d["attempts"]) for d in second] == [("delivered", 2)]
    assert len(receiver.requests) == 2
    # Both attempts carry the same key (for Slack and Teams as an Idempotency-Key header).
    assert {r.headers.get("idempotency-key") for r in receiver.requests} == {second[0]["key"]}
