"""Queue backends. The job row is the source of truth; a backend only gets ids to work on sooner.

- InlineBackend: the embedded default. An asyncio consumer in the API process batches ids into
  processing.process_jobs; a timer runs the reconciler.
- ArqBackend: ids go to Redis; `switchboard worker` processes (workers/) run them and the reconciler cron.

`enqueue` never raises: when the backend is unreachable the ids stay pending in the database and the
reconciler hands them out again later. That is what lets a webhook be acknowledged while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from service.database import SessionFactory
from service.jobs import processing
from service.notifications import batching
from service.outbound import delivery
from service.outbound.runner import InlineRunner
from service.queue import sla
from service.routing import simulation
from service.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
CLOSE_GRACE_SECONDS = 10.0  # how long closing waits for a batch or sweep under way

PROCESS_JOB_FUNCTION = "process_comment_jobs"
SIMULATION_JOB_FUNCTION = "run_simulation"
DELIVER_JOB_FUNCTION = "deliver_outbound"
_OUTAGE_BACKOFF_SECONDS = 5.0


class JobBackend(Protocol):
    """What the API needs from a queue backend."""

    async def start(self) -> None: ...

    async def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None: ...

    async def ping(self) -> None: ...

    async def run_simulation(self, simulation_id: uuid.UUID) -> None: ...

    def deliver_soon(self, message_ids: Sequence[int]) -> None:
        """Outbox rows were committed: have them delivered now (never raises, never blocks; the sweep is the net)."""
        ...

    async def close(self) -> None: ...


class InlineBackend:
    """In-process backend: one consumer task batches job ids; a timer reconciles with the job table.

    It is the entry point of its jobs and sweeps: each reads `clock` (the app's) and passes the time down.
    """

    def __init__(
        self,
        factory: SessionFactory,
        settings: Settings,
        run_batch: Callable[[Sequence[uuid.UUID]], Awaitable[Any]],
        *,
        clock: Callable[[], datetime],
        outbound: InlineRunner | None = None,
    ) -> None:
        self._factory = factory
        self._settings = settings
        self._run_batch = run_batch
        self._clock = clock
        self._outbound = outbound
        self._queue: asyncio.Queue[uuid.UUID] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._simulations: set[asyncio.Task[None]] = set()
        self._inflight: set[asyncio.Future[Any]] = set()

    async def _finishing(self, work: Awaitable[T]) -> T:
        """Run one batch or sweep so that `close` lets it finish (for up to CLOSE_GRACE_SECONDS) instead of cutting
        its transaction off in the middle (which, on SQLite, would leave the file locked until the process ends)."""
        task = asyncio.ensure_future(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def start(self) -> None:
        """Start the consumer and the reconciler (which first picks up work left by an earlier run)."""
        self._queue = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._consume(), name="switchboard-inline-consumer"),
            asyncio.create_task(self._reconcile_forever(), name="switchboard-inline-reconciler"),
            asyncio.create_task(self._sla_forever(), name="switchboard-inline-sla-clock"),
        ]
        if self._outbound is not None:
            await self._outbound.start()

    def deliver_soon(self, message_ids: Sequence[int]) -> None:
        """Wake the in-process delivery loop."""
        if self._outbound is not None:
            self._outbound.wake(message_ids)

    async def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None:
        """Hand ids to the consumer (dropped if the queue is not running: the reconciler has them)."""
        if self._queue is None:
            return
        for job_id in job_ids:
            self._queue.put_nowait(job_id)

    async def run_simulation(self, simulation_id: uuid.UUID) -> None:
        """Run a stored simulation in a task of this process (the reconciler restarts it if the process dies)."""
        task = asyncio.create_task(
            simulation.run(self._factory, simulation_id, settings=self._settings, clock=self._clock),
            name=f"simulation-{simulation_id}",
        )
        self._simulations.add(task)
        task.add_done_callback(self._simulations.discard)

    async def ping(self) -> None:
        """The inline backend is up while its tasks are."""
        if not self._tasks or any(t.done() for t in self._tasks):
            raise RuntimeError("the in-process job consumer is not running")
        if self._outbound is not None and not self._outbound.running():
            raise RuntimeError("the in-process delivery loop is not running")

    async def close(self) -> None:
        """Stop the tasks, letting a batch or sweep under way finish first (briefly); unfinished rows stay pending
        or running and are picked up on the next start."""
        for task in [*self._tasks, *self._simulations]:
            task.cancel()
        for task in [*self._tasks, *self._simulations]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=CLOSE_GRACE_SECONDS)
        for work in set(self._inflight):
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
        self._tasks = []
        self._queue = None
        if self._outbound is not None:
            await self._outbound.close()

    async def drain(self, seconds: float = 60.0) -> None:
        """Wait until every queued id has been processed (tests and the benchmark use this)."""
        assert self._queue is not None
        await asyncio.wait_for(self._queue.join(), seconds)

    async def _consume(self) -> None:
        assert self._queue is not None
        queue = self._queue
        while True:
            batch = [await queue.get()]
            while len(batch) < self._settings.inline_batch_size and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self._finishing(self._run_batch(list(dict.fromkeys(batch))))
            except Exception:  # the rows stay claimed and are handed out again after the lease
                log.exception("inline batch of %d jobs failed", len(batch))
            finally:
                for _ in batch:
                    queue.task_done()

    async def _reconcile_forever(self) -> None:
        first = True  # what an earlier process had queued in memory is gone: hand out all pending rows
        while True:
            try:
                now = self._clock()
                await self._finishing(
                    reconcile(self._factory, self._settings, self.enqueue, now=now, queue_was_lost=first)
                )
                for simulation_id in await self._finishing(
                    simulation.pending(self._factory, settings=self._settings, now=now)
                ):
                    await self.run_simulation(simulation_id)
                first = False
            except Exception:
                log.exception("reconciler sweep failed")
            await asyncio.sleep(self._settings.reconcile_interval_seconds)

    async def _sla_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.sla_sweep_interval_seconds)
            try:
                await self._finishing(sla.sweep(self._factory, settings=self._settings, now=self._clock()))
            except Exception:
                log.exception("SLA sweep failed")


class ArqBackend:
    """Redis backend: enqueue ids for `switchboard worker` processes. Tolerates Redis being down."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._pool: Any = None
        self._down_until = 0.0
        self._handing_over: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect if Redis is there; if not, connect later on demand."""
        try:
            await self._connect()
        except Exception as exc:
            log.warning("Redis is not reachable yet (%s); webhooks are still accepted", exc)

    async def _connect(self) -> Any:
        if self._pool is None:
            from arq import create_pool

            self._pool = await create_pool(redis_settings(self._redis_url, retries=0))
        return self._pool

    async def enqueue(self, job_ids: Sequence[uuid.UUID]) -> None:
        """Enqueue one arq job per id; on any Redis error leave the rows to the reconciler."""
        if not job_ids or time.monotonic() < self._down_until:
            return
        try:
            pool = await self._connect()
            for job_id in job_ids:
                await pool.enqueue_job(PROCESS_JOB_FUNCTION, [str(job_id)])
        except Exception as exc:
            self._down_until = time.monotonic() + _OUTAGE_BACKOFF_SECONDS
            log.warning("could not enqueue %d jobs (%s); the reconciler will", len(job_ids), exc)

    async def run_simulation(self, simulation_id: uuid.UUID) -> None:
        """Hand a stored simulation to the workers (on a Redis error the reconciler does it later)."""
        try:
            pool = await self._connect()
            await pool.enqueue_job(SIMULATION_JOB_FUNCTION, str(simulation_id))
        except Exception as exc:
            log.warning("could not enqueue simulation %s (%s); the reconciler will", simulation_id, exc)

    def deliver_soon(self, message_ids: Sequence[int]) -> None:
        """Hand the ids to the workers in the background (on a Redis error the workers' sweep finds them)."""
        task = asyncio.get_running_loop().create_task(self._enqueue_delivery(list(message_ids)))
        self._handing_over.add(task)
        task.add_done_callback(self._handing_over.discard)

    async def _enqueue_delivery(self, message_ids: list[int]) -> None:
        if time.monotonic() < self._down_until:
            return
        try:
            pool = await self._connect()
            await pool.enqueue_job(DELIVER_JOB_FUNCTION, message_ids)
        except Exception as exc:
            self._down_until = time.monotonic() + _OUTAGE_BACKOFF_SECONDS
            log.warning(
                "could not hand %d outbound messages to the workers (%s); their sweep will", len(message_ids), exc
            )

    async def ping(self) -> None:
        """Raise unless Redis answers."""
        pool = await self._connect()
        await pool.ping()

    async def close(self) -> None:
        """Close the connection pool (after the hand-overs in flight)."""
        if self._handing_over:
            await asyncio.gather(*self._handing_over, return_exceptions=True)
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None


def redis_settings(url: str, *, retries: int = 2) -> Any:
    """arq RedisSettings for a URL, with short timeouts so an outage is noticed rather than waited out.

    The API passes retries=0: a webhook must not wait for Redis, its job row is safe in the database.
    """
    from arq.connections import RedisSettings

    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 1
    settings.conn_retries = retries
    settings.conn_retry_delay = 1
    return settings


async def reconcile(
    factory: SessionFactory,
    settings: Settings,
    enqueue: Callable[[Sequence[uuid.UUID]], Awaitable[None]],
    *,
    now: datetime,
    queue_was_lost: bool = False,
) -> int:
    """One sweep at `now`: hand out due job rows again; forget old webhook ids, delivered messages and sent
    notifications. Returns how many jobs were handed out."""
    total = 0
    while True:
        ids = await processing.due_jobs(factory, settings=settings, now=now, queue_was_lost=queue_was_lost)
        if ids:
            await enqueue(ids)
            total += len(ids)
        if len(ids) < 1000:
            break
    pruned = await processing.prune_deliveries(factory, settings=settings, now=now)
    forgotten = await delivery.prune(factory, settings=settings, now=now)
    forgotten += await batching.prune(factory, settings=settings, now=now)
    if total or pruned or forgotten:
        log.info(
            "reconciler: re-enqueued %d jobs, forgot %d old webhook ids and %d old deliveries and notifications",
            total, pruned, forgotten,
        )  # fmt: skip
    return total
