"""Outbound delivery logic on the real database: backoff and Retry-After, what an HTTP answer means, which due
messages a runner may claim (ordering per comment, per-target concurrency), fenced attempts, one row per cause."""

from __future__ import annotations

import email.utils
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlmodel import col

from service.connectors.http import MAX_RETRY_AFTER_SECONDS, Outcome, judge, retry_after_seconds
from service.database import SessionFactory, create_engine, create_session_factory, transaction
from service.outbound import delivery, outbox
from service.outbound.tables import DeliveryState, MessageKind, OutboundMessage
from service.settings import Settings
from tests.conftest import make_settings

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
PLATFORM = "source:intranet"
OTHER = "source:wiki"


def settings_with(**overrides: Any) -> Settings:
    """Settings for delivery logic alone (no database is opened from them)."""
    return make_settings("sqlite+aiosqlite://", **overrides)


@pytest.fixture
async def factory(database_url: str) -> AsyncIterator[SessionFactory]:
    """A migrated, empty database."""
    engine = create_engine(database_url)
    yield create_session_factory(engine)
    await engine.dispose()


async def emit_once(
    factory: SessionFactory, cause: str, *, target: str = PLATFORM, ordering_key: str | None = None
) -> int | None:
    """Emit a message for a cause, committed: its id, or None if the cause had its message already."""
    async with transaction(factory) as session:
        return await outbox.emit(
            session, kind=MessageKind.comment_held, target=target, cause=cause, payload={"type": "comment.held"},
            now=NOW, ordering_key=ordering_key,
        )  # fmt: skip


async def emit(factory: SessionFactory, cause: str, *, target: str = PLATFORM, ordering_key: str | None = None) -> int:
    """A new outbox message, committed; its id."""
    new = await emit_once(factory, cause, target=target, ordering_key=ordering_key)
    assert new is not None
    return new


async def claim(factory: SessionFactory, settings: Settings, now: datetime = NOW) -> list[delivery._Claim]:
    async with transaction(factory) as session:
        return await delivery.claim(session, settings=settings, now=now)


async def claimed_ids(factory: SessionFactory, settings: Settings, now: datetime = NOW) -> list[int]:
    return [c.message.id for c in await claim(factory, settings, now)]


async def record(
    factory: SessionFactory, one: delivery._Claim, outcome: Outcome, settings: Settings, *, now: datetime = NOW
) -> DeliveryState | None:
    async with transaction(factory) as session:
        return await delivery.record(session, one, outcome, settings=settings, now=now, rng=lambda: 0.5)


async def row(factory: SessionFactory, message_id: int) -> OutboundMessage:
    async with factory() as session:
        found = await session.get(OutboundMessage, message_id)
        assert found is not None
        return found


async def set_state(factory: SessionFactory, message_id: int, state: DeliveryState, **values: Any) -> None:
    async with transaction(factory) as session:
        await session.execute(
            sa.update(OutboundMessage).where(col(OutboundMessage.id) == message_id).values(state=state.value, **values)
        )


FAILED = Outcome(delivered=False, status=503, error="HTTP 503")
DELIVERED = Outcome(delivered=True, status=200)


# ---- backoff ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6])
def test_backoff_doubles_each_attempt_with_jitter_over_the_upper_half(attempt: int) -> None:
    settings = settings_with(outbound_backoff_seconds=2, outbound_backoff_cap_seconds=900)
    step = 2.0 * 2 ** (attempt - 1)
    assert delivery.backoff(attempt, settings=settings, retry_after=None, rng=lambda: 0.0) == step / 2
    assert delivery.backoff(attempt, settings=settings, retry_after=None, rng=lambda: 1.0) == step
    draws = random.Random(attempt)
    delays = [delivery.backoff(attempt, settings=settings, retry_after=None, rng=draws.random) for _ in range(500)]
    assert all(step / 2 <= d <= step for d in delays)
    assert max(delays) - min(delays) > step / 4  # jitter spreads retries out


def test_backoff_never_exceeds_the_cap() -> None:
    settings = settings_with(outbound_backoff_seconds=2, outbound_backoff_cap_seconds=60)
    for attempt in (6, 7, 10, 40, 100):
        assert 30 <= delivery.backoff(attempt, settings=settings, retry_after=None, rng=random.random) <= 60
    assert delivery.backoff(100, settings=settings, retry_after=None, rng=lambda: 1.0) == 60


def test_retry_after_is_a_floor_on_the_backoff_even_above_the_cap() -> None:
    settings = settings_with(outbound_backoff_seconds=2, outbound_backoff_cap_seconds=60)
    assert delivery.backoff(1, settings=settings, retry_after=2.0, rng=lambda: 0.0) == 2.0  # not 1 s
    assert delivery.backoff(1, settings=settings, retry_after=120.0, rng=lambda: 1.0) == 120.0  # beyond the cap
    # A Retry-After shorter than the backoff does not bring the retry forward.
    assert delivery.backoff(5, settings=settings, retry_after=1.0, rng=lambda: 0.0) == 16.0


# ---- Retry-After --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("2", 2.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        (email.utils.format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (email.utils.format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),  # a date past: now
        ("999999999", MAX_RETRY_AFTER_SECONDS),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(header, NOW) == seconds


# ---- what an answer means -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "external_id"),
    [
        (200, {"external_id": "wp-123"}, "wp-123"),
        (201, {"external_id": 4711}, "4711"),
        (202, {"ok": True}, None),
        (204, None, None),
        (200, {"external_id": True}, None),
        (200, {"external_id": ""}, None),
        (200, {"external_id": "x" * 201}, None),
        (200, ["wp-123"], None),
        (200, b"<html>ok</html>", None),
    ],
)
def test_a_2xx_answer_is_delivered_with_the_platforms_id_when_it_gives_one(
    status: int, body: object, external_id: str | None
) -> None:
    if body is None:
        response = httpx.Response(status)
    elif isinstance(body, bytes):
        response = httpx.Response(status, content=body)
    else:
        response = httpx.Response(status, json=body)
    outcome = judge(response, NOW)
    assert (outcome.delivered, outcome.status, outcome.external_id, outcome.permanent) == (
        True,
        status,
        external_id,
        False,
    )


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_timeouts_throttling_and_server_errors_are_retried(status: int) -> None:
    outcome = judge(httpx.Response(status, text="busy", headers={"Retry-After": "7"}), NOW)
    assert (outcome.delivered, outcome.permanent, outcome.status, outcome.retry_after) == (False, False, status, 7.0)
    assert outcome.error == f"HTTP {status}: busy"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 409, 410, 413, 422, 451])
def test_other_client_errors_are_permanent_refusals(status: int) -> None:
    outcome = judge(httpx.Response(status), NOW)
    assert (outcome.delivered, outcome.permanent, outcome.status) == (False, True, status)
    assert outcome.error == f"HTTP {status}"


# ---- claiming: ordering per comment -------------------------------------------------------------------------


@pytest.mark.parametrize("earlier", ["pending", "running", "failed"])
async def test_a_later_message_of_a_comment_waits_while_an_earlier_one_is_unfinished(
    factory: SessionFactory, earlier: str
) -> None:
    settings = make_settings("sqlite+aiosqlite://")
    hold = await emit(factory, "hold:c1", ordering_key=f"{PLATFORM}:c1")
    release = await emit(factory, "release:c1", ordering_key=f"{PLATFORM}:c1")
    if earlier == "running":
        assert await claimed_ids(factory, settings) == [hold]
    elif earlier == "failed":
        (attempt,) = await claim(factory, settings)
        assert await record(factory, attempt, FAILED, settings) == DeliveryState.failed  # retried in 1.5 s
    taken = await claimed_ids(factory, settings)
    assert taken == ([hold] if earlier == "pending" else [])  # both due, only the first of the comment goes
    assert (await row(factory, release)).state == DeliveryState.pending


@pytest.mark.parametrize("outcome", ["delivered", "dead"])
async def test_a_later_message_of_a_comment_goes_once_the_earlier_is_delivered_or_dead(
    factory: SessionFactory, outcome: str
) -> None:
    settings = make_settings("sqlite+aiosqlite://")
    hold = await emit(factory, "hold:c1", ordering_key="source:intranet:c1")
    release = await emit(factory, "release:c1", ordering_key="source:intranet:c1")
    (first,) = await claim(factory, settings)
    assert first.message.id == hold
    result = DELIVERED if outcome == "delivered" else Outcome(delivered=False, status=404, permanent=True)
    assert await record(factory, first, result, settings) == DeliveryState(outcome)
    assert await claimed_ids(factory, settings) == [release]


async def test_messages_without_an_ordering_key_do_not_wait_for_each_other(factory: SessionFactory) -> None:
    settings = make_settings("sqlite+aiosqlite://")
    ids = [await emit(factory, f"notify:{n}") for n in range(3)]
    assert await claimed_ids(factory, settings) == ids


# ---- claiming: per-target concurrency -----------------------------------------------------------------------


async def test_no_more_than_the_per_target_limit_is_in_flight_at_once(factory: SessionFactory) -> None:
    settings = make_settings("sqlite+aiosqlite://", outbound_concurrency_per_target=2, outbound_lease_seconds=60)
    platform = [await emit(factory, f"p:{n}", ordering_key=f"{PLATFORM}:c{n}") for n in range(5)]
    elsewhere = await emit(factory, "w:1", target=OTHER)
    first = await claim(factory, settings)
    assert [c.message.id for c in first] == [platform[0], platform[1], elsewhere]
    assert await claimed_ids(factory, settings) == []  # two in flight to the platform already
    assert await record(factory, first[0], DELIVERED, settings) == DeliveryState.delivered
    assert await claimed_ids(factory, settings) == [platform[2]]  # one slot came free
    # An attempt silent past its lease no longer takes a slot (and is itself claimed again).
    after_lease = NOW + timedelta(seconds=61)
    again = await claimed_ids(factory, settings, after_lease)
    assert again == [platform[1], platform[2], elsewhere]  # platform[3] waits: the two slots are taken again


# ---- fencing ------------------------------------------------------------------------------------------------


async def test_a_runner_whose_lease_ran_out_cannot_overwrite_the_newer_attempt(factory: SessionFactory) -> None:
    settings = make_settings("sqlite+aiosqlite://", outbound_lease_seconds=60)
    message_id = await emit(factory, "reply:1", ordering_key=f"{PLATFORM}:c1")
    (slow,) = await claim(factory, settings)
    assert await claim(factory, settings, NOW + timedelta(seconds=30)) == []  # the lease still holds
    (fresh,) = await claim(factory, settings, NOW + timedelta(seconds=61))
    assert (slow.attempt, fresh.attempt) == (1, 2)
    assert fresh.message.key == slow.message.key  # the same idempotency key on every attempt

    stale = Outcome(delivered=True, status=200, external_id="from-the-slow-runner")
    assert await record(factory, slow, stale, settings, now=NOW + timedelta(seconds=62)) is None
    dropped = await row(factory, message_id)
    assert (dropped.state, dropped.attempts, dropped.external_id) == ("running", 2, None)

    newer = Outcome(delivered=True, status=200, external_id="from-the-fresh-runner")
    assert await record(factory, fresh, newer, settings, now=NOW + timedelta(seconds=63)) == DeliveryState.delivered
    stored = await row(factory, message_id)
    assert (stored.state, stored.attempts, stored.external_id) == ("delivered", 2, "from-the-fresh-runner")
    assert await record(factory, slow, FAILED, settings, now=NOW + timedelta(seconds=64)) is None
    assert (await row(factory, message_id)).state == DeliveryState.delivered


# ---- recording failures -------------------------------------------------------------------------------------


async def test_a_failed_attempt_is_retried_after_its_backoff_and_never_before_retry_after(
    factory: SessionFactory,
) -> None:
    settings = make_settings("sqlite+aiosqlite://", outbound_backoff_seconds=2, outbound_max_attempts=5)
    message_id = await emit(factory, "reply:1")
    (one,) = await claim(factory, settings)
    throttled = Outcome(delivered=False, status=429, error="HTTP 429", retry_after=30.0)
    assert await record(factory, one, throttled, settings) == DeliveryState.failed
    failed = await row(factory, message_id)
    assert failed.available_at == NOW + timedelta(seconds=30)
    assert (failed.last_status, failed.last_error) == (429, "HTTP 429")
    assert await claim(factory, settings, NOW + timedelta(seconds=29)) == []
    (two,) = await claim(factory, settings, NOW + timedelta(seconds=30))
    assert two.attempt == 2


async def test_a_message_is_dead_after_the_last_attempt_or_at_once_when_refused(factory: SessionFactory) -> None:
    settings = make_settings("sqlite+aiosqlite://", outbound_max_attempts=3, outbound_backoff_seconds=1)
    retried = await emit(factory, "reply:1")
    refused = await emit(factory, "reply:2", target=OTHER)
    now, states = NOW, []
    for _ in range(3):
        claims = {c.message.id: c for c in await claim(factory, settings, now)}
        if refused in claims:
            not_found = Outcome(delivered=False, status=404, error="HTTP 404", permanent=True)
            assert await record(factory, claims[refused], not_found, settings, now=now) == DeliveryState.dead
        states.append(await record(factory, claims[retried], FAILED, settings, now=now))
        now += timedelta(minutes=5)
    assert states == [DeliveryState.failed, DeliveryState.failed, DeliveryState.dead]
    assert [((r := await row(factory, i)).state, r.attempts) for i in (retried, refused)] == [("dead", 3), ("dead", 1)]
    assert await claim(factory, settings, now + timedelta(hours=1)) == []


# ---- one cause, one message, one key ------------------------------------------------------------------------


async def test_one_cause_makes_one_message_with_one_stable_key(factory: SessionFactory) -> None:
    first = await emit(factory, "reply:7f3c")
    again = await emit_once(factory, "reply:7f3c")  # the cause handled twice (a retried request, a re-run job)
    other = await emit(factory, "reply:8a1d")
    assert again is None
    async with factory() as session:
        rows = (await session.execute(sa.select(OutboundMessage).order_by(col(OutboundMessage.id)))).scalars().all()
    assert [(r.id, r.cause, r.key) for r in rows] == [
        (first, "reply:7f3c", outbox.key_for("reply:7f3c")),
        (other, "reply:8a1d", outbox.key_for("reply:8a1d")),
    ]
    assert outbox.key_for("reply:7f3c") == outbox.key_for("reply:7f3c") != outbox.key_for("reply:8a1d")
    assert rows[0].key.startswith("msg_")
    assert len(rows[0].key) == len("msg_") + 32
