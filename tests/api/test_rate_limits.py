"""Rate limits: per API key on every authenticated route, per source slug on webhooks; shared through Redis."""

from __future__ import annotations

import httpx
import pytest

from classifiers.pipeline import BatchingAnalyser
from service.auth import keys
from service.auth.ratelimit import MemoryLimiter, RedisLimiter, sliding_window_wait
from service.database import transaction
from service.models import Role
from tests.conftest import make_settings, running_app
from tests.factories import ADMIN, comment_payload, create_source, encode, post_event

LIMIT = 5


async def admin_key(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    """An extra admin key, written straight to the database (no API request counted against anyone)."""
    factory = client.app.state.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        _, raw = await keys.create_key(session, role=Role.admin, name=name)
    return {"Authorization": f"Bearer {raw}"}


def assert_rate_limited(response: httpx.Response) -> int:
    """A 429 problem with a Retry-After header; returns the seconds."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["status"], problem["code"]) == (429, "rate_limited")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 120  # a sliding window (Redis) may ask for up to two minutes
    assert problem["retry_after"] == retry_after
    return retry_after


async def test_a_key_over_its_limit_gets_429_with_retry_after_and_other_keys_are_unaffected(
    database_url: str, analyser: BatchingAnalyser
) -> None:
    settings = make_settings(database_url, rate_limit_per_key_per_minute=LIMIT)
    async with running_app(settings, analyser) as client:
        first, second = await admin_key(client, "first"), await admin_key(client, "second")
        for _ in range(LIMIT):
            assert (await client.get("/v1/admin/topics", headers=first)).status_code == 200
        retry_after = assert_rate_limited(await client.get("/v1/admin/topics", headers=first))
        assert retry_after <= 12  # a token comes back every 60/5 s
        # Every authenticated route counts against the same key.
        assert_rate_limited(await client.get("/v1/queue", headers=first))
        for _ in range(LIMIT):
            assert (await client.get("/v1/queue", headers=second)).status_code == 200
        assert_rate_limited(await client.get("/v1/queue", headers=second))
        # Unauthenticated requests are refused before any key is counted.
        assert (await client.get("/v1/queue")).status_code == 401


async def test_limit_zero_switches_the_limit_off(database_url: str, analyser: BatchingAnalyser) -> None:
    settings = make_settings(database_url, rate_limit_per_key_per_minute=0, rate_limit_per_source_per_minute=0)
    async with running_app(settings, analyser) as client:
        for _ in range(30):
            assert (await client.get("/v1/admin/topics", headers=ADMIN)).status_code == 200
        for _ in range(30):
            assert (await client.post("/v1/webhooks/nowhere", content=b"{}")).status_code == 404


async def test_a_source_over_its_limit_gets_429_and_other_sources_are_unaffected(
    database_url: str, analyser: BatchingAnalyser
) -> None:
    settings = make_settings(database_url, rate_limit_per_source_per_minute=LIMIT)
    async with running_app(settings, analyser) as client:
        intranet, forum = await create_source(client, "intranet"), await create_source(client, "forum")
        for i in range(LIMIT):
            assert (await post_event(client, intranet, comment_payload(f"c-{i}"))).status_code == 202
        assert_rate_limited(await post_event(client, intranet, comment_payload("c-over")))
        for i in range(LIMIT):
            assert (await post_event(client, forum, comment_payload(f"f-{i}"), slug="forum")).status_code == 202
        assert_rate_limited(await post_event(client, forum, comment_payload("f-over"), slug="forum"))


async def test_unsigned_junk_is_limited_per_slug_before_it_is_verified(
    database_url: str, analyser: BatchingAnalyser
) -> None:
    settings = make_settings(database_url, rate_limit_per_source_per_minute=LIMIT)
    async with running_app(settings, analyser) as client:
        secret = await create_source(client, "intranet")
        junk = encode(comment_payload("junk"))
        for _ in range(LIMIT):
            response = await client.post("/v1/webhooks/intranet", content=junk, headers={"webhook-id": "x"})
            assert response.json()["code"] == "invalid_signature"
        # The slug's allowance is spent: even a correctly signed delivery waits now (nothing is read or stored).
        assert_rate_limited(await post_event(client, secret, comment_payload("c-1")))
        assert_rate_limited(await client.post("/v1/webhooks/intranet", content=b"x" * 1_000_000))
        # Unknown slugs are limited too, each on its own.
        for _ in range(LIMIT):
            assert (await client.post("/v1/webhooks/nowhere", content=junk)).status_code == 404
        assert_rate_limited(await client.post("/v1/webhooks/nowhere", content=junk))


async def test_api_replicas_sharing_redis_share_the_limits(
    database_url: str, redis_url: str, analyser: BatchingAnalyser
) -> None:
    settings = make_settings(
        database_url, redis_url=redis_url, rate_limit_per_key_per_minute=LIMIT, rate_limit_per_source_per_minute=LIMIT
    )
    async with running_app(settings, analyser) as one, running_app(settings, analyser) as two:
        assert isinstance(one.app.state.rate_limiter, RedisLimiter)  # type: ignore[attr-defined]
        key = await admin_key(one, "shared")
        for i in range(LIMIT):
            replica = (one, two)[i % 2]
            assert (await replica.get("/v1/admin/topics", headers=key)).status_code == 200
        assert_rate_limited(await one.get("/v1/admin/topics", headers=key))
        assert_rate_limited(await two.get("/v1/admin/topics", headers=key))
        assert (await two.get("/v1/admin/topics", headers=await admin_key(two, "other"))).status_code == 200

        for i in range(LIMIT):
            replica = (one, two)[i % 2]
            assert (await replica.post("/v1/webhooks/nowhere", content=b"{}")).status_code == 404
        assert_rate_limited(await two.post("/v1/webhooks/nowhere", content=b"{}"))
        assert_rate_limited(await one.post("/v1/webhooks/nowhere", content=b"{}"))


# ---- the limiters themselves ----------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_token_bucket_refills_at_the_limit_per_minute() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock)
    assert all([(await limiter.hit("k", 60)).allowed for _ in range(60)])
    refused = await limiter.hit("k", 60)
    assert (refused.allowed, refused.retry_after_header) == (False, 1)
    clock.now += 1.0
    assert (await limiter.hit("k", 60)).allowed
    assert not (await limiter.hit("k", 60)).allowed
    clock.now += 3600
    assert sum([(await limiter.hit("k", 60)).allowed for _ in range(100)]) == 60  # never more than a minute's worth


async def test_token_bucket_memory_is_bounded() -> None:
    clock = Clock()
    limiter = MemoryLimiter(clock=clock, max_buckets=100)
    for i in range(1000):
        await limiter.hit(f"source:junk-{i}", 10)
    assert len(limiter._buckets) <= 100
    for _ in range(10):
        await limiter.hit("source:busy", 10)
    assert not (await limiter.hit("source:busy", 10)).allowed  # a recently used scope is kept


def fits(*, limit: int, previous: int, current: int, at: float, window: float = 60_000) -> bool:
    """Whether the sliding-window estimate admits one more request `at` ms after this window began."""
    if at < window:
        return previous * (window - at) / window + current + 1 <= limit + 1e-9
    return current * (window - (at - window)) / window + 1 <= limit + 1e-9


@pytest.mark.parametrize(
    ("previous", "current", "elapsed", "expected"),
    [
        (0, 5, 10_000, 62_000),  # this minute is full; in the next its 5 must decay to 4: 12 s into it
        (10, 0, 0, 36_000),  # the last minute's 10 must decay to 4
        (10, 4, 30_000, 30_000),  # only once this minute is over
        (2, 1, 0, 0.0),  # room now (a refused request never gets this far, but the answer is still right)
    ],
)
def test_sliding_window_wait_is_the_earliest_moment_a_request_fits(
    previous: int, current: int, elapsed: int, expected: float
) -> None:
    wait = sliding_window_wait(limit=LIMIT, previous=previous, current=current, elapsed=elapsed, window=60_000)
    assert wait == pytest.approx(expected)
    assert fits(limit=LIMIT, previous=previous, current=current, at=elapsed + wait)
    if wait >= 1:
        assert not fits(limit=LIMIT, previous=previous, current=current, at=elapsed + wait - 1)


async def test_redis_unreachable_falls_back_to_limiting_per_process() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0")
    try:
        assert all([(await limiter.hit("k", 3)).allowed for _ in range(3)])
        assert not (await limiter.hit("k", 3)).allowed
    finally:
        await limiter.aclose()
