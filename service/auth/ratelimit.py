"""Rate limits per API key and per webhook source: one token bucket, kept in process memory or in Redis.

Each scope (an API key, a source slug) has a bucket of `limit` tokens that refills at `limit` per minute; a request
takes one token or is refused with the time until the next one (Retry-After). So a quiet client may burst up to a
minute's allowance at once, and a busy one gets a steady `limit` per minute. Refused requests take nothing.

The bucket is kept as one number, the moment it will be full again (GCRA, the generic cell rate algorithm): a
request fits while that moment, plus one token's worth of time, is at most a minute away. The same arithmetic runs
in both places:

- embedded deployment (no Redis): a dict in process memory, bounded to `MAX_BUCKETS` scopes;
- scale deployment (`redis_url` set): one Redis key per scope, checked and updated by one Lua script on Redis's
  own clock, so every API replica shares the bucket and replicas with skewed clocks agree. If Redis cannot be
  reached the limiter uses this process's buckets for a few seconds (and logs it) instead of failing requests: a
  Redis outage must not take the API down with it.
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
TOLERANCE_SECONDS: Final = 0.001  # a request that fits within a millisecond fits (absorbs float rounding)
MAX_BUCKETS: Final = 100_000  # in-memory scopes kept; source slugs in URLs are caller-chosen, so this is bounded
MAX_SCOPE_LENGTH: Final = 120
REDIS_PREFIX: Final = "switchboard:ratelimit:bucket"
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


def take_token(full_at: float | None, *, now: float, limit: int) -> tuple[float, float]:
    """One request against a bucket that is full again at `full_at` (None: never used, so full now).

    Returns (when the bucket is full again afterwards, seconds to wait): a wait of 0 means the request took a
    token; otherwise nothing was taken and `full_at` comes back unchanged. `_BUCKET_SCRIPT` below is this in Lua.
    """
    interval = WINDOW_SECONDS / limit  # the time one token takes to come back
    start = now if full_at is None else max(full_at, now)
    wait = start + interval - WINDOW_SECONDS - now
    if wait > TOLERANCE_SECONDS:
        return start, wait
    return start + interval, 0.0


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
        # scope -> when its bucket is full again; dict order = least recently used first
        self._buckets: dict[str, float] = {}

    def take(self, scope: str, limit: int) -> Decision:
        """Synchronous `hit`: nothing awaits in between, so concurrent requests cannot both take the last token."""
        if limit <= 0:
            return Decision(allowed=True)
        now = self._clock()
        full_at = self._buckets.pop(scope, None)
        if full_at is None:
            self._make_room(now)
        self._buckets[scope], wait = take_token(full_at, now=now, limit=limit)
        return Decision(allowed=wait == 0, retry_after=wait)

    async def hit(self, scope: str, limit: int) -> Decision:
        """Count one request against the scope's bucket."""
        return self.take(scope, limit)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self._max:
            return
        # Full buckets carry no state (a new one starts full), so they go first; then the least recently used.
        for scope, full_at in list(self._buckets.items()):
            if full_at <= now:
                del self._buckets[scope]
        target = self._max * 9 // 10
        while len(self._buckets) > target:
            del self._buckets[next(iter(self._buckets))]


# `take_token` in Lua, in milliseconds on Redis's clock. KEYS[1]: the scope's bucket (when it is full again, ms).
# ARGV: limit, window (ms), tolerance (ms). Returns 0 if the request took a token, else the wait in whole µs.
# The key expires when the bucket is full, so an idle scope holds nothing.
_BUCKET_SCRIPT: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local interval = window / limit
local start = math.max(tonumber(redis.call('GET', KEYS[1]) or '') or now, now)
local wait = start + interval - window - now
if wait > tonumber(ARGV[3]) then
  return math.ceil(wait * 1000)
end
local full_at = start + interval
redis.call('SET', KEYS[1], string.format('%.17g', full_at), 'PX', math.max(1, math.ceil(full_at - now)))
return 0
"""


class RedisLimiter:
    """Token buckets in Redis, shared by every API replica; in-memory buckets while Redis is away."""

    def __init__(self, redis_url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(
            redis_url, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
        self._script: AsyncScript = self._redis.register_script(_BUCKET_SCRIPT)
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

        args = [limit, int(WINDOW_SECONDS * 1000), TOLERANCE_SECONDS * 1000]
        try:
            wait_us = await self._script(keys=[f"{REDIS_PREFIX}:{scope}"], args=args)
        except (RedisError, OSError) as exc:
            log.warning(
                "rate limits: Redis unreachable (%s); limiting per process for %.0f s", exc, REDIS_RETRY_SECONDS
            )
            self._redis_down_until = self._clock() + REDIS_RETRY_SECONDS
            return self._fallback.take(scope, limit)
        wait = int(wait_us) / 1_000_000
        return Decision(allowed=wait == 0, retry_after=wait)

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
