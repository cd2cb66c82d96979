"""Outbound deliveries in the scale deployment for real: a uvicorn API, `switchboard worker` processes (arq) on
PostgreSQL and a private Redis, a real recording HTTP receiver; the worker is SIGKILLed twice mid-run."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col
from standardwebhooks.webhooks import Webhook

from service.database import create_engine, create_session_factory, transaction
from service.models import Reply
from service.outbound.outbox import key_for
from service.outbound.tables import OutboundMessage
from tests.conftest import truncate_all, unavailable
from tests.factories import ADMIN, ADMIN_KEY
from tests.processes import RedisServer, served, stop, switchboard
from tests.queue_seed import seed_items
from tests.receiver import Received, Receiver

pytestmark = pytest.mark.slow

ANSWERS = 200
KILL_AT = (50, 120)  # distinct replies the receiver has when the worker is killed


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis for this test (the shared one is left alone)."""
    try:
        server = RedisServer(tmp_path)
    except FileNotFoundError as exc:
        unavailable("redis-server", str(exc))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    """The session's PostgreSQL database, emptied."""
    asyncio.run(truncate_all(postgres_database))
    return postgres_database


def scale_env(pg_url: str, redis_url: str) -> dict[str, str]:
    """The API's and the workers' settings: killed attempts are made again after 3 s; the sweep runs every second;
    a rate limit that lets the run last long enough to be interrupted twice (SWITCHBOARD_ENCRYPTION_KEYS comes from
    tests/conftest.py through os.environ)."""
    return {
        "SWITCHBOARD_DATABASE_URL": pg_url,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "SWITCHBOARD_JOB_LEASE_SECONDS": "5",
        "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "1",
        "SWITCHBOARD_OUTBOUND_LEASE_SECONDS": "3",
        "SWITCHBOARD_OUTBOUND_POLL_SECONDS": "1",
        "SWITCHBOARD_OUTBOUND_BACKOFF_SECONDS": "0.5",
        "SWITCHBOARD_OUTBOUND_RATE_PER_TARGET_PER_MINUTE": "2400",
    }


def reply_id_of(request: Received) -> str:
    """The reply a `reply.created` event carries."""
    reply_id: str = request.json()["data"]["reply"]["id"]
    return reply_id


def platform_id(request: Received) -> str | None:
    """What the platform answers for a posted reply: the id the reply got there."""
    return f"p-{reply_id_of(request)}" if request.type == "reply.created" else None


def distinct_replies(receiver: Receiver) -> int:
    """How many different replies the receiver has accepted so far."""
    return len({reply_id_of(r) for r in receiver.of_type("reply.created") if r.status == 200})


async def wait_for(
    what: str,
    done: Callable[[], bool],
    worker: subprocess.Popen[bytes],
    timeout: float = 240,  # noqa: ASYNC109
) -> None:
    """Poll until `done()`, failing if the worker exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode} while waiting for {what}")
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{what}: not reached in {timeout} s")


async def seed_and_answer(base_url: str, pg_url: str, receiver: Receiver) -> str:
    """A source whose platform takes callbacks at the receiver, ANSWERS open items (seeded in the database), and an
    admin's answer to each through the API; returns the source's signing secret."""
    async with httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=60) as admin:
        created = await admin.post("/v1/admin/sources", json={"slug": "intranet", "name": "Intranet"})
        assert created.status_code == 201, created.text
        secret: str = created.json()["secret"]
        patched = await admin.patch("/v1/admin/sources/intranet", json={"callback_url": receiver.url})
        assert patched.status_code == 200, patched.text
        engine = create_engine(pg_url)
        async with transaction(create_session_factory(engine)) as session:
            item_ids = await seed_items(session, source="intranet", count=ANSWERS, sla=None)
        await engine.dispose()
        gate = asyncio.Semaphore(16)

        async def answer(i: int, item_id: uuid.UUID) -> int:
            async with gate:
                response = await admin.post(f"/v1/queue/{item_id}/answer", json={"body": f"Answer number {i}."})
                return response.status_code

        statuses = await asyncio.gather(*(answer(i, item_id) for i, item_id in enumerate(item_ids)))
    assert statuses == [200] * ANSWERS
    return secret


async def stored(pg_url: str) -> tuple[list[Reply], list[OutboundMessage]]:
    """The replies and the outbox as the database has them."""
    engine = create_engine(pg_url)
    async with create_session_factory(engine)() as session:
        replies = list((await session.execute(sa.select(Reply))).scalars())
        messages = list((await session.execute(sa.select(OutboundMessage).order_by(col(OutboundMessage.id)))).scalars())
    await engine.dispose()
    return replies, messages


async def test_worker_killed_twice_during_200_deliveries_every_reply_arrives_under_one_key_each(
    pg_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = scale_env(pg_url, redis_server.url)
    kills: list[int] = []
    with Receiver(external_id=platform_id) as receiver, served(env, tmp_path / "api.log") as base_url:
        secret = await seed_and_answer(base_url, pg_url, receiver)
        assert receiver.requests == []  # no worker yet: everything waits in the outbox (and in Redis)
        worker = switchboard("worker", env=env, log=tmp_path / "worker.log")
        try:
            for threshold in KILL_AT:

                def reached(threshold: int = threshold) -> bool:
                    return distinct_replies(receiver) >= threshold

                await wait_for(f"{threshold} replies", reached, worker)
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                kills.append(distinct_replies(receiver))
                worker = switchboard("worker", env=env, log=tmp_path / "worker.log")
            await wait_for(
                "every reply and resolution",
                lambda: (
                    distinct_replies(receiver) == ANSWERS
                    and len({r.webhook_id for r in receiver.of_type("item.resolved") if r.status == 200}) == ANSWERS
                ),
                worker,
                timeout=300,
            )
            await asyncio.sleep(4)  # past the lease: an attempt the kills left behind would be made again by now
        finally:
            stop(worker)
        requests = receiver.requests

    assert all(kill < ANSWERS for kill in kills), f"a kill came after the run ({kills})"
    assert {r.status for r in requests} == {200}
    switchboard_signs = Webhook(secret)
    for request in requests:  # every attempt signed with the source's secret, as the platform verifies it
        switchboard_signs.verify(request.body, request.headers)

    posted = [r for r in requests if r.type == "reply.created"]
    replies_of_key: dict[str, set[str]] = defaultdict(set)
    keys_of_reply: dict[str, set[str]] = defaultdict(set)
    for request in posted:
        assert request.webhook_id is not None
        replies_of_key[request.webhook_id].add(reply_id_of(request))
        keys_of_reply[reply_id_of(request)].add(request.webhook_id)
    assert len(replies_of_key) == ANSWERS  # 200 distinct idempotency keys ...
    assert all(len(replies) == 1 for replies in replies_of_key.values())  # ... none shared by two replies ...
    assert all(len(keys) == 1 for keys in keys_of_reply.values())  # ... and no reply under two keys

    replies, messages = await stored(pg_url)
    assert len(replies) == ANSWERS
    assert {str(r.id) for r in replies} == set(keys_of_reply)
    assert {r.delivery_state for r in replies} == {"delivered"}
    assert all(r.external_id == f"p-{r.id}" for r in replies)  # the platform's answer was recorded for each
    for reply in replies:
        assert keys_of_reply[str(reply.id)] == {key_for(f"reply:{reply.id}")}
    assert len(messages) == 2 * ANSWERS  # a reply.created and an item.resolved per answer, nothing more
    assert {m.state for m in messages} == {"delivered"}
    assert len({m.key for m in messages}) == len(messages)

    resolved = [r for r in requests if r.type == "item.resolved"]
    first_reply: dict[str, float] = {}
    for request in posted:
        item_id = request.json()["data"]["item"]["id"]
        first_reply.setdefault(item_id, request.monotonic)
    resolutions_of_item: dict[str, set[str | None]] = defaultdict(set)
    for request in resolved:
        item_id = request.json()["data"]["item"]["id"]
        resolutions_of_item[item_id].add(request.webhook_id)
        assert request.monotonic > first_reply[item_id]  # a resolution never overtakes its reply
    assert len(resolutions_of_item) == ANSWERS
    assert all(len(keys) == 1 for keys in resolutions_of_item.values())
