"""The application factory: create_app(settings) builds everything in its lifespan, nothing at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from classifiers.pipeline import Analyser

if TYPE_CHECKING:
    from classifiers.encoder import Encoder
    from classifiers.pipeline import Pipeline
from service import keys, migrate, processing, ratelimit
from service.classification import Classifier
from service.database import SessionFactory, create_engine, create_session_factory, transaction
from service.jobs import ArqQueue, InlineQueue, JobQueue
from service.models import Role
from service.settings import Settings

log = logging.getLogger(__name__)

WARM_UP_RETRY_SECONDS = 5


def build_pipeline(settings: Settings, encoder: Encoder) -> Pipeline:
    """The heads (if trained ones are there) and the language detector over this encoder."""
    from classifiers.heads import Heads, default_heads_dir
    from classifiers.language import LanguageDetector
    from classifiers.pipeline import Pipeline

    heads_dir = settings.heads_dir or default_heads_dir()
    heads = Heads.load(heads_dir) if heads_dir.is_dir() else None
    if heads is None:
        log.warning("no classification heads in %s: comments get embeddings, topics and PII only", heads_dir)
    language = LanguageDetector()
    language.load()  # else on the first comment: lingua holds the GIL while it loads, stalling the event loop too
    return Pipeline(encoder, heads=heads, language=language)


def load_analyser(settings: Settings) -> Analyser:
    """Load the encoder and build the batching pipeline over it (a few seconds)."""
    from classifiers.encoder import Encoder
    from classifiers.pipeline import BatchingAnalyser

    encoder = Encoder(
        settings.model_dir,
        max_length=settings.encoder_max_length,
        batch_size=settings.encoder_batch_size,
        backend=settings.encoder_backend,
        onnx_cache_dir=settings.onnx_cache_dir,
        threads=settings.encoder_threads,
    )
    log.info("encoder %s on %s", encoder.model_version, encoder.backend)
    return BatchingAnalyser(build_pipeline(settings, encoder), max_batch=settings.encoder_batch_size)


class ClassifierProvider:
    """The process's classifier: loaded at start-up and warmed up in the background (in-process backend), or
    loaded on first use (an API beside workers, which classify)."""

    def __init__(self, settings: Settings, factory: SessionFactory, analyser: Analyser | None) -> None:
        self._settings = settings
        self._factory = factory
        self._owned = analyser is None
        self._classifier = None if analyser is None else self._wrap(analyser)
        self._lock = asyncio.Lock()
        self._warm_up: asyncio.Task[None] | None = None

    def _wrap(self, analyser: Analyser) -> Classifier:
        return Classifier(analyser, self._factory, other_threshold=self._settings.topic_other_threshold)

    async def get(self) -> Classifier:
        """The classifier, loading the model now if this process has not yet."""
        async with self._lock:
            if self._classifier is None:
                self._classifier = self._wrap(await asyncio.to_thread(load_analyser, self._settings))
            return self._classifier

    def start_warm_up(self) -> None:
        """Fit the live taxonomy and run the model once, in the background; `ping` fails until that is done."""
        self._warm_up = asyncio.create_task(self._warm(), name="switchboard-classifier-warm-up")

    async def _warm(self) -> None:
        classifier = await self.get()
        while True:
            try:
                await classifier.warm_up()
                log.info("classifier warmed up")
                return
            except Exception:
                log.exception("classifier warm-up failed; retrying in %d s", WARM_UP_RETRY_SECONDS)
                await asyncio.sleep(WARM_UP_RETRY_SECONDS)

    async def ping(self) -> None:
        """Readiness: raise while the warm-up runs (none is started when this process does not classify)."""
        if self._warm_up is not None and not self._warm_up.done():
            raise RuntimeError("warming up")

    async def warmed_up(self) -> None:
        """Wait until the warm-up (if one was started) is over."""
        if self._warm_up is not None:
            await asyncio.shield(self._warm_up)

    async def aclose(self) -> None:
        """Stop warming up; release the model if this provider loaded it."""
        if self._warm_up is not None:
            self._warm_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warm_up
        if self._owned and self._classifier is not None:
            await self._classifier.aclose()


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
        classifiers = ClassifierProvider(settings, factory, analyser)
        queue: JobQueue
        if settings.redis_url:
            queue = ArqQueue(settings.redis_url)  # workers classify; this process loads the model only if asked
        else:
            # Loaded before serving (the language models hold the GIL while they load); warmed up while serving.
            classifier = await classifiers.get()
            classifiers.start_warm_up()

            async def run_batch(job_ids: Sequence[uuid.UUID]) -> None:
                await processing.process_jobs(factory, classifier, job_ids, settings=settings)

            queue = InlineQueue(factory, settings, run_batch)
        app.state.settings = settings
        app.state.engine = engine
        app.state.session_factory = factory
        app.state.queue = queue
        app.state.classifiers = classifiers
        app.state.rate_limiter = limiter = ratelimit.build(settings)
        await queue.start()
        try:
            yield
        finally:
            await limiter.aclose()
            await queue.close()
            await classifiers.aclose()
            await engine.dispose()

    from routers import (
        api_keys,
        audit,
        classify,
        comments,
        directory,
        docs,
        health,
        jobs,
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
        api_keys,
        audit,
        health,
        docs,
    ):
        app.include_router(module.router)
    return app


def app_from_environment() -> FastAPI:
    """Uvicorn factory target: settings from SWITCHBOARD_* variables."""
    logging.basicConfig(level=Settings().log_level)
    return create_app(Settings())
