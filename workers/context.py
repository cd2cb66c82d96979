"""Worker process start-up and shut-down: one engine, one loaded model per process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypedDict

import httpx
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service import crypto
from service.analytics import upkeep  # noqa: F401  (keeps the analytics facts in step at every commit)
from service.auth import ratelimit
from service.auth.ratelimit import RateLimiter
from service.classification.classifier import Classifier
from service.classification.loader import load_analyser
from service.database import SessionFactory, create_engine, create_session_factory
from service.jobs.backends import DELIVER_JOB_FUNCTION
from service.outbound import delivery, outbox
from service.settings import Settings

log = logging.getLogger(__name__)


class WorkerContext(TypedDict, total=False):
    """What arq's ctx carries for our jobs: set by `startup` (arq adds its own keys, e.g. 'redis')."""

    settings: Settings
    engine: AsyncEngine
    session_factory: SessionFactory
    classifier: Classifier
    redis: ArqRedis
    http: httpx.AsyncClient  # outbound deliveries
    limiter: RateLimiter  # per-target outbound rate limits, shared through Redis


async def startup(ctx: WorkerContext) -> None:
    """Connect to the database, load the encoder once for this process and warm it up."""
    settings: Settings = ctx.get("settings") or Settings()
    crypto.install(crypto.load(settings))
    engine = create_engine(settings.database_url)
    ctx["settings"] = settings
    ctx["engine"] = engine
    ctx["session_factory"] = create_session_factory(engine)
    ctx["http"] = delivery.client(settings)
    ctx["limiter"] = ratelimit.build(settings)
    handing_over: set[asyncio.Task[None]] = set()

    def deliver_soon(message_ids: Sequence[int]) -> None:
        # Outbox rows this worker committed (a held comment, a notification): to the workers through Redis.
        task = asyncio.get_running_loop().create_task(_enqueue_delivery(ctx, list(message_ids)))
        handing_over.add(task)
        task.add_done_callback(handing_over.discard)

    outbox.on_commit(ctx["session_factory"], deliver_soon)
    analyser = await asyncio.to_thread(load_analyser, settings)
    classifier = Classifier(analyser, ctx["session_factory"], other_threshold=settings.topic_other_threshold)
    await classifier.warm_up()  # the live taxonomy's fit and a first run, before the first job waits for them
    ctx["classifier"] = classifier
    log.info("worker ready: model %s", classifier.model_version)


async def _enqueue_delivery(ctx: WorkerContext, message_ids: list[int]) -> None:
    try:
        await ctx["redis"].enqueue_job(DELIVER_JOB_FUNCTION, message_ids)
    except Exception as exc:  # the outbound sweep finds them
        log.warning("could not enqueue %d outbound messages (%s)", len(message_ids), exc)


async def shutdown(ctx: WorkerContext) -> None:
    """Release the model and the database pool."""
    if "classifier" in ctx:
        await ctx["classifier"].aclose()
    if "http" in ctx:
        await ctx["http"].aclose()
    if "limiter" in ctx:
        await ctx["limiter"].aclose()
    if "engine" in ctx:
        await ctx["engine"].dispose()
