"""Per-comment analysis from one encoder pass: embedding, heads, language, personal data; sync and batched."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import numpy as np
from numpy.typing import NDArray

from classifiers.encoder import Encoder, check_texts
from classifiers.heads import HeadResult, Heads
from classifiers.language import LanguageDetector, LanguageResult
from classifiers.pii import PiiFinding, find_pii
from classifiers.topics import TopicResult

__all__ = ["Analyser", "Analysis", "BatchingAnalyser", "Pipeline"]


@dataclass(frozen=True, slots=True)
class Analysis:
    """What the classifiers know about one text.

    ``embedding`` is a read-only, unit-length vector of shape ``(dim,)``.
    """

    embedding: NDArray[np.float32]
    pii: list[PiiFinding]
    model_version: str
    language: LanguageResult | None = None
    # None when no heads are loaded, or when another language than the heads' is confidently detected.
    heads: dict[str, HeadResult] | None = None
    topic: TopicResult | None = None  # filled in by the caller that knows the organisation's taxonomy


class Analyser(Protocol):
    model_version: str

    async def analyse(self, texts: Sequence[str]) -> list[Analysis]: ...

    async def aclose(self) -> None: ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    return check_texts(texts, "analyse")


class Pipeline:
    """Synchronous: one encoder pass per batch feeds the heads; language and PII detection beside it."""

    model_version: str

    def __init__(
        self,
        encoder: Encoder,
        *,
        pii_region: str | None = None,
        heads: Heads | None = None,
        language: LanguageDetector | None = None,
    ) -> None:
        """``pii_region`` is passed to :func:`~classifiers.pii.find_pii` as ``default_region``."""
        if pii_region is not None:
            find_pii("", default_region=pii_region)  # fail now on an unknown region, not on every batch
        if heads is not None:
            heads.check_encoder(encoder.model_version)
        self.encoder = encoder
        self.pii_region = pii_region
        self.heads = heads
        self.language = language
        self.model_version = encoder.model_version + (f"+{heads.version}" if heads is not None else "")

    def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        items = _check_texts(texts)
        if self.heads is not None:
            # One pass: the plain sentence embedding (topics, storage) and the one the heads read (adapted top
            # layers when the encoder has an adapter; the same vectors otherwise).
            embeddings, head_embeddings = self.encoder.encode_both(items)
        else:
            embeddings = head_embeddings = self.encoder.encode(items)
        embeddings.setflags(write=False)  # rows are shared views: keep the frozen Analysis immutable
        languages = self.language.detect(items) if self.language is not None else [None] * len(items)
        heads = self.heads.predict(head_embeddings, texts=items) if self.heads is not None else [None] * len(items)
        return [
            Analysis(
                embedding=embeddings[i],
                pii=find_pii(text, default_region=self.pii_region),
                model_version=self.model_version,
                language=languages[i],
                heads=heads[i] if languages[i] is None or languages[i].supported else None,  # type: ignore[union-attr]
            )
            for i, text in enumerate(items)
        ]


@dataclass(slots=True)
class _Request:
    texts: list[str]
    future: asyncio.Future[list[Analysis]]
    enqueued_at: float


class BatchingAnalyser:
    """Runs Pipeline.analyse off the event loop in ONE dedicated worker thread; concurrent callers' texts are
    micro-batched.

    Requests arriving within ``max_wait_ms`` of the oldest waiting one are coalesced, up to ``max_batch``
    texts, into one :meth:`Pipeline.analyse` call; each caller gets its own slice back, and an exception
    raised by that call propagates to every caller of the batch. While a batch runs, new requests queue up
    and form the next batch, so under load batches fill up without waiting. A call with more than
    ``max_batch`` texts is split into several requests (which may share batches with other callers).

    A caller that is cancelled while waiting simply loses its result; its texts are skipped if their batch
    has not started yet. Nothing is bound to an event loop until the first :meth:`analyse` call; if that
    loop goes away (e.g. one ``asyncio.run`` per test), the next call on another loop starts afresh.

    :meth:`aclose` refuses new calls, lets the requests already accepted finish, then stops the thread.
    """

    model_version: str

    def __init__(self, pipeline: Pipeline, *, max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if max_wait_ms < 0:
            raise ValueError("max_wait_ms must not be negative")
        self.pipeline = pipeline
        self.model_version = pipeline.model_version
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="switchboard-analyser")
        self._closed = False
        self._pending: collections.deque[_Request] = collections.deque()
        self._pending_texts = 0
        # Created on first use, on the running loop (see _ensure_dispatcher).
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def closed(self) -> bool:
        return self._closed

    async def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        if self._closed:
            raise RuntimeError("BatchingAnalyser is closed")
        # Validate here, per caller: a bad item must fail its own caller, not everyone's batch.
        items = _check_texts(texts)
        if not items:
            return []
        loop = asyncio.get_running_loop()
        wakeup = self._ensure_dispatcher(loop)
        now = loop.time()
        futures: list[asyncio.Future[list[Analysis]]] = []
        for begin in range(0, len(items), self.max_batch):
            chunk = items[begin : begin + self.max_batch]
            future: asyncio.Future[list[Analysis]] = loop.create_future()
            self._pending.append(_Request(chunk, future, now))
            self._pending_texts += len(chunk)
            futures.append(future)
        wakeup.set()
        if len(futures) == 1:
            return await futures[0]
        # return_exceptions: retrieve every chunk's outcome (no "exception was never retrieved"), then raise.
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        results: list[Analysis] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
            results.extend(outcome)
        return results

    async def aclose(self) -> None:
        """Refuse further calls, finish the accepted ones, stop the worker thread. Idempotent."""
        self._closed = True
        dispatcher = self._dispatcher
        if dispatcher is not None and not dispatcher.done():
            if self._wakeup is not None:
                self._wakeup.set()
            if self._loop is asyncio.get_running_loop():
                await dispatcher
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- dispatcher ------------------------------------------------------------------------------------

    def _ensure_dispatcher(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        if self._dispatcher is not None and not self._dispatcher.done() and self._wakeup is not None:
            if self._loop is not loop:
                raise RuntimeError("BatchingAnalyser is in use on another event loop")
            return self._wakeup
        # First call, or the dispatcher's loop has gone away: start on this loop. Requests of a dead loop
        # were failed when its dispatcher stopped, so the queue is empty here.
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._dispatcher = loop.create_task(self._dispatch(self._wakeup), name="switchboard-analyser-dispatch")
        return self._wakeup

    async def _dispatch(self, wakeup: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        in_flight: list[_Request] = []
        try:
            while True:
                if not self._pending:
                    if self._closed:
                        return
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                await self._wait_for_batch(loop, wakeup)
                in_flight = self._take_batch()
                if in_flight:
                    await self._run_batch(loop, in_flight)
                in_flight = []
        finally:
            # Normally nothing is left; but if this task is cancelled (its loop is shutting down), nobody
            # would ever complete these futures.
            error = RuntimeError("BatchingAnalyser stopped before this request was analysed")
            for request in [*in_flight, *self._pending]:
                if not request.future.done():
                    request.future.set_exception(error)
            self._pending.clear()
            self._pending_texts = 0

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop, wakeup: asyncio.Event) -> None:
        """Wait until max_batch texts are queued, or max_wait has passed since the oldest request came."""
        deadline = self._pending[0].enqueued_at + self.max_wait
        while self._pending_texts < self.max_batch and not self._closed and loop.time() < deadline:
            wakeup.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await wakeup.wait()
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        size = 0
        while self._pending and size + len(self._pending[0].texts) <= self.max_batch:
            request = self._pending.popleft()
            self._pending_texts -= len(request.texts)
            if request.future.done():  # its caller was cancelled: don't spend CPU on it
                continue
            batch.append(request)
            size += len(request.texts)
        return batch

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        texts = [t for request in batch for t in request.texts]
        try:
            results = await loop.run_in_executor(self._executor, self.pipeline.analyse, texts)
            if len(results) != len(texts):
                raise RuntimeError(f"pipeline returned {len(results)} analyses for {len(texts)} texts")
        except Exception as exc:  # the pipeline's failure is every caller's failure
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(exc)
            return
        offset = 0
        for request in batch:
            n = len(request.texts)
            if not request.future.done():
                request.future.set_result(results[offset : offset + n])
            offset += n
