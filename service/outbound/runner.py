"""The embedded deployment's delivery loop (the scaled one runs `delivery.deliver` in arq jobs instead).

One task in the API process: it wakes when a transaction that wrote outbox rows commits (`wake`), and every
`outbound_poll_seconds` (retries whose delay ran out, notifications whose batching window closed), and then
delivers until nothing is due. Deliveries are sent concurrently within a batch; the batch waits for its slowest
target (bounded by `outbound_timeout_seconds`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import httpx

from service.database import SessionFactory
from service.outbound import delivery
from service.outbound.delivery import Limiter
from service.settings import Settings

log = logging.getLogger(__name__)
CLOSE_GRACE_SECONDS = 10.0  # how long closing waits for a delivery round under way

Periodic = Callable[[datetime], Awaitable[object]]


class InlineRunner:
    """Delivers the outbox from inside the API process."""

    def __init__(
        self,
        factory: SessionFactory,
        settings: Settings,
        limiter: Limiter,
        *,
        clock: Callable[[], datetime],
        periodic: Sequence[Periodic] = (),
    ) -> None:
        self._factory = factory
        self._settings = settings
        self._limiter = limiter
        self._clock = clock
        self._periodic = list(periodic)  # e.g. the notifications' batcher, run before each round
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._round: asyncio.Future[int] | None = None  # the round under way
        self._client: httpx.AsyncClient | None = None

    def wake(self, ids: Sequence[int]) -> None:  # noqa: ARG002  (the loop claims whatever is due)
        """New messages were committed: deliver now rather than at the next poll."""
        self._wakeup.set()

    async def start(self) -> None:
        """Start the loop (it first delivers whatever an earlier run left)."""
        self._client = delivery.client(self._settings)
        self._task = asyncio.create_task(self._loop(), name="switchboard-outbound")

    async def close(self) -> None:
        """Stop the loop; undelivered rows stay in the table for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._round is not None and not self._round.done():
            await asyncio.wait({self._round}, timeout=CLOSE_GRACE_SECONDS)
            self._round.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._round
        self._round = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def running(self) -> bool:
        """True while the loop runs."""
        return self._task is not None and not self._task.done()

    async def run_once(self) -> int:
        """One round: the periodic steps, then deliver until nothing is due. Returns the messages claimed."""
        assert self._client is not None
        now = self._clock()
        for step in self._periodic:
            try:
                await step(now)
            except Exception:
                log.exception("outbound: a periodic step failed")
        claimed = 0
        while True:
            report = await delivery.deliver(
                self._factory, settings=self._settings, clock=self._clock, client=self._client, limiter=self._limiter
            )
            claimed += report.claimed
            if report.claimed == 0 or report.claimed == report.deferred:
                return claimed

    async def settle(self, seconds: float = 30.0) -> None:
        """Run rounds until nothing is due or in flight at the clock's time, counting what the background loop is
        sending (tests use it after moving their clock)."""
        async with asyncio.timeout(seconds):
            while True:
                await self.run_once()
                if not await delivery.busy(self._factory, settings=self._settings, now=self._clock()):
                    return
                await asyncio.sleep(0.02)

    async def _loop(self) -> None:
        while True:
            try:
                # Shielded: closing lets a round under way finish (see `close`) rather than cut a transaction off.
                self._round = asyncio.ensure_future(self.run_once())
                await asyncio.shield(self._round)
            except Exception:
                log.exception("outbound delivery round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._settings.outbound_poll_seconds)
            self._wakeup.clear()
