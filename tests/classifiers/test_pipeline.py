"""Tests of the synchronous Pipeline and the micro-batching BatchingAnalyser, on the real encoder."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import numpy as np
import pytest

from classifiers.encoder import Encoder
from classifiers.pii import find_pii
from classifiers.pipeline import Analyser, Analysis, BatchingAnalyser, Pipeline


class RecordingPipeline(Pipeline):
    """The real pipeline, recording every batch it is given and the thread that ran it."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__(encoder)
        self.batches: list[list[str]] = []
        self.threads: set[str] = set()

    def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        self.batches.append(list(texts))
        self.threads.add(threading.current_thread().name)
        return super().analyse(texts)


class GatedPipeline(RecordingPipeline):
    """Blocks every batch until the test opens the gate, so that requests can queue up behind it."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__(encoder)
        self.gate = threading.Event()
        self.started = threading.Event()

    def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        self.started.set()
        self.gate.wait(timeout=30)
        return super().analyse(texts)


class FailingPipeline(RecordingPipeline):
    def analyse(self, texts: Sequence[str]) -> list[Analysis]:
        self.batches.append(list(texts))
        raise RuntimeError("model exploded")


def _distinct_texts(n: int) -> list[str]:
    topics = ["parking", "canteen", "printer", "holiday rota", "VPN", "coffee machine", "fire drill"]
    return [
        f"Comment {i} about the {topics[i % len(topics)]}"
        + (" — it keeps getting worse" * (i % 5))
        + (f", mail me at user{i}@example.com" if i % 3 == 0 else "")
        for i in range(n)
    ]


def _assert_same(actual: Analysis, expected: Analysis) -> None:
    np.testing.assert_allclose(actual.embedding, expected.embedding, atol=1e-5)
    assert actual.pii == expected.pii
    assert actual.model_version == expected.model_version


# -- Pipeline -------------------------------------------------------------------------------------------


def test_pipeline_reports_pii_spans(pipeline: Pipeline) -> None:
    texts = ["no personal data here", "mail jane@example.org or call +44 20 7946 0958"]
    plain, personal = pipeline.analyse(texts)
    assert plain.pii == []
    assert [(f.kind, texts[1][f.start : f.end]) for f in personal.pii] == [
        ("email", "jane@example.org"),
        ("phone", "+44 20 7946 0958"),
    ]


def test_pipeline_uses_its_pii_region_for_national_numbers(encoder: Encoder) -> None:
    text = "call 020 7946 0958"
    assert Pipeline(encoder).analyse([text])[0].pii == []
    assert Pipeline(encoder, pii_region="GB").analyse([text])[0].pii == find_pii(text, default_region="GB")
    with pytest.raises(ValueError, match="region"):
        Pipeline(encoder, pii_region="XQ")


def test_pipeline_gives_one_unit_embedding_per_text_in_order(pipeline: Pipeline, encoder: Encoder) -> None:
    texts = _distinct_texts(5)
    analyses = pipeline.analyse(texts)
    np.testing.assert_allclose(np.stack([a.embedding for a in analyses]), encoder.encode(texts), atol=1e-5)
    assert all(a.embedding.shape == (384,) for a in analyses)
    assert all(a.model_version == encoder.model_version for a in analyses)
    assert encoder.model_version.startswith("all-MiniLM-L6-v2@gt-0.1.0")
    assert pipeline.model_version == encoder.model_version


def test_analysis_embeddings_are_read_only(pipeline: Pipeline) -> None:
    (analysis,) = pipeline.analyse(["immutable"])
    with pytest.raises(ValueError, match="read-only"):
        analysis.embedding[0] = 1.0


def test_pipeline_of_no_texts_is_empty(pipeline: Pipeline) -> None:
    assert pipeline.analyse([]) == []


# -- BatchingAnalyser -----------------------------------------------------------------------------------


async def test_concurrent_callers_each_get_their_own_results(pipeline: Pipeline) -> None:
    texts = _distinct_texts(50)
    expected = [pipeline.analyse([t])[0] for t in texts]
    async with BatchingAnalyser(pipeline) as analyser:
        results = await asyncio.gather(*(analyser.analyse([t]) for t in texts))
    for text, result, exp in zip(texts, results, expected, strict=True):
        assert len(result) == 1
        _assert_same(result[0], exp)
        assert result[0].pii == find_pii(text)


async def test_concurrent_requests_are_coalesced_into_batches(encoder: Encoder) -> None:
    recorder = RecordingPipeline(encoder)
    texts = _distinct_texts(50)
    async with BatchingAnalyser(recorder, max_batch=16, max_wait_ms=50) as analyser:
        await asyncio.gather(*(analyser.analyse([t]) for t in texts))
    assert sorted(t for batch in recorder.batches for t in batch) == sorted(texts)
    assert [len(b) for b in recorder.batches] == [16, 16, 16, 2]
    assert len(recorder.threads) == 1
    assert recorder.threads.pop().startswith("switchboard-analyser")


async def test_callers_with_several_texts_get_their_slice_in_order(pipeline: Pipeline) -> None:
    texts = _distinct_texts(30)
    requests = [texts[0:1], texts[1:8], texts[8:9], texts[9:30]]
    async with BatchingAnalyser(pipeline, max_batch=10) as analyser:
        results = await asyncio.gather(*(analyser.analyse(r) for r in requests))
    for request, result in zip(requests, results, strict=True):
        assert len(result) == len(request)
        for text, analysis in zip(request, result, strict=True):
            assert analysis.pii == find_pii(text)
            _assert_same(analysis, pipeline.analyse([text])[0])


async def test_call_larger_than_max_batch_is_split(encoder: Encoder) -> None:
    recorder = RecordingPipeline(encoder)
    texts = _distinct_texts(23)
    async with BatchingAnalyser(recorder, max_batch=8) as analyser:
        results = await analyser.analyse(texts)
    assert [len(b) for b in recorder.batches] == [8, 8, 7]
    np.testing.assert_allclose(np.stack([r.embedding for r in results]), encoder.encode(texts), atol=1e-5)


async def test_pipeline_failure_propagates_to_every_caller_in_the_batch(encoder: Encoder) -> None:
    failing = FailingPipeline(encoder)
    async with BatchingAnalyser(failing, max_batch=8, max_wait_ms=50) as analyser:
        outcomes = await asyncio.gather(
            analyser.analyse(["a"]),
            analyser.analyse(["b", "c"]),
            analyser.analyse([f"many {i}" for i in range(12)]),  # split: two chunks
            return_exceptions=True,
        )
        assert all(isinstance(o, RuntimeError) and str(o) == "model exploded" for o in outcomes)
        # The analyser survives a failed batch.
        with pytest.raises(RuntimeError, match="model exploded"):
            await analyser.analyse(["again"])
    # FIFO: the 8-text chunk does not fit behind a, b, c, so it starts the next batch.
    assert [len(b) for b in failing.batches] == [3, 8, 4, 1]


async def test_invalid_texts_fail_only_their_own_caller(pipeline: Pipeline) -> None:
    async with BatchingAnalyser(pipeline) as analyser:
        good, bad, single = await asyncio.gather(
            analyser.analyse(["fine"]),
            analyser.analyse(["fine", 42]),  # type: ignore[list-item]
            analyser.analyse("a plain str"),
            return_exceptions=True,
        )
    assert isinstance(good, list)
    assert len(good) == 1
    assert isinstance(bad, TypeError)
    assert isinstance(single, TypeError)


async def test_cancelled_caller_does_not_disturb_the_others(encoder: Encoder) -> None:
    gated = GatedPipeline(encoder)
    async with BatchingAnalyser(gated, max_batch=4, max_wait_ms=0) as analyser:
        first = asyncio.create_task(analyser.analyse(["first"]))
        await asyncio.to_thread(gated.started.wait, 10)  # "first" is now running in the worker thread
        doomed = asyncio.create_task(analyser.analyse(["doomed"]))
        survivor = asyncio.create_task(analyser.analyse(["survivor"]))
        await asyncio.sleep(0)
        doomed.cancel()
        gated.gate.set()
        (first_result,), (survivor_result,) = await asyncio.gather(first, survivor)
        with pytest.raises(asyncio.CancelledError):
            await doomed
    assert gated.batches == [["first"], ["survivor"]]  # the cancelled request was never computed
    _assert_same(survivor_result, gated.analyse(["survivor"])[0])
    assert first_result.model_version == gated.model_version


async def test_closed_analyser_refuses_work(pipeline: Pipeline) -> None:
    analyser = BatchingAnalyser(pipeline)
    assert len(await analyser.analyse(["before closing"])) == 1
    await analyser.aclose()
    assert analyser.closed
    with pytest.raises(RuntimeError, match="closed"):
        await analyser.analyse(["after closing"])
    await analyser.aclose()  # idempotent


async def test_closing_never_used_analyser_is_fine(pipeline: Pipeline) -> None:
    analyser = BatchingAnalyser(pipeline)
    await analyser.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await analyser.analyse(["x"])


async def test_aclose_finishes_requests_already_accepted(encoder: Encoder) -> None:
    gated = GatedPipeline(encoder)
    analyser = BatchingAnalyser(gated, max_batch=2, max_wait_ms=0)
    running = asyncio.create_task(analyser.analyse(["running"]))
    await asyncio.to_thread(gated.started.wait, 10)
    queued = asyncio.create_task(analyser.analyse(["queued 1", "queued 2", "queued 3"]))
    await asyncio.sleep(0)
    closing = asyncio.create_task(analyser.aclose())
    await asyncio.sleep(0)
    gated.gate.set()
    await closing
    assert len(await running) == 1
    assert [len(r.pii) for r in await queued] == [0, 0, 0]
    assert [len(b) for b in gated.batches] == [1, 2, 1]


async def test_empty_request_returns_immediately(pipeline: Pipeline) -> None:
    async with BatchingAnalyser(pipeline) as analyser:
        assert await analyser.analyse([]) == []


async def test_analyser_constructed_outside_an_event_loop_works(pipeline: Pipeline) -> None:
    analyser = await asyncio.to_thread(BatchingAnalyser, pipeline)  # a thread with no running loop
    async with analyser:
        (result,) = await analyser.analyse(["built elsewhere"])
    _assert_same(result, pipeline.analyse(["built elsewhere"])[0])


async def test_analyser_is_reusable_after_its_first_event_loop_is_gone(pipeline: Pipeline) -> None:
    analyser = BatchingAnalyser(pipeline)

    def use_on_a_private_loop() -> list[Analysis]:
        return asyncio.run(analyser.analyse(["on another loop"]))

    first = await asyncio.to_thread(use_on_a_private_loop)  # that loop is closed when asyncio.run returns
    async with analyser:
        second = await analyser.analyse(["on another loop"])
    _assert_same(second[0], first[0])


def test_batching_analyser_is_an_analyser(pipeline: Pipeline) -> None:
    analyser: Analyser = BatchingAnalyser(pipeline)  # checked by mypy: structural conformance
    assert analyser.model_version == pipeline.model_version


def test_batching_analyser_rejects_nonsense_settings(pipeline: Pipeline) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchingAnalyser(pipeline, max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        BatchingAnalyser(pipeline, max_wait_ms=-1)
