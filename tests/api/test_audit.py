"""The audit trail: every change is one hash-chained record; searching it; tampering is found (API and CLI)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from classifiers.pipeline import BatchingAnalyser
from service.audit.tables import AuditEvent
from service.auth import keys
from service.database import transaction
from service.models.base import utcnow
from tests.conftest import drain, make_settings, running_app, truncate_all
from tests.factories import (
    ADMIN,
    ADMIN_KEY,
    comment_payload,
    create_member,
    create_source,
    create_team,
    post_event,
    put_rules,
    responder_headers,
)
from tests.queue_seed import seed_items

ROOT = Path(__file__).resolve().parents[2]
AUDIT = "/v1/admin/audit"


async def audit_count(client: httpx.AsyncClient) -> int:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with factory() as session:
        count: int = (await session.execute(sa.select(sa.func.count()).select_from(AuditEvent))).scalar_one()
    return count


async def all_records(client: httpx.AsyncClient) -> list[AuditEvent]:
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with factory() as session:
        return list((await session.execute(sa.select(AuditEvent).order_by(col(AuditEvent.id)))).scalars())


async def execute(client: httpx.AsyncClient, statement: sa.Executable) -> None:
    """Change the database behind the app's back, as someone with database access could."""
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        await session.execute(statement)


async def verify_api(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get(f"{AUDIT}/verify", headers=ADMIN)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def verify_cli(client: httpx.AsyncClient) -> tuple[int, str]:
    """`switchboard verify-audit` against the app's database: (exit code, output)."""
    database_url = client.app.state.settings.database_url  # type: ignore[attr-defined]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchboard.cli", "verify-audit",
        env={**os.environ, "SWITCHBOARD_DATABASE_URL": database_url}, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, (stdout + stderr).decode()


class Workload:
    """Random admin and queue actions, each of which must add exactly one audit record."""

    def __init__(self, client: httpx.AsyncClient, rng: random.Random, responders: dict[str, dict[str, str]]) -> None:
        self.client = client
        self.rng = rng
        self.responders = responders
        self.topics: list[int] = []
        self.members: list[str] = list(responders)
        self.open: list[str] = []
        self.claimed: dict[str, str] = {}  # item -> the responder holding it
        self.serial = 0

    def possible(self) -> list[str]:
        actions = ["create_topic", "create_member", "patch_member", "put_rules"]
        if self.topics:
            actions.append("patch_topic")
        if self.open:
            actions += ["claim", "claim", "resolve"]
        if self.claimed:
            actions += ["release", "resolve"]
        return actions

    async def step(self) -> str:
        action = self.rng.choice(self.possible())
        self.serial += 1
        n, client, rng = self.serial, self.client, self.rng
        response: httpx.Response
        if action == "create_topic":
            response = await client.post(
                "/v1/admin/topics", json={"name": f"topic {n}", "examples": [f"Question about subject {n}?"]},
                headers=ADMIN,
            )  # fmt: skip
            self.topics.append(response.json()["id"])
        elif action == "patch_topic":
            topic = rng.choice(self.topics)
            response = await client.patch(f"/v1/admin/topics/{topic}", json={"description": f"v{n}"}, headers=ADMIN)
        elif action == "create_member":
            response = await client.post("/v1/admin/members", json={"id": f"m{n}", "name": f"M {n}"}, headers=ADMIN)
            self.members.append(f"m{n}")
        elif action == "patch_member":
            member = rng.choice(self.members)
            response = await client.patch(f"/v1/admin/members/{member}", json={"name": f"Name {n}"}, headers=ADMIN)
        elif action == "put_rules":
            rules = [{"id": "default", "name": f"Default, version {n}", "then": {}}]
            response = await client.put("/v1/admin/rules", json={"rules": rules}, headers=ADMIN)
        elif action == "claim":
            item, who = self.open.pop(rng.randrange(len(self.open))), rng.choice(list(self.responders))
            response = await client.post(f"/v1/queue/{item}/claim", headers=self.responders[who])
            self.claimed[item] = who
        elif action == "release":
            item = rng.choice(list(self.claimed))
            response = await client.post(f"/v1/queue/{item}/release", headers=self.responders[self.claimed.pop(item)])
            self.open.append(item)
        else:  # resolve an open item (anyone in the team) or a claimed one (its holder)
            if self.claimed and (not self.open or rng.random() < 0.5):
                item = rng.choice(list(self.claimed))
                who = self.claimed.pop(item)
            else:
                item, who = self.open.pop(rng.randrange(len(self.open))), rng.choice(list(self.responders))
            reason = rng.choice(["no_reply_needed", "duplicate", "spam", "out_of_scope"])
            response = await client.post(
                f"/v1/queue/{item}/resolve", json={"reason": reason}, headers=self.responders[who]
            )
        assert response.status_code in (200, 201), (action, response.text)
        return action


async def test_200_random_admin_and_queue_actions_make_200_chained_records_and_tampering_is_found(
    client: httpx.AsyncClient,
) -> None:
    await create_source(client)
    names = ["r1", "r2", "r3"]
    for name in names:
        await create_member(client, name)
    await create_team(client, "desk", names)
    responders = {name: await responder_headers(client, name) for name in names}
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        # Older than the re-classification window and without an SLA: nothing but our actions touches them.
        items = await seed_items(
            session, source="intranet", count=80, team="desk", sla=None, now=utcnow() - timedelta(days=30)
        )
    workload = Workload(client, random.Random(20261121), responders)
    workload.open = [str(i) for i in items]

    before = await audit_count(client)
    done = [await workload.step() for _ in range(200)]
    assert await audit_count(client) == before + 200
    assert {"claim", "release", "resolve", "create_topic", "patch_member", "put_rules"} <= set(done)

    result = await verify_api(client)
    assert result == {"records": before + 200, "ok": True, "broken_at": None, "reason": None}
    code, output = await verify_cli(client)
    assert code == 0, output
    assert f"{before + 200} records" in output

    # Edit one record: verification fails at exactly that record.
    records = await all_records(client)
    edited = random.Random(7).choice(records[before:-1])
    assert edited.id is not None
    await execute(client, sa.update(AuditEvent).where(col(AuditEvent.id) == edited.id).values(after={"x": 1}))
    result = await verify_api(client)
    assert (result["ok"], result["broken_at"]) == (False, edited.id)
    assert "edited" in result["reason"]
    code, output = await verify_cli(client)
    assert code == 1
    assert f"broken at record {edited.id}:" in output

    # Put it back: the chain verifies again.
    await execute(client, sa.update(AuditEvent).where(col(AuditEvent.id) == edited.id).values(after=edited.after))
    assert (await verify_api(client))["ok"] is True

    # Delete one record: verification fails at the next one.
    deleted = records[before + 100]
    following = records[before + 101]
    await execute(client, sa.delete(AuditEvent).where(col(AuditEvent.id) == deleted.id))
    result = await verify_api(client)
    assert (result["ok"], result["broken_at"]) == (False, following.id)
    assert "removed" in result["reason"]
    code, output = await verify_cli(client)
    assert code == 1
    assert f"broken at record {following.id}:" in output


async def test_no_audit_record_holds_a_comment_body_a_reply_a_source_secret_or_an_api_key(
    client: httpx.AsyncClient,
) -> None:
    first_secret = await create_source(client)
    rotated = await client.post("/v1/admin/sources/intranet/rotate-secret", headers=ADMIN)
    second_secret = rotated.json()["secret"]
    await create_member(client, "author", external={"intranet": "u-7"})
    await create_member(client, "hr1")
    await create_team(client, "hr", ["hr1"], lead="hr1")
    news = {"field": "thread_kind", "op": "eq", "value": "news"}
    await put_rules(client, [{"id": "stories", "name": "To the author", "when": news, "then": {
        "assign": {"to": "thread_author", "team": "hr"}}}])  # fmt: skip
    body = "Why does my Quokkaberry payslip show a deduction nobody explained to me?"
    edited = "Edited: why does my Quokkaberry payslip show a Wallabyfern deduction?"
    reply = "Thanks for asking, the Platypusmoss deduction is the canteen subsidy."
    assert (await post_event(client, second_secret, comment_payload("c-1", body=body))).status_code == 202
    await drain(client)
    update = comment_payload("c-1", event="comment.updated", body=edited, updated_at="2026-11-21T11:00:00Z")
    assert (await post_event(client, second_secret, update)).status_code == 202
    await drain(client)

    author = await responder_headers(client, "author")
    item = (await client.get("/v1/queue", headers=author)).json()["items"][0]
    assert (await client.post(f"/v1/queue/{item['id']}/claim", headers=author)).status_code == 200
    answered = await client.post(f"/v1/queue/{item['id']}/answer", json={"body": reply}, headers=author)
    assert answered.status_code == 200, answered.text
    issued = (await client.post("/v1/admin/api-keys", json={"name": "ops", "role": "admin"}, headers=ADMIN)).json()
    successor = (await client.post(f"/v1/admin/api-keys/{issued['id']}/rotate", headers=ADMIN)).json()

    records = await all_records(client)
    actions = {r.action for r in records}
    assert {"queue_item.created", "queue_item.claimed", "queue_item.answered", "source.secret_rotated"} <= actions
    assert {"api_key.created", "api_key.rotated"} <= actions
    trail = json.dumps(
        [[r.at.isoformat(), r.actor, r.action, r.target_type, r.target_id, r.before, r.after] for r in records]
    )
    forbidden = {
        "comment body": body,
        "edited body": edited,
        "reply": reply,
        "a word of the body": "Quokkaberry",
        "a word of the edit": "Wallabyfern",
        "a word of the reply": "Platypusmoss",
        "first source secret": first_secret,
        "second source secret": second_secret,
        "secret without its prefix": second_secret.removeprefix("whsec_"),
    }
    raw_keys = [ADMIN_KEY, author["Authorization"].removeprefix("Bearer "), issued["key"], successor["key"]]
    for i, raw in enumerate(raw_keys):
        forbidden[f"key {i}"] = raw
        forbidden[f"hash of key {i}"] = keys.hash_key(raw)
    leaked = [what for what, text in forbidden.items() if text in trail]
    assert leaked == []


async def test_search_filters_by_actor_action_prefix_target_and_time_newest_first_with_a_cursor(
    client: httpx.AsyncClient,
) -> None:
    await create_source(client)
    for i in range(3):
        assert (await client.post("/v1/admin/topics", json={"name": f"t{i}"}, headers=ADMIN)).status_code == 201
    await create_member(client, "r1")
    responder = await responder_headers(client, "r1")
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        items = [str(i) for i in await seed_items(session, source="intranet", count=2, member="r1", sla=None)]
    for item in items:
        assert (await client.post(f"/v1/queue/{item}/claim", headers=responder)).status_code == 200
    assert (await client.post(f"/v1/queue/{items[0]}/release", headers=responder)).status_code == 200
    records = await all_records(client)

    async def search(**params: Any) -> dict[str, Any]:
        response = await client.get(AUDIT, params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    def ids(page: dict[str, Any]) -> list[int]:
        return [e["id"] for e in page["items"]]

    everything = await search(limit=500)
    assert ids(everything) == sorted((r.id for r in records if r.id is not None), reverse=True)
    assert everything["next_cursor"] is None
    queue_events = await search(action="queue_item.")
    assert [e["action"] for e in queue_events["items"]] == [
        "queue_item.released", "queue_item.claimed", "queue_item.claimed",
    ]  # fmt: skip
    responder_actor = queue_events["items"][0]["actor"]
    assert ids(await search(actor=responder_actor)) == ids(queue_events)
    assert ids(await search(action="queue_item_")) == []  # `_` is not a wildcard
    assert ids(await search(action="%")) == []
    one_item = await search(target_type="queue_item", target_id=items[0])
    assert [e["action"] for e in one_item["items"]] == ["queue_item.released", "queue_item.claimed"]

    topic_ids = [r.id for r in records if r.action == "topic.created"][::-1]
    first = await search(action="topic.", limit=2)
    assert ids(first) == topic_ids[:2]
    assert first["next_cursor"] is not None
    second = await search(action="topic.", limit=2, cursor=first["next_cursor"])
    assert ids(second) == topic_ids[2:]
    assert second["next_cursor"] is None

    claims = [r for r in records if r.action == "queue_item.claimed"]
    since = await search(since=claims[0].at.isoformat())
    assert ids(since) == [r.id for r in records if r.at >= claims[0].at][::-1]
    until = await search(until=claims[0].at.isoformat())
    assert ids(until) == [r.id for r in records if r.at < claims[0].at][::-1]
    assert set(ids(since)).isdisjoint(ids(until))
    event = everything["items"][0]
    assert set(event) == {"id", "at", "actor", "action", "target_type", "target_id", "before", "after", "hash"}

    bad = await client.get(AUDIT, params={"cursor": "not-a-cursor"}, headers=ADMIN)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_cursor")
    unknown = await client.get(AUDIT, params={"acter": "x"}, headers=ADMIN)
    assert (unknown.status_code, unknown.json()["code"]) == (422, "validation_error")
    for path in (AUDIT, f"{AUDIT}/verify"):
        assert (await client.get(path, headers=responder)).status_code == 403
        assert (await client.get(path)).status_code == 401


@pytest.fixture
async def postgres_client(postgres_database: str, analyser: BatchingAnalyser) -> AsyncIterator[httpx.AsyncClient]:
    """An API client on PostgreSQL only (SQLite runs one writer at a time: there is no lock order to get wrong)."""
    await truncate_all(postgres_database)
    async with running_app(make_settings(postgres_database), analyser) as api:
        yield api


async def test_requests_and_jobs_acting_on_the_same_items_at_once_never_deadlock(
    postgres_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Responders snooze items over and over while processing jobs resolve the same items (a staff reply answers
    each, several replies per batch). Before the audit chain's lock came last, a request held its item and waited
    for the chain's lock while a job, holding that lock since it audited an earlier item of its batch, waited for
    the request's item: DeadlockDetectedError on PostgreSQL, in every round of this test."""
    client = postgres_client
    secret = await create_source(client)
    staff = [f"r{i}" for i in range(4)]
    for member in staff:
        await create_member(client, member, external={"intranet": f"staff-{member}"})
    await create_team(client, "it", staff)
    await put_rules(client, [])
    later = (utcnow() + timedelta(hours=1)).isoformat()
    statuses: Counter[int] = Counter()

    async def hammer(item_id: str, member: str) -> None:
        """Snooze the item again and again until a staff reply has resolved it (then 409)."""
        key = await responder_headers(client, member)  # a key per loop: far below the per-key rate limit
        while True:
            response = await client.post(f"/v1/queue/{item_id}/snooze", json={"until": later}, headers=key)
            statuses[response.status_code] += 1
            if response.status_code != 200:
                return

    async def reply(detail: dict[str, Any], member: str, n: int) -> None:
        payload = comment_payload(
            f"reply-{n}", thread_id=detail["thread"]["external_id"], parent_id=detail["comment"]["external_id"],
            body="Thanks, this is answered on the intranet page now.",
        )  # fmt: skip
        payload["data"]["author"] = {"id": f"staff-{member}", "name": member}
        assert (await post_event(client, secret, payload)).status_code == 202

    rounds, per_round = 2, 6  # before the fix, every round of 6 had deadlocks
    caplog.set_level(logging.WARNING)
    for round_ in range(rounds):
        factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
        async with transaction(factory) as session:
            ids = [str(i) for i in await seed_items(session, source="intranet", count=per_round, team="it")]
        details = [(await client.get(f"/v1/queue/{i}", headers=ADMIN)).json() for i in ids]
        who = [staff[(round_ + k) % len(staff)] for k in range(per_round)]
        await asyncio.wait_for(
            asyncio.gather(
                *(hammer(item_id, member) for item_id, member in zip(ids, who, strict=True)),
                *(reply(d, m, round_ * per_round + k) for k, (d, m) in enumerate(zip(details, who, strict=True))),
                drain(client),
            ),
            timeout=30,
        )
        for item_id in ids:
            item = (await client.get(f"/v1/queue/{item_id}", headers=ADMIN)).json()
            assert (item["state"], item["resolution"]) == ("resolved", "answered_on_platform")

    assert set(statuses) == {200, 409}, statuses
    assert statuses[409] == rounds * per_round
    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("service")]
    assert problems == []  # no batch failed (a deadlock victim is retried one by one, with a warning)
    assert (await verify_api(client))["ok"] is True
