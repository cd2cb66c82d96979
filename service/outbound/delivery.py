"""Delivering the outbox: claim due messages, send them, record what happened. At least once, one effect.

- **Claim** (one short transaction, serialised between runners: `pg_advisory_xact_lock` on PostgreSQL, BEGIN
  IMMEDIATE on SQLite): due rows (pending, failed whose delay ran out, or running whose runner went silent past the
  lease), in id order, keeping **ordering per comment** (a message waits while an earlier one with its
  `ordering_key` is unfinished: a release never overtakes its hold) and the **per-target concurrency** limit.
- **Send** outside any transaction, concurrently, after the **per-target rate limit** (the token bucket of
  `service.auth.ratelimit`: a refused message is put back with the bucket's wait, the attempt not counted).
- **Record**, fenced by the attempt number (a runner whose lease ran out cannot overwrite a newer attempt):
  delivered (the receiver's id for what we sent), failed (next attempt after exponential backoff with jitter, capped;
  never before a Retry-After), or dead (after `outbound_max_attempts`, or at once on a permanent refusal). A
  reply's own state follows its message, and a delivered reply's time is the item's first response.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from service import metrics
from service.connectors.http import Endpoint, Message, Outcome
from service.database import SessionFactory, dialect_name, transaction
from service.models import Comment, QueueItem, Reply, ReplyDelivery, changes
from service.outbound import endpoints
from service.outbound.tables import UNFINISHED_STATES, DeliveryState, MessageKind, OutboundMessage
from service.settings import Settings

log = logging.getLogger(__name__)

CLAIM_LOCK: Final = 0x5B0D_0C1A  # pg_advisory_xact_lock key of the claim step
CLAIM_BATCH: Final = 64
MAX_ERROR_LENGTH: Final = 1000


class RateDecision(Protocol):
    """Whether a rate limit lets one more delivery go, and if not for how long (`service.auth.ratelimit.Decision`)."""

    @property
    def allowed(self) -> bool: ...

    @property
    def retry_after(self) -> float: ...


class Limiter(Protocol):
    """A token bucket per scope (`service.auth.ratelimit`'s limiters: in memory, or shared through Redis)."""

    async def hit(self, scope: str, limit: int) -> RateDecision: ...


@dataclass(slots=True)
class Report:
    """What one `deliver` call did; `follow_ups` are (message id, seconds from now) worth handing out again."""

    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    follow_ups: list[tuple[int, float]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Claim:
    message: Message
    target: str
    attempt: int
    ordering_key: str | None
    endpoint: Endpoint


_CLAIMED = (
    col(OutboundMessage.id), col(OutboundMessage.key), col(OutboundMessage.kind), col(OutboundMessage.target),
    col(OutboundMessage.payload), col(OutboundMessage.attempts), col(OutboundMessage.ordering_key),
)  # fmt: skip


def backoff(attempt: int, *, settings: Settings, retry_after: float | None, rng: Callable[[], float]) -> float:
    """Seconds before attempt `attempt + 1`: exponential from `outbound_backoff_seconds`, capped, with jitter over
    its upper half (so retries spread out but never come sooner than half the step); at least a Retry-After."""
    ceiling = min(settings.outbound_backoff_cap_seconds, settings.outbound_backoff_seconds * 2.0 ** (attempt - 1))
    delay = ceiling / 2 + rng() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, retry_after)
    return float(delay)


def _due(now: datetime, lease: timedelta) -> sa.ColumnElement[bool]:
    return sa.or_(
        sa.and_(
            col(OutboundMessage.state).in_([DeliveryState.pending.value, DeliveryState.failed.value]),
            col(OutboundMessage.available_at) <= now,
        ),
        sa.and_(
            col(OutboundMessage.state) == DeliveryState.running.value, col(OutboundMessage.started_at) < now - lease
        ),
    )


async def claim(
    session: AsyncSession,
    *,
    settings: Settings,
    now: datetime,
    ids: Sequence[int] | None = None,
    limit: int = CLAIM_BATCH,
) -> list[_Claim]:
    """Take due messages (of `ids`, or any), honouring ordering per comment and per-target concurrency."""
    if dialect_name(session) == "postgresql":
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock(CLAIM_LOCK)))
    lease = timedelta(seconds=settings.outbound_lease_seconds)
    stmt = sa.select(col(OutboundMessage.id), col(OutboundMessage.target), col(OutboundMessage.ordering_key)).where(
        _due(now, lease)
    )
    if ids is not None:
        if not ids:
            return []
        stmt = stmt.where(col(OutboundMessage.id).in_(list(ids)))
    candidates = (await session.execute(stmt.order_by(col(OutboundMessage.id)).limit(limit * 4))).all()
    if not candidates:
        return []
    keys = {c.ordering_key for c in candidates if c.ordering_key is not None}
    heads = await _heads(session, keys)
    targets = {c.target for c in candidates}
    running = await session.execute(
        sa.select(col(OutboundMessage.target), sa.func.count())
        .where(
            col(OutboundMessage.target).in_(targets),
            col(OutboundMessage.state) == DeliveryState.running.value,
            col(OutboundMessage.started_at) >= now - lease,
        )
        .group_by(col(OutboundMessage.target))
    )
    in_flight: dict[str, int] = {row[0]: int(row[1]) for row in running.all()}
    chosen: list[int] = []
    for candidate in candidates:
        if candidate.ordering_key is not None and heads.get(candidate.ordering_key) != candidate.id:
            continue  # an earlier message of this comment is not finished
        if in_flight.get(candidate.target, 0) >= settings.outbound_concurrency_per_target:
            continue
        in_flight[candidate.target] = in_flight.get(candidate.target, 0) + 1
        chosen.append(candidate.id)
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    taken = (
        await session.execute(
            sa.update(OutboundMessage)
            .where(col(OutboundMessage.id).in_(chosen), _due(now, lease))
            .values(
                state=DeliveryState.running.value,
                attempts=col(OutboundMessage.attempts) + 1,
                started_at=now,
                last_attempt_at=now,
                updated_at=now,
            )
            .returning(*_CLAIMED)
        )
    ).all()
    endpoint_of: dict[str, Endpoint] = {}
    claims = []
    for row in sorted(taken, key=lambda r: r.id):
        if row.target not in endpoint_of:
            endpoint_of[row.target] = await endpoints.resolve(
                session, row.target, send_timeout=settings.outbound_timeout_seconds
            )
        message = Message(id=row.id, key=row.key, kind=row.kind, payload=row.payload)
        claims.append(_Claim(message, row.target, row.attempts, row.ordering_key, endpoint_of[row.target]))
    return claims


async def deliver(
    factory: SessionFactory,
    *,
    settings: Settings,
    clock: Callable[[], datetime],
    client: httpx.AsyncClient,
    limiter: Limiter,
    ids: Sequence[int] | None = None,
    rng: Callable[[], float] = random.random,
) -> Report:
    """Claim and send one batch of due messages (of `ids`, or any); idempotent and safe to run concurrently."""
    report = Report()
    async with transaction(factory) as session:
        claims = await claim(session, settings=settings, now=clock(), ids=ids)
    report.claimed = len(claims)
    if not claims:
        return report
    outcomes = await asyncio.gather(*(_attempt(one, settings, clock, client, limiter) for one in claims))
    # One transaction records the whole batch: a commit per message would make the database the bottleneck.
    async with transaction(factory) as session:
        now = clock()
        states: list[DeliveryState | None] = []
        for one, outcome in zip(claims, outcomes, strict=True):
            if isinstance(outcome, float):  # held back by the rate limit: not an attempt
                await _defer(session, one, seconds=outcome, now=now)
                report.deferred += 1
                report.follow_ups.append((one.message.id, outcome))
                states.append(None)
            else:
                states.append(await record(session, one, outcome, settings=settings, now=now, rng=rng))
    delivered_keys = set()
    for one, outcome, state in zip(claims, outcomes, states, strict=True):
        attempt = "deferred" if isinstance(outcome, float) else state.value if state is not None else "overtaken"
        metrics.OUTBOUND_ATTEMPTS.labels(kind=one.message.kind, outcome=attempt).inc()
        if state == DeliveryState.delivered:
            report.delivered += 1
            if one.ordering_key is not None:
                delivered_keys.add(one.ordering_key)
        elif state == DeliveryState.dead:
            report.dead += 1
            error = outcome.error if isinstance(outcome, Outcome) else None
            log.error("outbound message %d to %s is dead: %s", one.message.id, one.target, error)
        elif state == DeliveryState.failed:
            report.failed += 1
    if delivered_keys:
        report.follow_ups.extend((i, 0.0) for i in await _next_in_order(factory, delivered_keys))
    return report


async def _attempt(
    one: _Claim, settings: Settings, clock: Callable[[], datetime], client: httpx.AsyncClient, limiter: Limiter
) -> Outcome | float:
    """Send one claimed message: its outcome, or the seconds to wait when the target's rate limit says not yet."""
    decision = await limiter.hit(f"outbound:{one.target}", settings.outbound_rate_per_target_per_minute)
    if not decision.allowed:
        return float(decision.retry_after)
    try:
        return await asyncio.wait_for(
            one.endpoint.send(one.message, client=client, now=clock()), timeout=settings.outbound_timeout_seconds * 2
        )
    except TimeoutError:
        return Outcome(delivered=False, error=f"no answer within {settings.outbound_timeout_seconds * 2:.0f} s")
    except Exception as exc:  # a bug in an endpoint must not lose the message: it is retried like any failure
        log.exception("outbound message %d: the %s endpoint failed", one.message.id, one.target)
        return Outcome(delivered=False, error=f"{type(exc).__name__} in Switchboard's sender")


async def _defer(session: AsyncSession, one: _Claim, *, seconds: float, now: datetime) -> None:
    """Give a claim back untried (rate limit): the attempt is not counted."""
    await session.execute(
        sa.update(OutboundMessage)
        .where(
            col(OutboundMessage.id) == one.message.id,
            col(OutboundMessage.state) == DeliveryState.running.value,
            col(OutboundMessage.attempts) == one.attempt,
        )
        .values(
            state=sa.case(
                (col(OutboundMessage.attempts) <= 1, DeliveryState.pending.value), else_=DeliveryState.failed.value
            ),
            attempts=col(OutboundMessage.attempts) - 1,
            available_at=now + timedelta(seconds=seconds),
            started_at=None,
            updated_at=now,
        )
    )


async def record(
    session: AsyncSession,
    one: _Claim,
    outcome: Outcome,
    *,
    settings: Settings,
    now: datetime,
    rng: Callable[[], float],
) -> DeliveryState | None:
    """Store an attempt's outcome if this runner still holds the claim; the message's new state (None: fenced)."""
    row = await session.get(OutboundMessage, one.message.id, with_for_update=dialect_name(session) == "postgresql")
    if row is None or row.state != DeliveryState.running.value or row.attempts != one.attempt:
        log.info("outbound message %d: attempt %d was overtaken; its outcome is dropped", one.message.id, one.attempt)
        return None
    row.last_status = outcome.status
    row.updated_at = now
    row.started_at = None
    if outcome.delivered:
        row.state = DeliveryState.delivered.value
        row.delivered_at = now
        row.external_id = outcome.external_id
        row.last_error = None
    else:
        row.last_error = (outcome.error or "failed")[:MAX_ERROR_LENGTH]
        if outcome.permanent or row.attempts >= settings.outbound_max_attempts:
            row.state = DeliveryState.dead.value
        else:
            row.state = DeliveryState.failed.value
            delay = backoff(row.attempts, settings=settings, retry_after=outcome.retry_after, rng=rng)
            row.available_at = now + timedelta(seconds=delay)
    session.add(row)
    if row.kind == MessageKind.reply_created.value and row.reply_id is not None:
        await _reply_follows(session, row, now=now)
    await session.flush()
    return DeliveryState(row.state)


async def _reply_follows(session: AsyncSession, row: OutboundMessage, *, now: datetime) -> None:
    """A reply's state follows its message; once delivered, it is the item's first response (if none was earlier),
    and a comment the platform already echoed with the reply's id is marked as that echo."""
    reply = await session.get(Reply, row.reply_id)
    if reply is None:
        return
    if row.state == DeliveryState.delivered.value:
        reply.delivery_state = ReplyDelivery.delivered.value
        reply.delivered_at = row.delivered_at
        reply.external_id = row.external_id
        reply.last_error = None
        item = await session.get(QueueItem, reply.item_id)
        if item is not None and (item.first_response_at is None or item.first_response_at > now):
            item.first_response_at = now
            session.add(item)
        if row.external_id is not None:
            echoed = await session.execute(
                sa.update(Comment)
                .where(
                    col(Comment.external_id) == row.external_id,
                    col(Comment.source_id)
                    == sa.select(col(QueueItem.source_id)).where(col(QueueItem.id) == reply.item_id).scalar_subquery(),
                    col(Comment.echo_of_reply_id).is_(None),
                )
                .values(echo_of_reply_id=reply.id)
                .returning(col(Comment.id))
            )
            changes.touch(session, comments=echoed.scalars())  # written outside the ORM
    else:
        reply.delivery_state = (
            ReplyDelivery.dead.value if row.state == DeliveryState.dead.value else ReplyDelivery.failed.value
        )
        reply.last_error = row.last_error
    session.add(reply)


async def _next_in_order(factory: SessionFactory, ordering_keys: set[str]) -> list[int]:
    """The next unfinished message of each comment whose earlier message was just delivered (now free to go)."""
    async with factory() as session:
        return list((await _heads(session, ordering_keys)).values())


async def _heads(session: AsyncSession, ordering_keys: set[str]) -> dict[str, int]:
    """The first unfinished message of each ordering key (the only one of its comment that may go now)."""
    if not ordering_keys:
        return {}
    rows = await session.execute(
        sa.select(col(OutboundMessage.ordering_key), sa.func.min(col(OutboundMessage.id)))
        .where(
            col(OutboundMessage.ordering_key).in_(ordering_keys),
            col(OutboundMessage.state).in_([s.value for s in UNFINISHED_STATES]),
        )
        .group_by(col(OutboundMessage.ordering_key))
    )
    return {row[0]: row[1] for row in rows.all() if row[0] is not None and row[1] is not None}


async def busy(factory: SessionFactory, *, settings: Settings, now: datetime) -> bool:
    """Whether any message is being sent, or is due and free to go (not held back by an earlier one of its comment)."""
    async with factory() as session:
        in_flight = await session.execute(
            sa.select(col(OutboundMessage.id)).where(col(OutboundMessage.state) == DeliveryState.running.value).limit(1)
        )
        if in_flight.first() is not None:
            return True
        due = await session.execute(
            sa.select(col(OutboundMessage.id), col(OutboundMessage.ordering_key))
            .where(_due(now, timedelta(seconds=settings.outbound_lease_seconds)))
            .order_by(col(OutboundMessage.id))
            .limit(200)
        )
        rows = [(row[0], row[1]) for row in due.all()]
        if any(key is None for _, key in rows):
            return True
        first = set((await _heads(session, {key for _, key in rows if key is not None})).values())
    return any(message_id in first for message_id, _ in rows)


async def prune(factory: SessionFactory, *, settings: Settings, now: datetime) -> int:
    """Forget delivered messages older than the retention period (dead ones stay for admins); returns how many.

    By `available_at` (a delivered message's is at or before its delivery), which the (state, available_at) index
    serves.
    """
    cutoff = now - timedelta(days=settings.outbound_retention_days)
    async with transaction(factory) as session:
        result = await session.execute(
            sa.delete(OutboundMessage).where(
                col(OutboundMessage.state) == DeliveryState.delivered.value, col(OutboundMessage.available_at) < cutoff
            )
        )
    return int(getattr(result, "rowcount", 0) or 0)


def client(settings: Settings) -> httpx.AsyncClient:
    """The HTTP client outbound deliveries use (no redirects: a callback that moves is a configuration error)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.outbound_timeout_seconds),
        follow_redirects=False,
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
    )
