"""Outbound: answers delivered to a platform, raw delivery throughput, and what notifications add to processing.

    .venv/bin/python -m benchmarks.outbound [--answers 1000 --messages 2000 --comments 150 --skip-postgres]

Against a receiver in its own process (benchmarks/receiver.py: answers 200 with an `external_id` at once), on
SQLite and PostgreSQL, with the embedded deployment's in-process delivery loop:

1. **answers**: `--answers` open items (seeded directly) are each answered through the API (8 at a time); every
   reply becomes a `reply.created` delivery to the source's callback URL. Prints answers/s at the API, the time
   from answer to delivery (p50/p99), replies delivered per second over the run, and what the receiver got
   (reply.created and item.resolved: two per answer): requests, distinct webhook-ids, signatures verified with the
   source's secret by the `standardwebhooks` package. Then 100 answers paced at 5/s (a busy team), for latency.
2. **throughput**: `--messages` outbox rows for one target committed at once; deliveries per second until the last
   is delivered, at the default per-target concurrency (4) and at 16.
3. **notifications on the processing path**: `--comments` comments posted as signed webhooks at 10/s and
   processed by the real model, first with nothing subscribed, then with their team subscribed to `item.assigned`
   on an e-mail and a Slack channel (every item then writes notification rows in its routing transaction);
   p50/p99 of webhook received -> item created, both phases in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlmodel import col

from benchmarks.databases import temporary_postgres, temporary_sqlite
from benchmarks.queue import IdleAnalyser, log, percentile, table
from service.database import transaction
from service.models import Comment, QueueItem, Reply
from service.models.base import utcnow
from service.outbound import outbox
from service.outbound.tables import DeliveryState, MessageKind, OutboundMessage
from service.settings import Settings
from switchboard.app import create_app
from tests.factories import ADMIN, ADMIN_KEY, TEST_ENCRYPTION_KEY, comment_payload, signed_headers
from tests.queue_seed import seed_items

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SOURCE = "intranet"
IDLE = timedelta(days=1).total_seconds()


@contextmanager
def receiver() -> Iterator[str]:
    """A receiver process; yields its base URL."""
    process = subprocess.Popen([sys.executable, "-m", "benchmarks.receiver"], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@asynccontextmanager
async def running(database_url: str, *, model: bool = False, **overrides: Any) -> AsyncIterator[FastAPI]:
    """The app (embedded deployment) with its lifespan running."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "bootstrap_admin_key": ADMIN_KEY,
        "encryption_keys": TEST_ENCRYPTION_KEY,
        "sla_sweep_interval_seconds": IDLE,
        "reconcile_interval_seconds": IDLE,
        "rate_limit_per_key_per_minute": 0,
        "rate_limit_per_source_per_minute": 0,
        "outbound_rate_per_target_per_minute": 0,
        "log_level": "WARNING",
        **overrides,
    }
    app = create_app(Settings(**values), analyser=None if model else IdleAnalyser())
    async with app.router.lifespan_context(app):
        yield app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://switchboard.bench", timeout=60)


async def wait_for(app: FastAPI, statement: sa.Select[Any], target: int, timeout: float = 600) -> float:  # noqa: ASYNC109
    """Poll until `statement` (a count) reaches `target`; returns when it did (time.perf_counter)."""
    factory = app.state.services.session_factory
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        async with factory() as session:
            if (await session.execute(statement)).scalar_one() >= target:
                return time.perf_counter()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"not reached in {timeout} s")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


# ---- 1. answers ---------------------------------------------------------------------------------------------


async def answers(database: str, url: str, count: int, rate: float | None) -> list[str]:
    with receiver() as receiver_url:
        async with running(url) as app, client(app) as api:
            created = await api.post("/v1/admin/sources", json={"slug": SOURCE, "name": "Intranet"}, headers=ADMIN)
            secret = created.json()["secret"]
            callback = {"callback_url": f"{receiver_url}/callbacks"}
            (await api.patch(f"/v1/admin/sources/{SOURCE}", json=callback, headers=ADMIN)).raise_for_status()
            async with transaction(app.state.services.session_factory) as session:
                ids = await seed_items(session, source=SOURCE, count=count)
            gate = asyncio.Semaphore(8)

            async def answer(n: int, item_id: uuid.UUID) -> None:
                if rate is not None:  # paced: answer n goes at n / rate seconds
                    await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
                async with gate:
                    body = {"body": f"Thanks for asking: here is the answer to {item_id}."}
                    response = await api.post(f"/v1/queue/{item_id}/answer", json=body, headers=ADMIN)
                    response.raise_for_status()

            started = time.perf_counter()
            await asyncio.gather(*(answer(n, i) for n, i in enumerate(ids)))
            answered = time.perf_counter()
            delivered = sa.select(sa.func.count()).where(col(Reply.delivery_state) == "delivered")
            done = await wait_for(app, delivered, count)
            # Each answer also closes its item: item.resolved follows its reply.created.
            everything = sa.select(sa.func.count()).where(col(OutboundMessage.state) == DeliveryState.delivered.value)
            await wait_for(app, everything, 2 * count)
            async with app.state.services.session_factory() as session:
                rows = (await session.execute(sa.select(col(Reply.created_at), col(Reply.delivered_at)))).all()
            lags = [(d - c).total_seconds() for c, d in rows if d is not None]
        async with httpx.AsyncClient() as plain:
            stats = (await plain.get(f"{receiver_url}/stats", headers={"x-secret": secret})).json()
    return [
        database, "as fast as 8 at a time" if rate is None else f"{rate:g}/s", str(count),
        f"{count / (answered - started):.0f}", ms(percentile(lags, 50)),
        ms(percentile(lags, 99)), f"{count / (done - started):.0f}", str(stats["requests"]),
        str(stats["distinct_ids"]), str(stats["verified"]),
    ]  # fmt: skip


# ---- 2. throughput ------------------------------------------------------------------------------------------


async def throughput(database: str, url: str, count: int, concurrency: int) -> list[str]:
    with receiver() as receiver_url:
        async with running(url, outbound_concurrency_per_target=concurrency) as app, client(app) as api:
            await api.post("/v1/admin/sources", json={"slug": SOURCE, "name": "Intranet"}, headers=ADMIN)
            callback = {"callback_url": f"{receiver_url}/callbacks"}
            (await api.patch(f"/v1/admin/sources/{SOURCE}", json=callback, headers=ADMIN)).raise_for_status()
            now = utcnow()
            started = time.perf_counter()
            async with transaction(app.state.services.session_factory) as session:
                for i in range(count):
                    payload = {"type": "item.resolved", "timestamp": now.isoformat(), "data": {"n": i}}
                    await outbox.emit(
                        session, kind=MessageKind.item_resolved, target=f"source:{SOURCE}", cause=f"bench:{i}",
                        payload=payload, now=now,
                    )  # fmt: skip
            written = time.perf_counter()
            delivered = sa.select(sa.func.count()).where(col(OutboundMessage.state) == DeliveryState.delivered.value)
            done = await wait_for(app, delivered, count)
        async with httpx.AsyncClient() as plain:
            stats = (await plain.get(f"{receiver_url}/stats")).json()
    return [
        database, str(concurrency), str(count), f"{written - started:.1f}", f"{done - written:.1f}",
        f"{count / (done - written):.0f}", str(stats["requests"]), str(stats["distinct_ids"]),
    ]  # fmt: skip


# ---- 3. notifications on the processing path ----------------------------------------------------------------


async def post_at_rate(api: httpx.AsyncClient, secret: str, prefix: str, count: int, rate: float) -> None:
    start = time.perf_counter()
    sends = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        body = json.dumps(comment_payload(f"{prefix}-{i}", body=f"Question {i}: when does the canteen open?"))
        data = body.encode()
        sends.append(asyncio.create_task(api.post(f"/v1/webhooks/{SOURCE}", content=data,
                                                  headers=signed_headers(secret, data))))  # fmt: skip
    for response in await asyncio.gather(*sends):
        response.raise_for_status()


async def latencies(app: FastAPI, prefix: str) -> list[float]:
    async with app.state.services.session_factory() as session:
        rows = await session.execute(
            sa.select(col(Comment.received_at), col(QueueItem.created_at))
            .join(QueueItem, col(QueueItem.comment_id) == col(Comment.id))
            .where(col(Comment.external_id).like(f"{prefix}-%"))
        )
        return [(created - received).total_seconds() for received, created in rows.all()]


async def notifications(database: str, url: str, count: int) -> list[list[str]]:
    rows = []
    with receiver() as receiver_url:
        async with running(url, model=True) as app, client(app) as api:
            secret = (await api.post("/v1/admin/sources", json={"slug": SOURCE, "name": "I"}, headers=ADMIN)).json()[
                "secret"
            ]
            members = [f"m{i}" for i in range(5)]
            for member in members:
                body = {"id": member, "name": member.upper(), "email": f"{member}@example.com"}
                (await api.post("/v1/admin/members", json=body, headers=ADMIN)).raise_for_status()
            team = {"id": "t", "name": "Team", "members": members}
            (await api.post("/v1/admin/teams", json=team, headers=ADMIN)).raise_for_status()
            rules = [{"id": "d", "name": "Default", "then": {"assign": {"to": "team", "team": "t"}}}]
            (await api.put("/v1/admin/rules", json={"rules": rules}, headers=ADMIN)).raise_for_status()
            await post_at_rate(api, secret, "off", 20, 10)  # warm-up
            for phase in ("off", "on"):
                if phase == "on":
                    for channel in (
                        {"id": "mail", "name": "Mail", "kind": "email",
                         "config": {"host": "127.0.0.1", "port": 9, "security": "none",
                                    "from_address": "switchboard@example.com"}},
                        {"id": "chat", "name": "Chat", "kind": "slack", "config": {"url": f"{receiver_url}/slack"}},
                    ):  # fmt: skip
                        (await api.post("/v1/admin/channels", json=channel, headers=ADMIN)).raise_for_status()
                        sub = {"channel": channel["id"], "events": ["item.assigned"], "team": "t"}
                        (await api.post("/v1/admin/subscriptions", json=sub, headers=ADMIN)).raise_for_status()
                prefix = f"{phase}-measured"
                await post_at_rate(api, secret, prefix, count, 10)
                items = sa.select(sa.func.count()).select_from(QueueItem)
                await wait_for(app, items, count * (2 if phase == "on" else 1) + 20)
                values = await latencies(app, prefix)
                rows.append([database, phase, str(len(values)), ms(percentile(values, 50)), ms(percentile(values, 99))])
    return rows


# ---- databases ----------------------------------------------------------------------------------------------


def postgres(admin_url_text: str) -> AbstractAsyncContextManager[str]:
    """A fresh, migrated PostgreSQL database for one measurement, dropped afterwards."""
    return temporary_postgres(admin_url_text, "switchboard_outbound_bench")


def sqlite() -> AbstractAsyncContextManager[str]:
    """A fresh, migrated SQLite file."""
    return temporary_sqlite("switchboard-outbound-bench")


def databases(args: argparse.Namespace) -> Sequence[tuple[str, Any]]:
    found: list[tuple[str, Any]] = [("sqlite", sqlite)]
    if not args.skip_postgres:
        found.append(("postgresql", lambda: postgres(args.postgres_url)))
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--comments", type=int, default=150)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--postgres-url", default=os.environ.get("SWITCHBOARD_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    parser.add_argument("--skip", nargs="*", default=[], choices=["answers", "throughput", "notifications"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"Outbound delivery (python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load}); "
          "receiver: benchmarks/receiver.py in its own process\n")  # fmt: skip
    if "answers" not in args.skip:
        rows = []
        for name, make in databases(args):
            for rate, count in ((None, args.answers), (5.0, 100)):
                log(f"{name}: {count} answers, rate {rate}")
                async with make() as url:
                    rows.append(await answers(name, url, count, rate))
        print(
            "1. Answers through the API, each delivered as reply.created (then item.resolved) to the source's callback"
        )
        print(table(["database", "answering", "answers", "answers/s", "answer->delivered p50 ms", "p99 ms",
                     "replies delivered/s", "requests received", "distinct ids", "verified"], rows))  # fmt: skip
        print()
    if "throughput" not in args.skip:
        rows = []
        for name, make in databases(args):
            for concurrency in (4, 16):
                log(f"{name}: {args.messages} messages, concurrency {concurrency}")
                async with make() as url:
                    rows.append(await throughput(name, url, args.messages, concurrency))
        print("2. Outbox rows committed at once for one target, delivered by the in-process loop")
        print(table(["database", "per-target concurrency", "messages", "write s", "deliver s", "delivered/s",
                     "received", "distinct ids"], rows))  # fmt: skip
        print()
    if "notifications" not in args.skip:
        rows = []
        for name, make in databases(args):
            log(f"{name}: {args.comments} comments per phase, real model")
            async with make() as url:
                rows.extend(await notifications(name, url, args.comments))
        print("3. Webhook received -> item created, at 10 comments/s, without and with team notifications")
        print(table(["database", "subscriptions", "comments", "p50 ms", "p99 ms"], rows))


if __name__ == "__main__":
    asyncio.run(main())
