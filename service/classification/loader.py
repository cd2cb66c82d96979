"""Loading the process's classifier: the encoder, the heads and the language detector, once, off the event loop.

The API process (inline backend) and `switchboard worker` both get their classifier here, so workers never import
the web app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from classifiers.pipeline import Analyser
from service.classification.classifier import Classifier
from service.database import SessionFactory
from service.settings import Settings

if TYPE_CHECKING:
    from classifiers.encoder import Encoder
    from classifiers.pipeline import Pipeline

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
