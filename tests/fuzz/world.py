"""A small world for the fuzzer to reach real objects: sources, a topic, a member in a team, keys, queue items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from service.database import transaction
from tests.conftest import drain
from tests.factories import ADMIN, ADMIN_KEY, comment_payload, create_member, create_source, create_team, post_event
from tests.factories import put_rules as put_rules
from tests.queue_seed import seed_items

SOURCE = "fuzz"  # the source the admin operations get as a real slug (they may rename, switch off or delete it)
HOOKS = "hooks"  # the source the signed webhooks go to; no other operation is handed its slug
MEMBER, TEAM = "fuzz-m", "fuzz-t"


@dataclass(frozen=True)
class World:
    """What was seeded: real values for path parameters, the keys to call with, and the webhook secret."""

    keys: dict[str, str]  # role -> raw key
    protected_key_ids: frozenset[int]  # the keys the fuzzer calls with: never revoked or rotated by it
    hooks_secret: str
    path_values: dict[str, Any]  # path parameter name -> an existing object's id


async def seed(client: httpx.AsyncClient) -> World:
    """Create the world through the API (and one processed comment through the webhook), as users would."""
    await create_source(client, SOURCE)
    hooks_secret = await create_source(client, HOOKS)
    await create_member(client, MEMBER, external={HOOKS: "u-7"})
    await create_team(client, TEAM, [MEMBER], lead=MEMBER)
    topic = await client.post(
        "/v1/admin/topics",
        json={"name": "canteen", "description": "Food at work", "examples": ["When does the canteen open?"]},
        headers=ADMIN,
    )
    assert topic.status_code == 201, topic.text
    await put_rules(
        client, [{"id": "all", "name": "All to the fuzz team", "then": {"assign": {"to": "team", "team": TEAM}}}]
    )
    responder = await _issue_key(client, {"name": "fuzz responder", "role": "responder", "member": MEMBER})
    spare = await _issue_key(client, {"name": "spare", "role": "responder", "member": MEMBER})
    posted = await post_event(client, hooks_secret, comment_payload("c-fuzz-1"), slug=HOOKS)
    assert posted.status_code == 202, posted.text
    await drain(client)
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        items = await seed_items(session, source=HOOKS, count=3, team=TEAM)
    simulation = await client.post("/v1/admin/rules/simulate", json={"thresholds": {"offensive": 0.5}}, headers=ADMIN)
    assert simulation.status_code in (201, 202), simulation.text
    jobs = (await client.get("/v1/admin/jobs", headers=ADMIN)).json()["items"]
    keys = (await client.get("/v1/admin/api-keys", headers=ADMIN)).json()
    comment_id = posted.json()["id"]
    return World(
        keys={"admin": ADMIN_KEY, "responder": responder["key"]},
        protected_key_ids=frozenset(k["id"] for k in keys if k["id"] != spare["id"]),
        hooks_secret=hooks_secret,
        path_values={
            "slug": SOURCE,
            "member_id": MEMBER,
            "team_id": TEAM,
            "topic_id": topic.json()["id"],
            "key_id": spare["id"],
            "version": 1,
            "comment_id": comment_id,
            "item_id": str(items[0]),
            "job_id": jobs[0]["id"],
            "simulation_id": simulation.json()["id"],
        },
    )


async def _issue_key(client: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/admin/api-keys", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created
