"""arq WorkerSettings for `switchboard worker`."""

from __future__ import annotations

from typing import Any, ClassVar, cast

from arq import cron
from arq.connections import RedisSettings

from service.jobs.backends import DELIVER_JOB_FUNCTION, PROCESS_JOB_FUNCTION, SIMULATION_JOB_FUNCTION
from service.jobs.backends import redis_settings as make_redis_settings
from service.settings import Settings
from workers import context, jobs

assert jobs.process_comment_jobs.__name__ == PROCESS_JOB_FUNCTION
assert jobs.run_simulation.__name__ == SIMULATION_JOB_FUNCTION
assert jobs.deliver_outbound.__name__ == DELIVER_JOB_FUNCTION


def worker_settings(settings: Settings) -> type:
    """A WorkerSettings class bound to these settings (arq wants a class with attributes)."""
    redis_url = settings.redis_url
    if not redis_url:
        raise ValueError("SWITCHBOARD_REDIS_URL must be set to run an arq worker")
    connection = make_redis_settings(redis_url)
    interval = max(1, int(settings.reconcile_interval_seconds))
    seconds = set(range(0, 60, interval)) if interval < 60 else {0}
    sla_interval = max(1, int(settings.sla_sweep_interval_seconds))
    sla_seconds = set(range(0, 60, sla_interval)) if sla_interval < 60 else {0}
    outbound_interval = max(1, int(settings.outbound_poll_seconds))
    outbound_seconds = set(range(0, 60, outbound_interval)) if outbound_interval < 60 else {0}

    async def startup(ctx: context.WorkerContext) -> None:
        ctx["settings"] = settings
        await context.startup(ctx)
        await jobs.reconcile(ctx)  # pick up whatever was left while no worker ran

    class WorkerSettings:
        functions: ClassVar[list[Any]] = [jobs.process_comment_jobs, jobs.run_simulation, jobs.deliver_outbound]
        cron_jobs: ClassVar[list[Any]] = [
            # arq types ctx as a plain dict; our jobs read the same dict through the WorkerContext TypedDict.
            cron(cast(Any, jobs.reconcile), second=seconds, unique=True, run_at_startup=False),
            cron(cast(Any, jobs.sla_sweep), second=sla_seconds, unique=True, run_at_startup=False),
            cron(cast(Any, jobs.outbound_sweep), second=outbound_seconds, unique=True, run_at_startup=True),
        ]
        on_startup = staticmethod(startup)
        on_shutdown = staticmethod(context.shutdown)
        redis_settings: ClassVar[RedisSettings] = connection
        max_jobs = settings.worker_max_jobs
        job_timeout = int(settings.job_lease_seconds)
        keep_result = 60
        max_tries = 1000  # retries are the job table's business (attempts, backoff, dead letters), not arq's
        allow_abort_jobs = False
        health_check_interval = 10

    return WorkerSettings
