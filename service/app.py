"""The application factory: create_app(settings) builds everything in its lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from classifiers.pipeline import Analyser
from fastapi import FastAPI

from service import keys, migrate, processing
from service.database import create_engine, create_session_factory, transaction
from service.jobs import ArqQueue, InlineQueue, JobQueue
from service.models import Role
from service.settings import Settings

log = logging.getLogger(__name__)


def load_analyser(settings: Settings) -> Analyser:
    """Load the encoder and build the batching analysis pipeline (slow: a second or two)."""
    from classifiers.pipeline import BatchingAnalyser, Pipeline

    from classifiers.encoder import Encoder

    encoder = Encoder(
        settings.model_dir, max_length=settings.encoder_max_length, batch_size=settings.encoder_batch_size
    )
    return BatchingAnalyser(Pipeline(encoder), max_batch=settings.encoder_batch_size)


def create_app(settings: Settings | None = None, *, analyser: Analyser | None = None) -> FastAPI:
    """Build the API. `analyser` lets tests share one loaded model; by default the lifespan loads it."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        factory = create_session_factory(engine)
        current, head = await migrate.current_revision(engine), migrate.head_revision()
        if current != head:
            await engine.dispose()
            raise RuntimeError(
                f"the database is at migration {current}, the code needs {head}: run `switchboard migrate`"
            )
        if settings.bootstrap_admin_key is not None:
            async with transaction(factory) as session:
                await keys.ensure_key(
                    session,
                    raw=settings.bootstrap_admin_key.get_secret_value(),
                    role=Role.admin,
                    name="bootstrap",
                )
        owned_analyser: Analyser | None = None
        queue: JobQueue
        if settings.redis_url:
            queue = ArqQueue(settings.redis_url)
        else:
            active = analyser
            if active is None:
                active = owned_analyser = await asyncio.to_thread(load_analyser, settings)

            async def run_batch(job_ids: Sequence[uuid.UUID], active: Analyser = active) -> None:
                await processing.process_jobs(factory, active, job_ids, settings=settings)

            queue = InlineQueue(factory, settings, run_batch)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = factory
        app.state.queue = queue
        await queue.start()
        try:
            yield
        finally:
            await queue.close()
            if owned_analyser is not None:
                await owned_analyser.aclose()
            await engine.dispose()

    from routers import comments, health, jobs, problems, sources, webhooks

    app = FastAPI(
        title="Switchboard",
        version="0.1.0",
        summary="Comment moderation and response routing for intranet platforms.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    problems.install(app)
    for module in (webhooks, sources, comments, jobs, health):
        app.include_router(module.router)
    return app


def app_from_environment() -> FastAPI:
    """Uvicorn factory target: settings from SWITCHBOARD_* variables."""
    logging.basicConfig(level=Settings().log_level)
    return create_app(Settings())
