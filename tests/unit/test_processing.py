"""Processing jobs: at-least-once delivery, exactly-once effect, retries with backoff, dead letters."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col

from classifiers.pipeline import Analysis, BatchingAnalyser
from service.connectors.base import CommentEvent, ThreadRef
from service.database import SessionFactory, create_engine, create_session_factory, transaction
from service.ingest.events import apply_event
from service.jobs import processing
from service.jobs.backends import reconcile
from service.models import CommentAnalysis, Job, JobState, Source
from service.models.base import utcnow
from service.settings import Settings
from tests.conftest import make_settings


class PoisonAware:
    """The real analyser, except that any text containing POISON fails (a comment that always breaks)."""

    def __init__(self, real: BatchingAnalyser) -> None:
        self.real = real
        self.model_version = real.model_version
        self.calls: list[list[str]] = []

    async def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        self.calls.append(list(texts))
        if any("POISON" in t for t in texts):
            # What a real failure can carry: the comment's personal data, a multi-line driver detail.
            raise RuntimeError("this comment breaks the model, ask jane.doe@example.com\nDETAIL: the body text")
        return await self.real.analyse(texts)

    async def aclose(self) -> None:
        return None


@pytest.fixture
async def factory(database_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(database_url)
    async with transaction(create_session_factory(engine)) as session:
        session.add(Source(slug="s", name="S", kind="standard", secret="whsec_AAAA"))
    yield create_session_factory(engine)
    await engine.dispose()


async def add_comment(factory: SessionFactory, external_id: str, body: str) -> uuid.UUID:
    async with transaction(factory) as session:
        source_id = (await session.execute(sa.select(Source))).scalar_one().id
        assert source_id is not None
        receipt = await apply_event(
            session,
            source_id=source_id,
            event=CommentEvent(
                action="created",
                event_type="comment.created",
                external_id=external_id,
                thread=ThreadRef(external_id="t"),
                body=body,
                posted_at=utcnow(),
            ),
            now=utcnow(),
            max_attempts=3,
        )
    return receipt.job_ids[0]


async def job_states(factory: SessionFactory) -> dict[str, int]:
    async with factory() as session:
        rows = (await session.execute(sa.select(col(Job.state), sa.func.count()).group_by(col(Job.state)))).all()
    return {str(state): int(count) for state, count in rows}


def settings_for(database_url: str, **overrides: object) -> Settings:
    return make_settings(database_url, job_backoff_seconds=0, **overrides)


async def test_running_a_job_twice_has_one_effect(
    factory: SessionFactory, analyser: BatchingAnalyser, database_url: str
) -> None:
    job_id = await add_comment(factory, "c1", "hello there")
    settings = settings_for(database_url)
    first = await processing.process_jobs(factory, analyser, [job_id], settings=settings, clock=utcnow)
    again = await processing.process_jobs(factory, analyser, [job_id], settings=settings, clock=utcnow)
    assert (first.done, again.done, again.skipped) == (1, 0, 1)
    async with factory() as session:
        assert (await session.execute(sa.select(sa.func.count()).select_from(CommentAnalysis))).scalar_one() == 1
        job = await session.get_one(Job, job_id)
    assert (job.state, job.attempts) == (JobState.done, 1)


async def test_concurrent_runners_of_one_job_claim_it_once(
    factory: SessionFactory, analyser: BatchingAnalyser, database_url: str
) -> None:
    job_id = await add_comment(factory, "c1", "hello there")
    settings = settings_for(database_url)
    reports = await asyncio.gather(
        *[processing.process_jobs(factory, analyser, [job_id], settings=settings, clock=utcnow) for _ in range(8)]
    )
    assert sum(r.claimed for r in reports) == 1
    assert sum(r.done for r in reports) == 1


async def test_poison_comment_goes_dead_after_max_attempts_without_blocking_others(
    factory: SessionFactory, analyser: BatchingAnalyser, database_url: str
) -> None:
    poison = await add_comment(factory, "bad", "POISON pill")
    good = [await add_comment(factory, f"ok{i}", f"a normal comment {i}") for i in range(4)]
    flaky = PoisonAware(analyser)
    settings = settings_for(database_url)
    first = await processing.process_jobs(factory, flaky, [poison, *good], settings=settings, clock=utcnow)
    assert (first.done, first.failed) == (4, 1)  # the batch failed, was split, and only the poison failed
    for _ in range(5):
        await processing.process_jobs(factory, flaky, [poison], settings=settings, clock=utcnow)
    assert await job_states(factory) == {JobState.done: 4, JobState.dead: 1}
    async with factory() as session:
        dead = await session.get_one(Job, poison)
    assert dead.attempts == 3
    assert "this comment breaks the model" in (dead.last_error or "")


async def test_failed_job_waits_for_its_backoff(
    factory: SessionFactory, analyser: BatchingAnalyser, database_url: str
) -> None:
    poison = await add_comment(factory, "bad", "POISON")
    settings = make_settings(database_url, job_backoff_seconds=60)
    await processing.process_jobs(factory, PoisonAware(analyser), [poison], settings=settings, clock=utcnow)
    async with factory() as session:
        job = await session.get_one(Job, poison)
    assert job.state == JobState.pending
    assert job.available_at > utcnow() + timedelta(seconds=55)
    retry_now = await processing.process_jobs(factory, analyser, [poison], settings=settings, clock=utcnow)
    assert retry_now.claimed == 0  # not due yet


async def test_result_of_a_runner_that_lost_its_lease_is_discarded(
    factory: SessionFactory, analyser: BatchingAnalyser, database_url: str
) -> None:
    job_id = await add_comment(factory, "c1", "hello")
    lease = timedelta(seconds=1)
    async with transaction(factory) as session:
        stale = await processing.claim(session, [job_id], now=utcnow() - timedelta(seconds=10), lease=lease)
    # Another runner takes the job over after the lease expired, and finishes it.
    report = await processing.process_jobs(
        factory, analyser, [job_id], settings=settings_for(database_url, job_lease_seconds=1), clock=utcnow
    )
    assert report.done == 1
    # The first runner wakes up: its result is fenced off by the attempt number.
    late = processing.BatchReport()
    await processing._run(factory, analyser, stale, late, settings_for(database_url), utcnow)
    assert late.done == 0


async def test_reconciler_hands_out_never_enqueued_and_abandoned_jobs(
    factory: SessionFactory, database_url: str
) -> None:
    fresh = await add_comment(factory, "c1", "one")
    abandoned = await add_comment(factory, "c2", "two")
    settings = settings_for(database_url, job_requeue_seconds=0.01, job_lease_seconds=0.01)
    async with transaction(factory) as session:
        await processing.claim(session, [abandoned], now=utcnow() - timedelta(seconds=5), lease=timedelta(seconds=1))
    later = utcnow() + timedelta(seconds=1)  # past the requeue time and the lease, without waiting for them
    handed: list[uuid.UUID] = []

    async def collect(ids: Sequence[uuid.UUID]) -> None:
        handed.extend(ids)

    assert await reconcile(factory, settings, collect, now=later) == 2
    assert set(handed) == {fresh, abandoned}
    assert await reconcile(factory, settings_for(database_url), collect, now=later) == 0  # just enqueued: left alone


async def test_old_webhook_ids_are_forgotten_after_retention(factory: SessionFactory, database_url: str) -> None:
    from service.models import Delivery

    async with transaction(factory) as session:
        source_id = (await session.execute(sa.select(Source))).scalar_one().id
        assert source_id is not None
        session.add(
            Delivery(
                source_id=source_id,
                webhook_id="old",
                event_type="comment.created",
                outcome="created",
                received_at=utcnow() - timedelta(days=31),
            )
        )
        session.add(Delivery(source_id=source_id, webhook_id="new", event_type="comment.created", outcome="created"))
    assert await processing.prune_deliveries(factory, settings=settings_for(database_url), now=utcnow()) == 1


async def test_admin_sees_dead_jobs_and_can_retry_them(database_url: str, analyser: BatchingAnalyser) -> None:
    from tests.conftest import drain, running_app
    from tests.factories import ADMIN, comment_payload, create_source, post_event

    settings = make_settings(database_url, job_max_attempts=1)
    async with running_app(settings, PoisonAware(analyser)) as client:  # type: ignore[arg-type]
        secret = await create_source(client)
        bad = await post_event(client, secret, comment_payload("c-bad", body="POISON here"))
        await post_event(client, secret, comment_payload("c-ok", body="fine"))
        await drain(client)
        dead = (await client.get("/v1/admin/jobs", params={"state": "dead"}, headers=ADMIN)).json()["items"]
        assert [j["comment_id"] for j in dead] == [bad.json()["id"]]
        shown = (await client.get(f"/v1/comments/{bad.json()['id']}", headers=ADMIN)).json()
        assert shown["processing"]["state"] == "dead"
        # The class and a redacted first line; no traceback, file paths, detail lines or personal data.
        assert shown["processing"]["last_error"] == "RuntimeError: this comment breaks the model, ask [EMAIL]"

        retried = await client.post(f"/v1/admin/jobs/{dead[0]['id']}/retry", headers=ADMIN)
        assert retried.status_code == 200
        assert retried.json()["state"] == "pending"
        again = await client.post(f"/v1/admin/jobs/{dead[0]['id']}/retry", headers=ADMIN)
        assert (again.status_code, again.json()["code"]) == (409, "invalid_state")
        await drain(client)
        page = (await client.get("/v1/admin/jobs", params={"limit": 1}, headers=ADMIN)).json()
        assert len(page["items"]) == 1
        assert page["next_cursor"] is not None
        rest = (await client.get("/v1/admin/jobs", params={"cursor": page["next_cursor"]}, headers=ADMIN)).json()
        assert len(rest["items"]) == 1
        assert rest["next_cursor"] is None
        bad_cursor = await client.get("/v1/admin/jobs", params={"cursor": "!!"}, headers=ADMIN)
        assert (bad_cursor.status_code, bad_cursor.json()["code"]) == (422, "invalid_cursor")
