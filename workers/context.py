"""Worker process start-up and shut-down: one engine, one loaded model per process."""

from __future__ import annotations

import asyncio
import logging
from typing import TypedDict

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine

from service.classification.classifier import Classifier
from service.classification.loader import load_analyser
from service.database import SessionFactory, create_engine, create_session_factory
from service.settings import Settings

log = logging.getLogger(__name__)


class WorkerContext(TypedDict, total=False):
    """What arq's ctx carries for our jobs: set by `startup` (arq adds its own keys, e.g. 'redis')."""

    settings: Settings
    engine: AsyncEngine
    session_factory: SessionFactory
    classifier: Classifier
    redis: ArqRedis


async def startup(ctx: WorkerContext) -> None:
    """Connect to the database, load the encoder once for this process and warm it up."""
    settings: Settings = ctx.get("settings") or Settings()
    engine = create_engine(settings.database_url)
    ctx["settings"] = settings
    ctx["engine"] = engine
    ctx["session_factory"] = create_session_factory(engine)
    analyser = await asyncio.to_thread(load_analyser, settings)
    classifier = Classifier(analyser, ctx["session_factory"], other_threshold=settings.topic_other_threshold)
    await classifier.warm_up()  # the live taxonomy's fit and a first run, before the first job waits for them
    ctx["classifier"] = classifier
    log.info("worker ready: model %s", classifier.model_version)


async def shutdown(ctx: WorkerContext) -> None:
    """Release the model and the database pool."""
    if "classifier" in ctx:
        await ctx["classifier"].aclose()
    if "engine" in ctx:
        await ctx["engine"].dispose()
