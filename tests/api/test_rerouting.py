"""Re-routing does what people expect: corrections and refits move only what they change, approving a false positive
sends it where it belongs, and reroute does exactly what its simulation showed."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from service.models import ItemState
from service.models.base import utcnow
from tests.api.test_tuning import DRAFT, directory, mixed_docs, seed
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
from tests.queue_seed import classification

ALL_STATES = [s.value for s in ItemState]


async def items_by_comment(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    """Every queue item (any state, snoozed too), by comment id, as an admin sees it."""
    params: dict[str, Any] = {"state": ALL_STATES, "include_snoozed": True, "limit": 200}
    response = await client.get("/v1/queue", params=params, headers=ADMIN)
    assert response.status_code == 200, response.text
    return {item["comment_id"]: item for item in response.json()["items"]}


async def history(client: httpx.AsyncClient, item_id: str) -> list[dict[str, Any]]:
    """An item's audit trail, oldest first."""
    found: list[dict[str, Any]] = (await client.get(f"/v1/queue/{item_id}", headers=ADMIN)).json()["history"]
    return found


def placement(item: dict[str, Any]) -> tuple[Any, ...]:
    """What re-routing may change, as the queue shows it."""
    return item["state"], item["member"], item["team"], item["priority"], item["rule_id"], item["due_at"]


# --- corrections and refits move only what they change ----------------------------------------------

FACILITIES = [
    "The canteen ran out of vegetarian meals again today.",
    "Is the car park on level 2 closed for the whole week?",
    "The printer on the third floor is jammed again.",
    "Can we get more bike racks near the main entrance?",
    "The heating in meeting room 4 does not work.",
    "The lift in building C has been out of order since Monday.",
    "The coffee machine on floor 2 leaks water all over the kitchen.",
]
HELD = "You idiots broke the coffee machine in the kitchen again."
CORRECTED = "When will the new shift rota be published?"
TOPIC_RULES: list[dict[str, Any]] = [
    {"id": "moderate", "name": "Insults wait for moderation", "when": {"field": "text", "op": "contains",
     "value": "idiot"}, "then": {"hold": True, "assign": {"to": "team", "team": "mod"}}},
    {"id": "pay", "name": "Pay to payroll", "when": {"field": "topic", "op": "eq", "value": "pay"},
     "then": {"assign": {"to": "team", "team": "payroll"}, "priority": "high", "sla": "PT4H"}},
    {"id": "default", "name": "The rest to facilities", "then": {"assign": {"to": "team", "team": "fac"},
     "sla": "PT8H"}},
]  # fmt: skip


async def facilities_desk(client: httpx.AsyncClient) -> str:
    """Topics, a moderation team, payroll and a round-robin facilities team, and the rules above."""
    topics = {
        "pay": ["When will my salary be paid this month?", "My payslip shows the wrong overtime hours.",
                "Is the pay rise included in this month's salary?"],
        "facilities": ["The canteen food is cold.", "The car park barrier is broken.",
                       "The toilets on floor 1 need cleaning.", "The air conditioning is too cold."],
    }  # fmt: skip
    for name, examples in topics.items():
        created = await client.post("/v1/admin/topics", json={"name": name, "examples": examples}, headers=ADMIN)
        assert created.status_code == 201, created.text
    secret = await create_source(client)
    for member in ("f1", "f2", "f3", "p1", "p2", "m1"):
        await create_member(client, member)
    await create_team(client, "fac", ["f1", "f2", "f3"])
    await create_team(client, "payroll", ["p1", "p2"])
    await create_team(client, "mod", ["m1"])
    await put_rules(client, TOPIC_RULES)
    return secret


async def test_correcting_a_topic_does_not_reshuffle_unrelated_items(client: httpx.AsyncClient) -> None:
    secret = await facilities_desk(client)
    texts = [*FACILITIES, HELD, CORRECTED]
    ids = []
    for n, text in enumerate(texts):
        accepted = await post_event(client, secret, comment_payload(f"c-{n}", body=text, thread_id=f"story-{n}"))
        assert accepted.status_code == 202, accepted.text
        ids.append(accepted.json()["id"])
    await drain(client)
    by_comment = await items_by_comment(client)
    assert all(by_comment[c]["team"] == "fac" and by_comment[c]["member"] for c in ids[:7])
    assert by_comment[ids[8]]["team"] == "fac"
    held = by_comment[ids[7]]
    assert (held["state"], held["team"]) == ("held", "mod")

    # People take items in hand: a claim, a snooze, a reassignment inside the team, an approval.
    f = {m: await responder_headers(client, m) for m in ("f1", "f2", "f3")}
    m1 = await responder_headers(client, "m1")
    claimed, snoozed, reassigned = (by_comment[c] for c in ids[:3])
    assert (await client.post(f"/v1/queue/{claimed['id']}/claim", headers=f[claimed["member"]])).status_code == 200
    until = (utcnow() + timedelta(hours=3)).isoformat()
    snooze = await client.post(f"/v1/queue/{snoozed['id']}/snooze", json={"until": until}, headers=f["f1"])
    assert snooze.status_code == 200, snooze.text
    other = next(m for m in ("f1", "f2", "f3") if m != reassigned["member"])
    moved = await client.post(f"/v1/queue/{reassigned['id']}/reassign", json={"member": other}, headers=f["f1"])
    assert moved.status_code == 200, moved.text
    approved = await client.post(f"/v1/queue/{held['id']}/approve", headers=m1)
    assert (approved.status_code, approved.json()["team"]) == (200, "fac"), approved.text

    before = await items_by_comment(client)
    trails = {c: len(await history(client, before[c]["id"])) for c in ids[:8]}

    # A responder files the last comment under pay: it moves to payroll, and only it.
    label = await client.post(f"/v1/comments/{ids[8]}/labels", json={"topic": "pay"}, headers=ADMIN)
    assert label.status_code == 201, label.text
    await drain(client)  # the topics are refitted and recent comments classified again
    # ... and an admin adds a topic, which classifies recent comments again too.
    it = {"name": "it", "examples": ["My laptop does not start.", "The wifi keeps dropping."]}
    assert (await client.post("/v1/admin/topics", json=it, headers=ADMIN)).status_code == 201
    await drain(client)

    after = await items_by_comment(client)
    assert {c: placement(after[c]) for c in ids[:8]} == {c: placement(before[c]) for c in ids[:8]}
    assert (after[ids[0]]["state"], after[ids[1]]["snoozed_until"]) == ("claimed", before[ids[1]]["snoozed_until"])
    assert {c: len(await history(client, after[c]["id"])) for c in ids[:8]} == trails  # nothing audited for them
    corrected = after[ids[8]]
    assert (corrected["team"], corrected["topic"], corrected["rule_id"]) == ("payroll", "pay", "pay")
    assert corrected["member"] in ("p1", "p2")
    actions = [e["action"] for e in await history(client, corrected["id"])]
    assert actions.count("queue_item.rerouted") == 1  # re-classifying it afterwards changed nothing more


# --- approving a false positive; correcting a flag ------------------------------------------------

MODERATED: list[dict[str, Any]] = [
    {"id": "offensive", "name": "Offensive comments wait for moderation", "when": {"field": "flag", "op": "has",
     "value": "offensive"}, "then": {"hold": True, "assign": {"to": "team", "team": "mod"}}},
    {"id": "canteen", "name": "Canteen to facilities", "when": {"field": "text", "op": "contains",
     "value": "canteen"}, "then": {"assign": {"to": "team", "team": "fac"}, "priority": "high", "sla": "PT4H"}},
    {"id": "default", "name": "The rest to the pool", "then": {"sla": "PT24H"}},
]  # fmt: skip


async def moderation_desk(client: httpx.AsyncClient) -> str:
    secret = await create_source(client)
    for member in ("f1", "f2", "m1"):
        await create_member(client, member)
    await create_team(client, "fac", ["f1", "f2"])
    await create_team(client, "mod", ["m1"])
    await put_rules(client, MODERATED)
    return secret


def due(item: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(item["due_at"])


async def test_approving_a_held_comment_sends_it_where_the_rules_would_have_without_the_hold(
    client: httpx.AsyncClient,
) -> None:
    await moderation_desk(client)
    (comment_id,) = await seed(client, [classification(offensive=0.9)], body="Why is the canteen closed, again?")
    held = (await items_by_comment(client))[comment_id]
    assert (held["state"], held["team"], held["rule_id"]) == ("held", "mod", "offensive")

    m1 = await responder_headers(client, "m1")
    start = utcnow()
    approved = await client.post(f"/v1/queue/{held['id']}/approve", headers=m1)
    end = utcnow()
    assert approved.status_code == 200, approved.text
    item = approved.json()
    assert (item["state"], item["team"], item["rule_id"], item["priority"]) == ("open", "fac", "canteen", "high")
    assert item["member"] in ("f1", "f2")
    assert start + timedelta(hours=4) <= due(item) <= end + timedelta(hours=4)  # the SLA starts at approval
    f = await responder_headers(client, item["member"])
    assert (await client.post(f"/v1/queue/{held['id']}/claim", headers=f)).status_code == 200
    trail = await history(client, held["id"])
    assert (trail[-2]["action"], trail[-2]["after"]["team_id"]) == ("queue_item.approved", "fac")


async def test_correcting_a_flag_changes_the_label_shown_and_the_route(client: httpx.AsyncClient) -> None:
    await moderation_desk(client)
    flagged, clean = await seed(
        client, [classification(offensive=0.9), classification(offensive=0.1)], body="The canteen is a joke."
    )
    items = await items_by_comment(client)
    assert (items[flagged]["state"], items[flagged]["team"]) == ("held", "mod")
    assert (items[clean]["state"], items[clean]["team"]) == ("open", "fac")

    m1 = await responder_headers(client, "m1")
    start = utcnow()
    fixed = await client.post(f"/v1/comments/{flagged}/labels", json={"flags": {"offensive": False}}, headers=m1)
    assert fixed.status_code == 201, fixed.text
    item = (await client.get(f"/v1/queue/{items[flagged]['id']}", headers=ADMIN)).json()
    assert item["classification"]["offensive"]["label"] == "not-offensive"
    assert item["classification"]["offensive"]["corrected_by"] == fixed.json()["actor"]
    assert (item["state"], item["team"], item["rule_id"]) == ("open", "fac", "canteen")
    assert due(item) >= start + timedelta(hours=4)  # it entered the queue now
    assert item["history"][-1]["action"] == "queue_item.rerouted"

    # The same correction the other way, on an item a responder has claimed: the label changes, the owner stays.
    owner = items[clean]["member"]
    assert (await client.post(f"/v1/queue/{items[clean]['id']}/claim", headers=await responder_headers(
        client, owner))).status_code == 200  # fmt: skip
    trail = len(await history(client, items[clean]["id"]))
    flagged_now = await client.post(f"/v1/comments/{clean}/labels", json={"flags": {"offensive": True}}, headers=ADMIN)
    assert flagged_now.status_code == 201
    item = (await client.get(f"/v1/queue/{items[clean]['id']}", headers=ADMIN)).json()
    assert item["classification"]["offensive"]["label"] == "offensive"
    assert (item["state"], item["team"], item["member"], item["claimed_by"]) == ("claimed", "fac", owner, owner)
    assert len(item["history"]) == trail


# --- reroute does what the simulation showed ------------------------------------------------------


async def reroute_events(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    page = await client.get("/v1/admin/audit", params={"action": "queue_item.rerouted", "limit": 200}, headers=ADMIN)
    assert page.status_code == 200, page.text
    return [e for e in page.json()["items"] if e["actor"].startswith("reroute:")]


async def test_reroute_moves_exactly_the_items_the_simulation_showed(client: httpx.AsyncClient) -> None:
    await directory(client)  # team a: r1, r2 (round robin); team b: r3, r4; live rules: everything to team a
    assert (
        await client.patch("/v1/admin/teams/b", json={"strategy": "least_loaded"}, headers=ADMIN)
    ).status_code == 200
    comment_ids = await seed(client, mixed_docs(24, seed=11))
    items = await items_by_comment(client)
    r1, r2 = await responder_headers(client, "r1"), await responder_headers(client, "r2")
    # People act on some items: hand-assigned, claimed, snoozed, resolved. Reroute must leave them be.
    for n, comment_id in enumerate(comment_ids[:8]):
        item_id = items[comment_id]["id"]
        if n < 2:
            response = await client.post(f"/v1/queue/{item_id}/reassign", json={"member": "r4"}, headers=r1)
        elif n < 4:
            owner = r1 if items[comment_id]["member"] == "r1" else r2
            response = await client.post(f"/v1/queue/{item_id}/claim", headers=owner)
        elif n < 6:
            until = (utcnow() + timedelta(hours=1)).isoformat()
            response = await client.post(f"/v1/queue/{item_id}/snooze", json={"until": until}, headers=ADMIN)
        else:
            response = await client.post(f"/v1/queue/{item_id}/resolve", json={"reason": "spam"}, headers=ADMIN)
        assert response.status_code == 200, response.text
    before = await items_by_comment(client)

    simulated = await client.post("/v1/admin/rules/simulate", json={"rules": {"rules": DRAFT}}, headers=ADMIN)
    assert simulated.status_code == 201, simulated.text
    sim = simulated.json()
    result = sim["result"]
    assert result["kept"] == 6  # hand-assigned, claimed and snoozed items stay; resolved ones are not waiting
    assert result["moved"] > 0
    applied = await client.put("/v1/admin/rules", json={"rules": DRAFT, "simulation_id": sim["id"]}, headers=ADMIN)
    assert applied.status_code == 200, applied.text
    rerouted = await client.post("/v1/admin/rules/reroute", json={}, headers=ADMIN)
    assert rerouted.status_code == 200, rerouted.text
    outcome = rerouted.json()
    assert (outcome["rerouted"], outcome["moved"], outcome["kept"]) == (
        result["rerouted"],
        result["moved"],
        result["kept"],
    )

    after = await items_by_comment(client)
    shown = {
        c: (d["member"], d["team"], d["priority"], d["rule_id"], d["hold"]) for c, d in result["decisions"].items()
    }
    now = {c: (i["member"], i["team"], i["priority"], i["rule_id"], i["state"] == "held") for c, i in after.items()}
    assert now == shown
    changed = {c for c in comment_ids if placement(after[c]) != placement(before[c])}
    assert changed == {c for c, d in result["decisions"].items() if d["rerouted"]}
    assert {c: placement(after[c]) for c in comment_ids[:8]} == {c: placement(before[c]) for c in comment_ids[:8]}
    events = await reroute_events(client)
    assert len(events) == outcome["rerouted"]  # one audit event per real change
    assert all({k: v for k, v in e["after"].items() if k != "note"} != e["before"] for e in events)

    again = (await client.post("/v1/admin/rules/reroute", json={}, headers=ADMIN)).json()
    assert (again["rerouted"], again["moved"]) == (0, 0)  # a no-op is neither counted nor audited
    assert len(await reroute_events(client)) == len(events)


async def test_a_suggested_rule_is_simulated_with_the_team_strategy_spreading_the_items(
    client: httpx.AsyncClient,
) -> None:
    await directory(client)
    r1 = await responder_headers(client, "r1")
    evidence = await seed(client, [classification(topic="pay") for _ in range(5)])
    waiting = await seed(client, [classification(topic="pay") for _ in range(8)])
    items = await items_by_comment(client)
    for comment_id in evidence:
        moved = await client.post(f"/v1/queue/{items[comment_id]['id']}/reassign", json={"team": "b"}, headers=r1)
        assert moved.status_code == 200
    (suggestion,) = (await client.get("/v1/admin/rules/suggestions", headers=ADMIN)).json()["suggestions"]
    simulated = suggestion["simulation"]
    load = {row["owner"]: row["after"] for row in simulated["load"]}
    assert (simulated["moved"], simulated["kept"]) == (len(waiting), len(evidence))
    assert (load["member:r3"], load["member:r4"]) == (4, 4)  # round robin goes on turning within the simulation
