"""A duplicate storm against a real uvicorn server: every delivery acknowledged, every comment processed once."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from service.database import create_engine
from service.models import Comment, CommentAnalysis, Delivery, Job
from tests.factories import ADMIN, ADMIN_KEY, comment_payload, signed_headers
from tests.processes import served

COMMENTS = 150  # x 3 deliveries, half of them racing: the races are the point, not the volume
DELIVERIES_EACH = 3


async def wait_processed(client: httpx.AsyncClient, timeout: float = 240) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = 0
        for state in ("pending", "running"):
            page = (await client.get("/v1/admin/jobs", params={"state": state, "limit": 1}, headers=ADMIN)).json()
            busy += len(page["items"])
        if not busy:
            return
        await asyncio.sleep(0.5)
    raise TimeoutError("jobs still open")


@pytest.mark.slow
async def test_duplicate_storm_stores_and_processes_each_comment_once(database_url: str, tmp_path: Path) -> None:
    env = {
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "1",
    }
    with served(env, tmp_path / "server.log") as base_url:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
            created = await client.post("/v1/admin/sources", json={"slug": "intranet", "name": "I"}, headers=ADMIN)
            secret = created.json()["secret"]
            gate = asyncio.Semaphore(32)

            async def deliver(body: bytes, headers: dict[str, str]) -> int:
                async with gate:
                    response = await client.post("/v1/webhooks/intranet", content=body, headers=headers)
                    return response.status_code

            async def storm(i: int) -> list[int]:
                body = json.dumps(comment_payload(f"c-{i}", body=f"Question number {i}: when does it open?")).encode()
                headers = signed_headers(secret, body, webhook_id=f"msg_{i}")
                if i % 2 == 0:  # half: the three deliveries race each other
                    return list(await asyncio.gather(*[deliver(body, headers) for _ in range(DELIVERIES_EACH)]))
                return [await deliver(body, headers) for _ in range(DELIVERIES_EACH)]

            statuses = [s for batch in await asyncio.gather(*[storm(i) for i in range(COMMENTS)]) for s in batch]
            assert len(statuses) == COMMENTS * DELIVERIES_EACH
            assert all(200 <= s < 300 for s in statuses), {s: statuses.count(s) for s in set(statuses)}
            assert statuses.count(202) == COMMENTS
            await wait_processed(client)

    engine = create_engine(database_url)
    async with engine.connect() as connection:
        comments = (await connection.execute(sa.select(sa.func.count()).select_from(Comment))).scalar_one()
        deliveries = (await connection.execute(sa.select(sa.func.count()).select_from(Delivery))).scalar_one()
        analyses = (await connection.execute(sa.select(sa.func.count()).select_from(CommentAnalysis))).scalar_one()
        jobs = (await connection.execute(sa.select(col(Job.state), col(Job.attempts)))).all()
    await engine.dispose()
    assert (comments, deliveries, analyses) == (COMMENTS, COMMENTS, COMMENTS)
    assert len(jobs) == COMMENTS
    assert {(state, attempts) for state, attempts in jobs} == {("done", 1)}
