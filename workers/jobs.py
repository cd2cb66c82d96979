"""arq job functions: ids in, a service call, nothing else."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence

from service.jobs import processing
from service.jobs.backends import DELIVER_JOB_FUNCTION, SIMULATION_JOB_FUNCTION
from service.jobs.backends import reconcile as reconcile_sweep
from service.models.base import utcnow
from service.notifications import batching
from service.outbound import delivery
from service.queue import sla
from service.routing import simulation
from workers.context import WorkerContext

log = logging.getLogger(__name__)


async def process_comment_jobs(ctx: WorkerContext, job_ids: list[str]) -> dict[str, int]:
    """Process the comments behind these job rows (idempotent: finished or taken rows are skipped)."""
    report = await processing.process_jobs(
        ctx["session_factory"],
        ctx["classifier"],
        [uuid.UUID(j) for j in job_ids],
        settings=ctx["settings"],
        clock=utcnow,
    )
    return {
        "claimed": report.claimed,
        "done": report.done,
        "failed": report.failed,
        "skipped": report.skipped,
    }


async def reconcile(ctx: WorkerContext) -> int:
    """Re-enqueue job rows that are due (never enqueued, lost by Redis, or abandoned by a dead worker)."""

    async def enqueue(job_ids: Sequence[uuid.UUID]) -> None:
        for start in range(0, len(job_ids), 32):
            chunk = [str(j) for j in job_ids[start : start + 32]]
            await ctx["redis"].enqueue_job("process_comment_jobs", chunk)

    now = utcnow()
    handed_out = await reconcile_sweep(ctx["session_factory"], ctx["settings"], enqueue, now=now)
    for simulation_id in await simulation.pending(ctx["session_factory"], settings=ctx["settings"], now=now):
        await ctx["redis"].enqueue_job(SIMULATION_JOB_FUNCTION, str(simulation_id))
    return handed_out


async def deliver_outbound(ctx: WorkerContext, message_ids: list[int]) -> dict[str, int]:
    """Deliver these outbox rows (idempotent: delivered or taken rows are skipped); schedule what comes next."""
    report = await delivery.deliver(
        ctx["session_factory"], settings=ctx["settings"], clock=utcnow, client=ctx["http"], limiter=ctx["limiter"],
        ids=[int(i) for i in message_ids],
    )  # fmt: skip
    for message_id, seconds in report.follow_ups:  # a retry after its delay, the next message of a comment
        await ctx["redis"].enqueue_job(DELIVER_JOB_FUNCTION, [message_id], _defer_by=max(seconds, 0.0))
    return {"claimed": report.claimed, "delivered": report.delivered, "failed": report.failed, "dead": report.dead}


async def outbound_sweep(ctx: WorkerContext) -> int:
    """Batch due notifications into messages, and deliver whatever is due (retries, anything a lost hand-off left)."""
    settings = ctx["settings"]
    await batching.flush(ctx["session_factory"], settings=settings, now=utcnow())
    claimed = 0
    while True:
        report = await delivery.deliver(
            ctx["session_factory"], settings=settings, clock=utcnow, client=ctx["http"], limiter=ctx["limiter"]
        )
        claimed += report.claimed
        if report.claimed == 0 or report.claimed == report.deferred:
            return claimed


async def run_simulation(ctx: WorkerContext, simulation_id: str) -> None:
    """Replay a window of comments through a draft ruleset (idempotent: a finished simulation is left alone)."""
    await simulation.run(ctx["session_factory"], uuid.UUID(simulation_id), settings=ctx["settings"], clock=utcnow)


async def sla_sweep(ctx: WorkerContext) -> dict[str, int]:
    """Escalate items past their SLA, remind owners before it, return expired claims (idempotent)."""
    report = await sla.sweep(ctx["session_factory"], settings=ctx["settings"], now=utcnow())
    return {"escalated": report.escalated, "reminded": report.reminded, "claims_expired": report.claims_expired}
