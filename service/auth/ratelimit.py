"""Rate limits per API key and per webhook source: a token bucket in memory, a sliding window in Redis.

Embedded deployment (one process, no Redis): a token bucket per scope in process memory. A scope holds at most
`limit` tokens and regains `limit` per minute, so a quiet client may burst up to a minute's allowance at once.

Scale deployment (`redis_url` set): a sliding-window counter in Redis, shared by every API replica. Each scope
has one counter per fixed minute; a request is allowed while `previous minute x (share of it still inside the
last 60 s) + this minute` stays below the limit (Cloudflare's approximation: one INCR, no per-request entries).
The check-and-count runs as one Lua script on Redis's own clock, so replicas with skewed clocks agree. Refused
requests are not counted. If Redis cannot be reached the limiter falls back to this process's token buckets for a
few seconds (and logs it) instead of failing requests: a Redis outage must not take the API down with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from service.errors import RateLimited
from service.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

WINDOW_SECONDS: Final = 60.0  # every limit is "per minute"
MAX_BUCKETS: Final = 100_000  # in-memory scopes kept; source slugs in URLs are caller-chosen, so this is bounded
MAX_SCOPE_LENGTH: Final = 120
REDIS_PREFIX: Final = "switchboard:ratelimit"
REDIS_TIMEOUT_SECONDS: Final = 0.5
REDIS_RETRY_SECONDS: Final = 5.0  # after a Redis failure, use the in-memory buckets this long before trying again


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether one request may go ahead; if not, how long until one would (seconds)."""

    allowed: bool
    retry_after: float = 0.0

    @property
    def retry_after_header(self) -> int:
        """Retry-After in whole seconds, never 0 for a refusal."""
        return max(1, math.ceil(self.retry_after))


class RateLimiter(Protocol):
    """Counts a request against `scope`'s allowance of `limit` per minute."""

    async def hit(self, scope: str, limit: int) -> Decision:
        """Count one request (unless refused) and say whether it may go ahead; `limit <= 0` means no limit."""
        ...

    async def aclose(self) -> None:
        """Release connections."""
        ...


class MemoryLimiter:
    """Token buckets in process memory (the embedded deployment, and the fallback when Redis is away)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_buckets: int = MAX_BUCKETS) -> None:
        self._clock = clock
        self._max = max_buckets
        # scope -> (tokens, last refill time, limit); dict order = least recently used first
        self._buckets: dict[str, tuple[float, float, int]] = {}

    def take(self, scope: str, limit: int) -> Decision:
        """Synchronous `hit`: nothing awaits in between, so concurrent requests cannot both take the last token."""
        if limit <= 0:
            return Decision(allowed=True)
        now = self._clock()
        rate = limit / WINDOW_SECONDS
        entry = self._buckets.pop(scope, None)
        if entry is None:
            tokens = float(limit)
            self._make_room(now)
        else:
            tokens, updated, _ = entry
            tokens = min(float(limit), tokens + (now - updated) * rate)
        if tokens >= 1:
            self._buckets[scope] = (tokens - 1, now, limit)
            return Decision(allowed=True)
        self._buckets[scope] = (tokens, now, limit)
        return Decision(allowed=False, retry_after=(1 - tokens) / rate)

    async def hit(self, scope: str, limit: int) -> Decision:
        """Count one request against the scope's bucket."""
        return self.take(scope, limit)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max:
            return
        # Full buckets carry no state (a new one starts full), so they go first; then the least recently used.
        for scope, (tokens, updated, limit) in list(self._buckets.items()):
            if tokens + (now - updated) * limit / WINDOW_SECONDS >= limit:
                del self._buckets[scope]
        target = self._max * 9 // 10
        while len(self._buckets) > target:
            del self._buckets[next(iter(self._buckets))]


# KEYS[1]: the scope's key; the per-minute counters are KEYS[1]:<minute number>. ARGV: limit, window (ms).
# Returns {allowed (0/1), previous minute's count, this minute's count, ms elapsed in this minute}.
_SLIDING_WINDOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local current = math.floor(now / window)
local elapsed = now - current * window
local ckey = KEYS[1] .. ':' .. current
local curr = tonumber(redis.call('GET', ckey) or '0')
local prev = tonumber(redis.call('GET', KEYS[1] .. ':' .. (current - 1)) or '0')
if prev * (window - elapsed) / window + curr + 1 > limit then
  return {0, prev, curr, elapsed}
end
redis.call('INCR', ckey)
redis.call('PEXPIRE', ckey, window * 2)
return {1, prev, curr + 1, elapsed}
"""


def sliding_window_wait(*, limit: int, previous: int, current: int, elapsed: float, window: float) -> float:
    """How long after `elapsed` (into the current window) the sliding-window estimate admits one more request."""
    if current + 1 <= limit:
        if previous == 0:
            return 0.0
        # previous * (window - t) / window + current + 1 <= limit
        at = window * (1 - (limit - current - 1) / previous)
        if at < window:
            return max(0.0, at - elapsed)
    # Not in this window: in the next one, this window's count is the "previous" one and decays from there.
    at_next = max(0.0, window * (1 - (limit - 1) / current)) if current else 0.0
    return window - elapsed + at_next


class RedisLimiter:
    """A sliding-window counter in Redis, shared by every API replica; in-memory buckets while Redis is away."""

    def __init__(self, redis_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self._script: AsyncScript = self._redis.register_script(_SLIDING_WINDOW)
        self._clock = clock
        self._fallback = MemoryLimiter(clock=clock)
        self._redis_down_until = 0.0

    async def hit(self, scope: str, limit: int) -> Decision:
        """Count one request in Redis (or, while Redis is unreachable, in this process)."""
        if limit <= 0:
            return Decision(allowed=True)
        if self._clock() < self._redis_down_until:
            return self._fallback.take(scope, limit)
        from redis.exceptions import RedisError

        window_ms = int(WINDOW_SECONDS * 1000)
        # The braces are a Redis Cluster hash tag: both minute counters of a scope live on the same node.
        key = f"{REDIS_PREFIX}:{{{scope}}}"
        try:
            allowed, previous, current, elapsed = await self._script(keys=[key], args=[limit, window_ms])
        except (RedisError, OSError) as exc:
            log.warning(
                "rate limits: Redis unreachable (%s); limiting per process for %.0f s", exc, REDIS_RETRY_SECONDS
            )
            self._redis_down_until = self._clock() + REDIS_RETRY_SECONDS
            return self._fallback.take(scope, limit)
        if allowed:
            return Decision(allowed=True)
        wait_ms = sliding_window_wait(
            limit=limit, previous=int(previous), current=int(current), elapsed=float(elapsed), window=window_ms
        )
        return Decision(allowed=False, retry_after=wait_ms / 1000)

    async def aclose(self) -> None:
        """Close the Redis connection pool."""
        await self._redis.aclose()


def build(settings: Settings) -> RateLimiter:
    """The limiter for this deployment: Redis-backed when `redis_url` is set, else in process memory."""
    if settings.redis_url:
        return RedisLimiter(settings.redis_url)
    return MemoryLimiter()


async def enforce(limiter: RateLimiter, scope: str, limit: int, *, who: str) -> None:
    """Count one request by `scope`; raise RateLimited (429 with Retry-After) if it is over its limit."""
    decision = await limiter.hit(scope[:MAX_SCOPE_LENGTH], limit)
    if not decision.allowed:
        seconds = decision.retry_after_header
        raise RateLimited(f"{who} may make {limit} requests per minute; retry in {seconds} s.", retry_after=seconds)
