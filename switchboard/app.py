"""The application factory: create_app(settings) builds everything in its lifespan, nothing at import."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from fastapi import FastAPI

from classifiers.pipeline import Analyser
from routers.deps import Services
from service import crypto, logs, migrate
from service.auth import keys, ratelimit
from service.classification.loader import ClassifierProvider
from service.database import create_engine, create_session_factory, transaction
from service.jobs import processing
from service.jobs.backends import ArqBackend, InlineBackend, JobBackend
from service.models import Role
from service.models.base import utcnow
from service.notifications import batching
from service.outbound import outbox
from service.outbound.runner import InlineRunner
from service.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, *, analyser: Analyser | None = None, clock: Callable[[], datetime] = utcnow
) -> FastAPI:
    """Build the API. `analyser` lets tests share one loaded model; by default the lifespan loads it. `clock` is
    where requests and in-process jobs read the time (tests move it instead of sleeping)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        keyring = crypto.load(settings)  # before anything reads a secret; PostgreSQL without a key stops here
        crypto.install(keyring)
        engine = create_engine(settings.database_url)
        factory = create_session_factory(engine)
        current, head = await migrate.current_revision(engine), migrate.head_revision()
        if current != head:
            await engine.dispose()
            raise RuntimeError(
                f"the database is at migration {current}, the code needs {head}: run `switchboard migrate`"
            )
        if encrypted := await migrate.encrypt_secrets(engine, keyring):
            log.warning("encrypted %d secrets that an older version stored in plaintext", encrypted)
        if settings.bootstrap_admin_key is not None:
            async with transaction(factory) as session:
                await keys.ensure_key(
                    session,
                    raw=settings.bootstrap_admin_key.get_secret_value(),
                    role=Role.admin,
                    name="bootstrap",
                    now=clock(),
                )
        classifiers = ClassifierProvider(settings, factory, analyser)
        limiter = ratelimit.build(settings)
        backend: JobBackend
        outbound: InlineRunner | None = None
        if settings.redis_url:
            backend = ArqBackend(settings.redis_url)  # workers classify; this process loads the model only if asked
        else:
            # Loaded before serving (the language models hold the GIL while they load); warmed up while serving.
            classifier = await classifiers.get()
            classifiers.start_warm_up()

            async def run_batch(job_ids: Sequence[uuid.UUID]) -> None:
                await processing.process_jobs(factory, classifier, job_ids, settings=settings, clock=clock)

            async def flush_notifications(now: datetime) -> None:
                await batching.flush(factory, settings=settings, now=now)

            outbound = InlineRunner(factory, settings, limiter, clock=clock, periodic=[flush_notifications])
            backend = InlineBackend(factory, settings, run_batch, clock=clock, outbound=outbound)
        outbox.on_commit(factory, backend.deliver_soon)
        app.state.services = Services(
            settings=settings,
            engine=engine,
            session_factory=factory,
            backend=backend,
            classifiers=classifiers,
            rate_limiter=limiter,
            clock=clock,
            outbound=outbound,
        )
        await backend.start()
        try:
            yield
        finally:
            await limiter.aclose()
            await backend.close()
            await classifiers.aclose()
            await engine.dispose()

    from routers import (
        analytics,
        api_keys,
        audit,
        classify,
        comments,
        deliveries,
        directory,
        docs,
        health,
        jobs,
        metrics,
        notifications,
        problems,
        queue,
        rules,
        sources,
        topics,
        tuning,
        webhooks,
    )

    app = FastAPI(
        title="Switchboard",
        version="0.1.0",
        summary="Comment moderation and response routing for intranet platforms.",
        lifespan=lifespan,
        docs_url=None,  # routers.docs serves Swagger UI from the installed package instead of a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    problems.install(app)
    metrics.install(app)  # outside LastResort: times every answer, 500s included
    for module in (
        webhooks,
        sources,
        topics,
        directory,
        rules,
        tuning,
        queue,
        comments,
        classify,
        jobs,
        deliveries,
        notifications,
        analytics,
        api_keys,
        audit,
        health,
        docs,
    ):
        app.include_router(module.router)
    return app


def app_from_environment() -> FastAPI:
    """Uvicorn factory target: settings from SWITCHBOARD_* variables."""
    settings = Settings()
    logs.configure(level=settings.log_level, log_format=settings.log_format)  # again in each uvicorn worker process
    return create_app(settings)
