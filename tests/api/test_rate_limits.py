"""Rate limits: per API key on every authenticated route, per source slug on webhooks; shared through Redis."""

from __future__ import annotations

import httpx
import pytest

from classifiers.pipeline import BatchingAnalyser
from service.auth import keys
from service.auth.ratelimit import MemoryLimiter, RedisLimiter, take_token
from service.database import transaction
from service.models import Role
from service.models.base import utcnow
from tests.conftest import make_settings, running_app
from tests.factories import ADMIN, comment_payload, create_source, encode, post_event

LIMIT = 5


async def admin_key(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    """An extra admin key, written straight to the database (no API request counted against anyone)."""
    factory = client.app.state.services.session_factory  # type: ignore[attr-defined]
    async with transaction(factory) as session:
        _, raw = await keys.create_key(session, role=Role.admin, name=name, now=utcnow())
    return {"Authorization": f"Bearer {raw}"}


def assert_rate_limited(response: httpx.Response) -> int:
    """A 429 problem with a Retry-After header; returns the seconds."""
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert (problem["status"], problem["code"]) == (429, "rate_limited")
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60  # one token of a per-minute allowance comes back within a minute
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
        assert isinstance(one.app.state.services.rate_limiter, RedisLimiter)  # type: ignore[attr-defined]
        key = await admin_key(one, "shared")
        for i in range(LIMIT):
            replica = (one, two)[i % 2]
            assert (await replica.get("/v1/admin/topics", headers=key)).status_code == 200
        assert assert_rate_limited(await one.get("/v1/admin/topics", headers=key)) <= 12  # the same bucket as in memory
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


@pytest.mark.parametrize(
    ("full_at", "expected"),
    [
        (60.0, 12.0),  # all 5 tokens taken at 0: the next one is back after 60/5 s
        (50.0, 2.0),  # a token is back once the bucket is within 60 - 12 s of full
        (48.0, 0.0),  # exactly one token left: it fits now
        (None, 0.0),  # a scope never seen starts full
        (-100.0, 0.0),  # a bucket that filled up long ago is full, not fuller
    ],
)
def test_the_wait_is_the_earliest_moment_a_request_fits(full_at: float | None, expected: float) -> None:
    after, wait = take_token(full_at, now=0.0, limit=LIMIT)
    assert wait == pytest.approx(expected)
    if wait:
        assert after == full_at  # a refused request takes nothing
        assert take_token(full_at, now=wait, limit=LIMIT)[1] == 0.0
        assert take_token(full_at, now=wait - 0.01, limit=LIMIT)[1] > 0
    else:
        assert after == pytest.approx(max(full_at or 0.0, 0.0) + 60 / LIMIT)


async def test_redis_holds_the_same_token_bucket(redis_url: str) -> None:
    limiter = RedisLimiter(redis_url)
    try:
        assert all([(await limiter.hit("k", LIMIT)).allowed for _ in range(LIMIT)])
        refused = await limiter.hit("k", LIMIT)
        assert not refused.allowed
        assert 11 < refused.retry_after <= 12  # one token back after 60/5 s, counted on Redis's clock
        assert refused.retry_after_header == 12
        assert (await limiter.hit("other", LIMIT)).allowed
        for limit in (7, 11, 13):  # a token's interval that is not a whole number of ms still allows the full burst
            assert sum([(await limiter.hit(f"burst-{limit}", limit)).allowed for _ in range(limit + 1)]) == limit
            memory = MemoryLimiter(clock=Clock())
            assert sum([(await memory.hit("burst", limit)).allowed for _ in range(limit + 1)]) == limit
    finally:
        await limiter.aclose()


async def test_redis_unreachable_falls_back_to_limiting_per_process() -> None:
    limiter = RedisLimiter("redis://127.0.0.1:1/0")
    try:
        assert all([(await limiter.hit("k", 3)).allowed for _ in range(3)])
        assert not (await limiter.hit("k", 3)).allowed
    finally:
        await limiter.aclose()
