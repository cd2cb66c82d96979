"""The scale deployment for real: PostgreSQL + Redis + `switchboard worker` processes + a uvicorn API."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from service.database import create_engine
from service.models import CommentAnalysis, Job, QueueItem
from tests.conftest import assert_analytics_facts_kept, truncate_all, unavailable
from tests.factories import ADMIN, ADMIN_KEY, comment_payload, signed_headers
from tests.processes import RedisServer, served, stop, switchboard

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis this test may stop and start (the shared one is left alone)."""
    try:
        server = RedisServer(tmp_path)
    except FileNotFoundError as exc:
        unavailable("redis-server", str(exc))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_database: str) -> str:
    asyncio.run(truncate_all(postgres_database))
    return postgres_database


def scale_env(pg_url: str, redis_url: str) -> dict[str, str]:
    return {
        "SWITCHBOARD_DATABASE_URL": pg_url,
        "SWITCHBOARD_REDIS_URL": redis_url,
        "SWITCHBOARD_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "SWITCHBOARD_JOB_LEASE_SECONDS": "5",
        "SWITCHBOARD_JOB_REQUEUE_SECONDS": "3",
        "SWITCHBOARD_RECONCILE_INTERVAL_SECONDS": "1",
    }


async def post_comments(base_url: str, ids: range) -> list[int]:
    """Create a source if needed and post one signed comment per id; returns the statuses."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=16)) as client:
        created = await client.post("/v1/admin/sources", json={"slug": "intranet", "name": "I"}, headers=ADMIN)
        if created.status_code == 201:
            Path(base_url.replace("/", "_")).write_text(created.json()["secret"])  # noqa: ASYNC240
        secret = Path(base_url.replace("/", "_")).read_text()  # noqa: ASYNC240
        gate = asyncio.Semaphore(16)

        async def one(i: int) -> int:
            body = json.dumps(comment_payload(f"c-{i}", body=f"Comment {i}: is the car park open at night?")).encode()
            async with gate:
                response = await client.post(
                    "/v1/webhooks/intranet", content=body, headers=signed_headers(secret, body)
                )
                return response.status_code

        return list(await asyncio.gather(*[one(i) for i in ids]))


async def counts(url: str) -> tuple[int, dict[str, int]]:
    engine = create_engine(url)
    async with engine.connect() as connection:
        analyses = (await connection.execute(sa.select(sa.func.count()).select_from(CommentAnalysis))).scalar_one()
        states = dict(
            (await connection.execute(sa.select(col(Job.state), sa.func.count()).group_by(col(Job.state)))).all()
        )
    await engine.dispose()
    return analyses, states


async def wait_until(
    url: str,
    done: Callable[[int, dict[str, int]], bool],
    worker: subprocess.Popen[bytes],
    timeout: float = 240,  # noqa: ASYNC109
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(*(await counts(url))):
            return
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}")
        await asyncio.sleep(0.5)
    raise TimeoutError(f"not reached in {timeout} s: {await counts(url)}")


async def test_worker_killed_twice_mid_run_loses_nothing_and_repeats_nothing(
    pg_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = scale_env(pg_url, redis_server.url)
    total = 200  # enough for two kills well inside the run; the count is not the point, the kills are
    with served(env, tmp_path / "api.log") as base_url:
        statuses = await post_comments(base_url, range(total))
        assert statuses == [202] * total
        worker = switchboard("worker", env=env, log=tmp_path / "worker.log")
        try:
            for threshold in (40, 100):

                def reached(analyses: int, _: dict[str, int], threshold: int = threshold) -> bool:
                    return analyses >= threshold

                await wait_until(pg_url, reached, worker)
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                worker = switchboard("worker", env=env, log=tmp_path / "worker.log")
            await wait_until(pg_url, lambda _, states: states == {"done": total}, worker, timeout=300)
        finally:
            stop(worker)
    analyses, states = await counts(pg_url)
    assert analyses == total  # one effect per comment: no comment lost, none stored twice
    assert states == {"done": total}
    engine = create_engine(pg_url)
    async with engine.connect() as connection:
        items, comments = (
            await connection.execute(sa.select(sa.func.count(), sa.func.count(sa.distinct(col(QueueItem.comment_id)))))
        ).one()
    await engine.dispose()
    assert (items, comments) == (total, total)  # one queue item per comment, however often a job ran
    await assert_analytics_facts_kept(pg_url)  # the workers kept the analytics facts at every commit


async def test_webhooks_are_acknowledged_while_redis_is_down_and_processed_when_it_returns(
    pg_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = scale_env(pg_url, redis_server.url)
    with served(env, tmp_path / "api.log") as base_url:
        worker = switchboard("worker", env=env, log=tmp_path / "worker.log")
        try:
            assert await post_comments(base_url, range(50)) == [202] * 50
            await wait_until(pg_url, lambda analyses, _: analyses == 50, worker)
            redis_server.stop()
            assert await post_comments(base_url, range(50, 150)) == [202] * 100  # still acknowledged
            async with httpx.AsyncClient(base_url=base_url, timeout=10) as probe:
                ready = await probe.get("/readyz")
            assert ready.status_code == 503
            assert "queue" in ready.json()["detail"]
            redis_server.start()
            await wait_until(pg_url, lambda analyses, states: analyses == 150 and states == {"done": 150}, worker)
        finally:
            stop(worker)


async def test_worker_cron_escalates_an_item_past_its_sla_to_the_team_lead(
    pg_url: str, redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {**scale_env(pg_url, redis_server.url), "SWITCHBOARD_SLA_SWEEP_INTERVAL_SECONDS": "1"}
    with served(env, tmp_path / "api.log") as base_url:
        async with httpx.AsyncClient(base_url=base_url, headers=ADMIN, timeout=30) as admin:
            for member in ("lead", "agent"):
                assert (await admin.post("/v1/admin/members", json={"id": member, "name": member})).status_code == 201
            team = {"id": "hr", "name": "HR", "members": ["agent"], "lead": "lead"}
            assert (await admin.post("/v1/admin/teams", json=team)).status_code == 201
            # An SLA that has passed when the item is routed: the test waits for the worker's cron, not the clock.
            rules = [{"id": "all", "name": "All to HR at once", "then": {"assign": {"to": "team", "team": "hr"},
                                                                          "sla": "PT0.001S"}}]  # fmt: skip
            assert (await admin.put("/v1/admin/rules", json={"rules": rules})).status_code == 200
        assert await post_comments(base_url, range(1)) == [202]
        worker = switchboard("worker", env=env, log=tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                async with httpx.AsyncClient(base_url=base_url, headers=ADMIN) as admin:
                    page = (await admin.get("/v1/queue", params={"state": "escalated"})).json()["items"]
                if page:
                    break
                assert worker.poll() is None, "the worker exited"
                await asyncio.sleep(0.5)
        finally:
            stop(worker)
    assert [(i["member"], i["team"], i["state"]) for i in page] == [("lead", "hr", "escalated")]
