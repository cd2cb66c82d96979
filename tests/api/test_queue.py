"""The responder queue through the API: comments reach their owner, threads answer themselves, claims race safely."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import httpx
import pytest

from service.database import transaction
from service.models import ItemState
from service.models.base import utcnow
from service.queue import sla
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
from tests.queue_seed import seed_items

STORY_RULES: list[dict[str, Any]] = [
    {
        "id": "stories",
        "name": "News stories go to their author",
        "when": {"field": "thread_kind", "op": "eq", "value": "news"},
        "then": {"assign": {"to": "thread_author", "team": "hr"}, "priority": "high", "sla": "PT4H"},
    },
    {"id": "default", "name": "Everything else: HR", "then": {"assign": {"to": "team", "team": "hr"}}},
]


async def newsroom(client: httpx.AsyncClient) -> str:
    """A source, the story author (u-7 on the intranet), an HR team with a lead, and rules; returns the secret."""
    secret = await create_source(client)
    await create_member(client, "author", external={"intranet": "u-7"})
    for member in ("hr1", "hr2", "lead"):
        await create_member(client, member, external={"intranet": f"id-{member}"})
    await create_team(client, "hr", ["hr1", "hr2"], lead="lead")
    await put_rules(client, STORY_RULES)
    return secret


def by(payload: dict[str, Any], author: str, name: str = "Someone") -> dict[str, Any]:
    """The payload with another comment author."""
    payload["data"]["author"] = {"id": author, "name": name}
    return payload


async def item_of(client: httpx.AsyncClient, comment_external_id: str) -> dict[str, Any]:
    """The queue item of a comment, as an admin sees it."""
    response = await client.get("/v1/queue", params={"state": list(ItemState), "limit": 200}, headers=ADMIN)
    assert response.status_code == 200, response.text
    for item in response.json()["items"]:
        detail = (await client.get(f"/v1/queue/{item['id']}", headers=ADMIN)).json()
        if detail["comment"]["external_id"] == comment_external_id:
            found: dict[str, Any] = detail
            return found
    raise AssertionError(f"no item for {comment_external_id}")


async def test_comment_on_a_news_story_lands_in_the_story_authors_queue_with_the_reason(
    client: httpx.AsyncClient,
) -> None:
    secret = await newsroom(client)
    assert (await post_event(client, secret, comment_payload("c-1"))).status_code == 202
    await drain(client)

    author = await responder_headers(client, "author")
    page = (await client.get("/v1/queue", headers=author)).json()
    assert [i["member"] for i in page["items"]] == ["author"]
    item = page["items"][0]
    assert item["priority"] == "high"
    assert item["rule_id"] == "stories"
    assert "News stories go to their author" in item["reason"]
    assert item["due_at"] is not None
    assert item["overdue"] is False
    # HR, the rule's fallback team, sees it among its team's items but not as its own.
    hr1 = await responder_headers(client, "hr1")
    assert (await client.get("/v1/queue", params={"scope": "mine"}, headers=hr1)).json()["items"] == []
    assert len((await client.get("/v1/queue", params={"scope": "teams"}, headers=hr1)).json()["items"]) == 1


async def test_story_authors_reply_in_the_thread_resolves_the_item_and_a_follow_up_reopens_it(
    client: httpx.AsyncClient,
) -> None:
    secret = await newsroom(client)
    await post_event(client, secret, comment_payload("c-1", body="Will the canteen open earlier for the night shift?"))
    await drain(client)
    reply = by(comment_payload("c-2", body="Yes, from 5am starting Monday.", parent_id="c-1"), "u-7", "Story Author")
    await post_event(client, secret, reply)
    await drain(client)

    original = await item_of(client, "c-1")
    assert original["state"] == "resolved"
    assert original["resolution"] == "answered_on_platform"
    assert original["answered_by"] == "author"
    assert original["first_response_at"] is not None
    answer = await item_of(client, "c-2")
    assert (answer["state"], answer["resolution"]) == ("resolved", "staff_reply")

    follow_up = comment_payload("c-3", body="But what about Saturdays, will it open early then?", parent_id="c-2")
    await post_event(client, secret, follow_up)
    await drain(client)
    original = await item_of(client, "c-1")
    assert (original["state"], original["reopen_count"]) == ("open", 1)
    assert [h["action"] for h in original["history"]][-1] == "queue_item.reopened"
    assert (await item_of(client, "c-3"))["resolution"] == "follow_up"


async def test_reply_by_someone_outside_the_item_does_not_resolve_it(client: httpx.AsyncClient) -> None:
    secret = await newsroom(client)
    await post_event(client, secret, comment_payload("c-1"))
    await drain(client)
    await post_event(client, secret, by(comment_payload("c-2", body="Same question here!", parent_id="c-1"), "u-55"))
    await drain(client)
    assert (await item_of(client, "c-1"))["state"] == "open"


async def test_edited_comment_updates_its_item_and_never_duplicates_it(client: httpx.AsyncClient) -> None:
    secret = await newsroom(client)
    await post_event(client, secret, comment_payload("c-1"))
    await drain(client)
    edit = comment_payload("c-1", event="comment.updated", body="Edited: when does the canteen open on Sundays?",
                           updated_at="2026-11-21T11:00:00Z")  # fmt: skip
    await post_event(client, secret, edit)
    await drain(client)
    page = (await client.get("/v1/queue", params={"state": list(ItemState)}, headers=ADMIN)).json()
    assert len(page["items"]) == 1
    assert page["items"][0]["excerpt"].startswith("Edited:")


async def test_deleted_comment_resolves_its_waiting_item(client: httpx.AsyncClient) -> None:
    secret = await newsroom(client)
    await post_event(client, secret, comment_payload("c-1"))
    await drain(client)
    await post_event(client, secret, comment_payload("c-1", event="comment.deleted"))
    item = await item_of(client, "c-1")
    assert (item["state"], item["resolution"]) == ("resolved", "comment_deleted")


async def test_sla_passing_escalates_the_item_to_the_team_lead(client: httpx.AsyncClient) -> None:
    secret = await newsroom(client)
    await put_rules(client, [{"id": "urgent", "name": "Urgent to HR", "then": {
        "assign": {"to": "team", "team": "hr"}, "priority": "urgent", "sla": "PT1H"}}])  # fmt: skip
    await post_event(client, secret, comment_payload("c-1"))
    await drain(client)
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    settings = client.app.state.settings  # type: ignore[attr-defined]

    early = await sla.sweep(factory, settings=settings, now=utcnow() + timedelta(minutes=45))
    assert (early.escalated, early.reminded) == (0, 1)
    report = await sla.sweep(factory, settings=settings, now=utcnow() + timedelta(hours=1, minutes=1))
    assert report.escalated == 1
    again = await sla.sweep(factory, settings=settings, now=utcnow() + timedelta(hours=2))
    assert again.escalated == 0  # escalated once

    item = await item_of(client, "c-1")
    assert (item["state"], item["member"], item["team"]) == ("escalated", "lead", "hr")
    lead = await responder_headers(client, "lead")
    assert [i["id"] for i in (await client.get("/v1/queue", headers=lead)).json()["items"]] == [item["id"]]
    assert "queue_item.escalated" in [h["action"] for h in item["history"]]


# ---- claims -------------------------------------------------------------------------------------------------


async def _seed(client: httpx.AsyncClient, count: int, **kwargs: Any) -> list[str]:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        ids = await seed_items(session, source="intranet", count=count, **kwargs)
    return [str(i) for i in ids]


async def test_claim_race_has_exactly_one_winner(client: httpx.AsyncClient) -> None:
    await create_source(client)
    members = [f"r{i}" for i in range(10)]
    for member in members:
        await create_member(client, member)
    await create_team(client, "it", members)
    keys = [await responder_headers(client, m) for m in members]
    item_ids = await _seed(client, 20, team="it")
    for item_id in item_ids:  # 20 repetitions of 50 concurrent claims
        responses = await asyncio.gather(
            *(client.post(f"/v1/queue/{item_id}/claim", headers=keys[i % len(keys)]) for i in range(50))
        )
        statuses = Counter(r.status_code for r in responses)
        assert statuses == {200: 1, 409: 49}, statuses
        assert {r.json()["code"] for r in responses if r.status_code == 409} == {"item_already_claimed"}


async def test_claim_next_drain_race_claims_every_item_exactly_once(client: httpx.AsyncClient) -> None:
    await create_source(client)
    members = [f"r{i}" for i in range(10)]
    for member in members:
        await create_member(client, member)
    await create_team(client, "it", members)
    keys = [await responder_headers(client, m) for m in members]
    seeded = set(await _seed(client, 1000, team="it"))

    async def responder(headers: dict[str, str]) -> list[str]:
        claimed: list[str] = []
        while True:
            response = await client.post("/v1/queue/claim-next", headers=headers)
            if response.status_code == 204:
                return claimed
            assert response.status_code == 200, response.text
            claimed.append(response.json()["id"])

    results = await asyncio.gather(*(responder(k) for k in keys))
    every = [i for claimed in results for i in claimed]
    assert len(every) == 1000
    assert set(every) == seeded


async def test_claim_next_takes_the_most_urgent_item_first(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    key = await responder_headers(client, "r1")
    await _seed(client, 8, member="r1")
    claimed = [(await client.post("/v1/queue/claim-next", headers=key)).json() for _ in range(8)]
    assert [c["priority"] for c in claimed] == ["urgent", "urgent", "high", "high", "normal", "normal", "low", "low"]
    assert all(a["due_at"] <= b["due_at"] for a, b in zip(claimed[::2], claimed[1::2], strict=True))
    assert (await client.post("/v1/queue/claim-next", headers=key)).status_code == 204


# ---- object-level access ------------------------------------------------------------------------------------


async def test_responders_reach_only_their_own_and_their_teams_items_on_every_queue_route(
    client: httpx.AsyncClient,
) -> None:
    await create_source(client)
    for member in ("a1", "a2", "b1", "solo"):
        await create_member(client, member)
    await create_team(client, "team-a", ["a1", "a2"])
    await create_team(client, "team-b", ["b1"])
    owned = {
        "team-a pool": await _seed(client, 1, team="team-a"),
        "a2 personally": await _seed(client, 1, member="a2"),
        "b1 in team-b": await _seed(client, 1, team="team-b", member="b1"),
        "unassigned": await _seed(client, 1),
        "held for team-a": await _seed(client, 1, team="team-a", state=ItemState.held),
    }
    may_see = {
        "a1": {"team-a pool", "held for team-a"},
        "a2": {"team-a pool", "a2 personally", "held for team-a"},
        "b1": {"b1 in team-b"},
        "solo": set(),
    }
    later = (utcnow() + timedelta(hours=1)).isoformat()
    actions: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "", None),
        ("POST", "/claim", None),
        ("POST", "/release", None),
        ("POST", "/answer", {"body": "Hello"}),
        ("POST", "/resolve", {"reason": "duplicate"}),
        ("POST", "/reassign", {"member": "solo"}),
        ("POST", "/snooze", {"until": later}),
        ("POST", "/approve", None),
    ]
    leaks: list[tuple[str, str, object]] = []
    for member, visible in may_see.items():
        key = await responder_headers(client, member)
        listed = {i["id"] for i in (await client.get("/v1/queue", params={"state": list(ItemState)}, headers=key))
                  .json()["items"]}  # fmt: skip
        expected = {owned[k][0] for k in visible}
        if listed != expected:
            leaks.append((member, "list", listed ^ expected))
        for name, (item_id,) in owned.items():
            if name in visible:
                continue
            for method, suffix, body in actions:
                response = await client.request(method, f"/v1/queue/{item_id}{suffix}", json=body, headers=key)
                if response.status_code != 404:
                    leaks.append((member, f"{method} {suffix or '/'} on {name}", response.status_code))
    assert leaks == []


async def test_admin_sees_every_item_and_a_key_without_member_cannot_claim(client: httpx.AsyncClient) -> None:
    await create_source(client)
    ids = await _seed(client, 3)
    page = (await client.get("/v1/queue", headers=ADMIN)).json()
    assert {i["id"] for i in page["items"]} == set(ids)
    response = await client.post(f"/v1/queue/{ids[0]}/claim", headers=ADMIN)
    assert response.status_code == 409
    assert response.headers["content-type"].startswith("application/problem+json")


async def test_moderators_see_the_held_comments_of_their_team_first_without_asking_for_them(
    client: httpx.AsyncClient,
) -> None:
    secret = await create_source(client)
    for member in ("mod1", "mod2", "hr1"):
        await create_member(client, member)
    await create_team(client, "mods", ["mod1", "mod2"])
    await create_team(client, "hr", ["hr1", "mod1"])
    hold_news = {"field": "thread_kind", "op": "eq", "value": "news"}
    await put_rules(client, [{"id": "hold", "name": "Moderate news comments", "when": hold_news,
                              "then": {"assign": {"to": "team", "team": "mods"}, "hold": True}}])  # fmt: skip
    for n in (1, 2):
        assert (await post_event(client, secret, comment_payload(f"c-{n}"))).status_code == 202
    await drain(client)
    urgent = await _seed(client, 2, team="mods")  # open, urgent and high: still after the held ones
    hr_pool = await _seed(client, 1, team="hr")
    held = [i["id"] for i in (await client.get("/v1/queue", params={"state": "held"}, headers=ADMIN)).json()["items"]]
    assert len(held) == 2

    for moderator, expected in (("mod1", [*held, *urgent, *hr_pool]), ("mod2", [*held, *urgent])):
        key = await responder_headers(client, moderator)
        page = (await client.get("/v1/queue", headers=key)).json()
        assert [i["state"] for i in page["items"][:2]] == ["held", "held"]
        assert sorted(i["id"] for i in page["items"][:2]) == sorted(held)
        assert {i["id"] for i in page["items"]} == set(expected)
        assert page["items"][2]["id"] == urgent[0]
        # Page by page, the same order.
        cursor: str | None = None
        paged: list[str] = []
        while True:
            params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
            one = (await client.get("/v1/queue", params=params, headers=key)).json()
            paged.extend(i["id"] for i in one["items"])
            if (cursor := one["next_cursor"]) is None:
                break
        assert paged == [i["id"] for i in page["items"]]
        assert len(set(paged)) == len(paged)
        # Asking for states still means exactly those states.
        open_only = (await client.get("/v1/queue", params={"state": "open"}, headers=key)).json()["items"]
        assert {i["state"] for i in open_only} == {"open"}

    hr1 = await responder_headers(client, "hr1")  # not a moderator: the held comments are not their work
    assert [i["id"] for i in (await client.get("/v1/queue", headers=hr1)).json()["items"]] == hr_pool


# ---- the life of an item ------------------------------------------------------------------------------------


async def test_claimed_item_blocks_other_responders_until_released(client: httpx.AsyncClient) -> None:
    await create_source(client)
    for member in ("r1", "r2"):
        await create_member(client, member)
    await create_team(client, "it", ["r1", "r2"])
    r1, r2 = await responder_headers(client, "r1"), await responder_headers(client, "r2")
    (item_id,) = await _seed(client, 1, team="it")
    assert (await client.post(f"/v1/queue/{item_id}/claim", headers=r1)).json()["claimed_by"] == "r1"
    for suffix, body in (("/answer", {"body": "x"}), ("/resolve", {"reason": "spam"}), ("/release", None)):
        response = await client.post(f"/v1/queue/{item_id}{suffix}", json=body, headers=r2)
        assert (response.status_code, response.json()["code"]) == (409, "item_already_claimed")
    released = await client.post(f"/v1/queue/{item_id}/release", headers=r1)
    assert (released.json()["state"], released.json()["claimed_by"]) == ("open", None)
    assert (await client.post(f"/v1/queue/{item_id}/claim", headers=r2)).status_code == 200


async def test_answer_records_the_reply_and_closes_the_item(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    r1 = await responder_headers(client, "r1")
    (item_id,) = await _seed(client, 1, member="r1")
    await client.post(f"/v1/queue/{item_id}/claim", headers=r1)
    answered = await client.post(f"/v1/queue/{item_id}/answer", json={"body": "Payday is the 25th."}, headers=r1)
    assert answered.status_code == 200, answered.text
    assert (answered.json()["state"], answered.json()["answered_by"]) == ("answered", "r1")
    detail = (await client.get(f"/v1/queue/{item_id}", headers=r1)).json()
    # The source has no callback URL: the reply is recorded here only, and counts as the first response at once.
    assert [(r["body"], r["delivery_state"]) for r in detail["replies"]] == [("Payday is the 25th.", "unsent")]
    assert detail["first_response_at"] is not None
    assert [h["action"] for h in detail["history"]] == ["queue_item.claimed", "queue_item.answered"]
    again = await client.post(f"/v1/queue/{item_id}/answer", json={"body": "Again"}, headers=r1)
    assert (again.status_code, again.json()["code"]) == (409, "invalid_state")


async def test_reassign_moves_the_item_out_of_my_queue_with_a_note(client: httpx.AsyncClient) -> None:
    await create_source(client)
    for member in ("r1", "r2"):
        await create_member(client, member)
    r1, r2 = await responder_headers(client, "r1"), await responder_headers(client, "r2")
    (item_id,) = await _seed(client, 1, member="r1")
    moved = await client.post(f"/v1/queue/{item_id}/reassign", json={"member": "r2", "note": "payroll"}, headers=r1)
    assert moved.json()["member"] == "r2"
    assert (await client.get(f"/v1/queue/{item_id}", headers=r1)).status_code == 404
    detail = (await client.get(f"/v1/queue/{item_id}", headers=r2)).json()
    assert detail["history"][-1]["after"]["note"] == "payroll"
    unknown = await client.post(f"/v1/queue/{item_id}/reassign", json={"member": "nobody"}, headers=r2)
    assert unknown.status_code == 404
    empty = await client.post(f"/v1/queue/{item_id}/reassign", json={}, headers=r2)
    assert (empty.status_code, empty.json()["code"]) == (422, "invalid_payload")


async def test_snoozed_item_leaves_the_queue_until_its_time(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    r1 = await responder_headers(client, "r1")
    (item_id,) = await _seed(client, 1, member="r1")
    until = (utcnow() + timedelta(hours=2)).isoformat()
    assert (await client.post(f"/v1/queue/{item_id}/snooze", json={"until": until}, headers=r1)).status_code == 200
    assert (await client.get("/v1/queue", headers=r1)).json()["items"] == []
    assert (await client.post("/v1/queue/claim-next", headers=r1)).status_code == 204
    shown = await client.get("/v1/queue", params={"include_snoozed": True}, headers=r1)
    assert [i["id"] for i in shown.json()["items"]] == [item_id]
    past = await client.post(f"/v1/queue/{item_id}/snooze", json={"until": "2020-01-01T00:00:00Z"}, headers=r1)
    assert past.status_code == 422


async def test_held_item_cannot_be_claimed_until_approved(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    await put_rules(client, [{"id": "all", "name": "All to r1", "then": {"assign": {"to": "member", "member": "r1"}}}])
    r1 = await responder_headers(client, "r1")
    (item_id,) = await _seed(client, 1, member="r1", state=ItemState.held)
    held = await client.post(f"/v1/queue/{item_id}/claim", headers=r1)
    assert (held.status_code, held.json()["code"]) == (409, "invalid_state")
    assert (await client.post(f"/v1/queue/{item_id}/approve", headers=r1)).json()["state"] == "open"
    assert (await client.post(f"/v1/queue/{item_id}/claim", headers=r1)).status_code == 200


async def test_queue_pages_through_every_item_in_priority_then_due_order(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    r1 = await responder_headers(client, "r1")
    seeded = set(await _seed(client, 45, member="r1"))
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/queue", params=params, headers=r1)).json()
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [i["id"] for i in seen if i["id"] in seeded] == [i["id"] for i in seen]
    assert {i["id"] for i in seen} == seeded
    assert len(seen) == 45
    order = [({"urgent": 0, "high": 1, "normal": 2, "low": 3}[i["priority"]], i["due_at"]) for i in seen]
    assert order == sorted(order)
    bad = await client.get("/v1/queue", params={"cursor": "not-a-cursor"}, headers=r1)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_cursor")


@pytest.mark.parametrize(
    ("params", "expected"),
    [({"priority": "urgent"}, 3), ({"overdue": True}, 0), ({"topic": "seed"}, 12), ({"topic": "pay"}, 0)],
)
async def test_queue_filters(client: httpx.AsyncClient, params: dict[str, Any], expected: int) -> None:
    await create_source(client)
    await create_member(client, "r1")
    r1 = await responder_headers(client, "r1")
    await _seed(client, 12, member="r1")
    page = (await client.get("/v1/queue", params=params, headers=r1)).json()
    assert len(page["items"]) == expected


async def test_deleting_a_member_returns_their_items_to_the_team_pool(client: httpx.AsyncClient) -> None:
    await create_source(client)
    for member in ("r1", "r2"):
        await create_member(client, member)
    await create_team(client, "it", ["r1", "r2"])
    r1, r2 = await responder_headers(client, "r1"), await responder_headers(client, "r2")
    owned, claimed = await _seed(client, 1, team="it", member="r1"), await _seed(client, 1, team="it")
    await client.post(f"/v1/queue/{claimed[0]}/claim", headers=r1)
    assert (await client.delete("/v1/admin/members/r1", headers=ADMIN)).status_code == 204
    page = (await client.get("/v1/queue", headers=r2)).json()["items"]
    assert {(i["id"], i["member"], i["claimed_by"], i["state"]) for i in page} == {
        (owned[0], None, None, "open"),
        (claimed[0], None, None, "open"),
    }


async def test_members_and_teams_the_live_rules_assign_to_cannot_be_deleted(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    await create_team(client, "it", ["r1"])
    await put_rules(client, [{"id": "all", "name": "All to r1 in IT",
                              "then": {"assign": {"to": "member", "member": "r1", "team": "it"}}}])  # fmt: skip
    for path in ("/v1/admin/members/r1", "/v1/admin/teams/it"):
        response = await client.delete(path, headers=ADMIN)
        assert (response.status_code, response.json()["code"]) == (409, "invalid_state")
    await put_rules(client, [])
    assert (await client.delete("/v1/admin/teams/it", headers=ADMIN)).status_code == 204
    assert (await client.delete("/v1/admin/members/r1", headers=ADMIN)).status_code == 204


async def test_responders_correct_labels_only_on_comments_in_their_queues(client: httpx.AsyncClient) -> None:
    await create_source(client)
    for member in ("r1", "r2"):
        await create_member(client, member)
    r1 = await responder_headers(client, "r1")
    (mine,) = await _seed(client, 1, member="r1")
    (theirs,) = await _seed(client, 1, member="r2")
    comment_of = {
        item_id: (await client.get(f"/v1/queue/{item_id}", headers=ADMIN)).json()["comment_id"]
        for item_id in (mine, theirs)
    }
    ok = await client.post(f"/v1/comments/{comment_of[mine]}/labels", json={"sentiment": "negative"}, headers=r1)
    assert ok.status_code == 201, ok.text
    hidden = await client.post(f"/v1/comments/{comment_of[theirs]}/labels", json={"sentiment": "negative"}, headers=r1)
    assert (hidden.status_code, hidden.json()["code"]) == (404, "not_found")


async def test_reply_that_arrives_before_the_comment_it_answers_still_resolves_it(client: httpx.AsyncClient) -> None:
    secret = await newsroom(client)
    reply = by(comment_payload("c-2", body="Yes, from 5am starting Monday.", parent_id="c-1"), "u-7", "Story Author")
    await post_event(client, secret, reply)
    await drain(client)
    await post_event(client, secret, comment_payload("c-1"))
    await drain(client)
    original = await item_of(client, "c-1")
    assert (original["state"], original["resolution"], original["answered_by"]) == (
        "resolved",
        "answered_on_platform",
        "author",
    )


async def test_in_a_flat_thread_a_team_members_comment_answers_the_earlier_waiting_items(
    client: httpx.AsyncClient,
) -> None:
    secret = await newsroom(client)
    await put_rules(client, [{"id": "hr", "name": "All to HR", "then": {"assign": {"to": "team", "team": "hr"}}}])
    await post_event(client, secret, comment_payload("c-1", body="When is the pay rise announced?"))
    await drain(client)
    answer = by(comment_payload("c-2", body="In the December all-hands."), "id-hr2", "HR Two")
    await post_event(client, secret, answer)
    await drain(client)
    original = await item_of(client, "c-1")
    assert (original["state"], original["answered_by"]) == ("resolved", "hr2")


async def test_items_without_an_sla_are_never_overdue(client: httpx.AsyncClient) -> None:
    await create_source(client)
    await create_member(client, "r1")
    r1 = await responder_headers(client, "r1")
    await _seed(client, 3, member="r1", sla=None)
    assert len((await client.get("/v1/queue", params={"overdue": False}, headers=r1)).json()["items"]) == 3
    assert (await client.get("/v1/queue", params={"overdue": True}, headers=r1)).json()["items"] == []


async def test_excerpts_never_show_part_of_personal_data(client: httpx.AsyncClient) -> None:
    secret = await newsroom(client)
    body = "x" * 180 + " write to jane.doe@example.com or call +44 20 7946 0958 please"
    await post_event(client, secret, comment_payload("c-1", body=body))
    await drain(client)
    excerpt = (await client.get("/v1/queue", headers=ADMIN)).json()["items"][0]["excerpt"]
    assert "jane" not in excerpt
    assert "7946" not in excerpt


async def test_a_reopened_item_gets_a_fresh_deadline(client: httpx.AsyncClient, clock: FakeClock) -> None:
    secret = await newsroom(client)
    await post_event(client, secret, comment_payload("c-1"))
    await drain(client)
    first_due = (await item_of(client, "c-1"))["due_at"]
    await post_event(client, secret, by(comment_payload("c-2", body="From 5am.", parent_id="c-1"), "u-7"))
    await drain(client)
    clock.advance(60)  # the follow-up comes a minute later
    follow_up = comment_payload("c-3", body="But what about Saturdays, will it open early then?", parent_id="c-2")
    await post_event(client, secret, follow_up)
    await drain(client)
    reopened = await item_of(client, "c-1")
    assert reopened["state"] == "open"
    assert reopened["due_at"] > first_due
    assert reopened["escalated_at"] is None
