"""The ONNX Runtime backends of the encoder, on the real model: agreement with torch, versions, the graph cache.

The graphs of the default cache (var/onnx) are exported by the first run and reused afterwards; the cache tests
use a plain encoder (no adapter: one graph, exported in a few seconds) in folders of their own.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from classifiers import onnx_backend
from classifiers.encoder import ORT_INT8_SUFFIX, Encoder
from classifiers.heads import EncoderMismatch, Heads
from classifiers.onnx_backend import OrtBackend
from classifiers.pipeline import Pipeline
from classifiers.trunk import TorchBackend
from service.settings import Settings

INT8_MIN_COSINE_ONE_WORD = 0.93
TEXTS = [
    "Why is the canteen closed on Fridays?",
    "Thanks for sorting the VPN so quickly - great work!",
    "ok",
    "Nobody told us about the reorganisation of the night shift, and the new rota makes no sense at all. " * 3,
    "",
]


@pytest.fixture(scope="module")
def torch_encoder(encoder: Encoder) -> Encoder:
    return encoder if encoder.backend == "torch" else Encoder(backend="torch")


@pytest.fixture(scope="module")
def onnx_encoder(encoder: Encoder) -> Encoder:
    return encoder if encoder.backend == "onnx" else Encoder(backend="onnx")


@pytest.fixture(scope="module")
def int8_encoder(encoder: Encoder) -> Encoder:
    return encoder if encoder.backend == "onnx-int8" else Encoder(backend="onnx-int8")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def test_onnx_fp32_gives_the_torch_embeddings_and_versions(torch_encoder: Encoder, onnx_encoder: Encoder) -> None:
    plain, adapted = onnx_encoder.encode_both(TEXTS)
    expected_plain, expected_adapted = torch_encoder.encode_both(TEXTS)
    np.testing.assert_allclose(plain, expected_plain, atol=1e-5)
    np.testing.assert_allclose(adapted, expected_adapted, atol=1e-5)
    np.testing.assert_allclose(onnx_encoder.encode(TEXTS), expected_plain, atol=1e-5)  # the plain-only graph
    np.testing.assert_allclose(onnx_encoder.encode_heads(TEXTS), expected_adapted, atol=1e-5)
    assert onnx_encoder.model_version == torch_encoder.model_version
    assert onnx_encoder.base_version == torch_encoder.base_version


def test_onnx_int8_agrees_within_a_cosine_and_says_so_in_its_versions(
    torch_encoder: Encoder, int8_encoder: Encoder
) -> None:
    plain, adapted = int8_encoder.encode_both(TEXTS)
    expected_plain, expected_adapted = torch_encoder.encode_both(TEXTS)
    # 0.97-0.99 on sentences: above the bound the cache checks every int8 graph against (its own three sentences).
    sentences = [i for i, text in enumerate(TEXTS) if len(text.split()) > 1]
    assert _cosines(plain, expected_plain)[sentences].min() > onnx_backend.INT8_MIN_COSINE
    assert _cosines(adapted, expected_adapted)[sentences].min() > onnx_backend.INT8_MIN_COSINE
    assert _cosines(int8_encoder.encode(TEXTS), expected_plain)[sentences].min() > onnx_backend.INT8_MIN_COSINE
    # A one-word text drifts most, and by how much depends on the CPU's int8 kernels: "ok" gave 0.961 on the machine
    # of ONNX.md and 0.949 on the AMD EPYC of 2026-12-01 (same onnxruntime 1.32.0, torch, transformers, graph).
    assert _cosines(plain, expected_plain).min() > INT8_MIN_COSINE_ONE_WORD
    assert _cosines(adapted, expected_adapted).min() > INT8_MIN_COSINE_ONE_WORD
    assert not np.allclose(adapted, expected_adapted, atol=1e-3)  # really the quantised graph, not fp32
    np.testing.assert_allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)
    assert int8_encoder.base_version == torch_encoder.base_version + ORT_INT8_SUFFIX
    assert int8_encoder.model_version == torch_encoder.model_version + ORT_INT8_SUFFIX


def test_heads_accept_the_int8_variant_of_their_own_encoder_only(int8_encoder: Encoder) -> None:
    heads = Heads.load()
    heads.check_encoder(heads.encoder_version + ORT_INT8_SUFFIX)
    pipeline = Pipeline(int8_encoder, heads=heads)
    assert pipeline.model_version == f"{int8_encoder.model_version}+{heads.version}"
    analysis = pipeline.analyse(["Why is the canteen closed on Fridays?"])[0]
    assert analysis.heads is not None
    assert analysis.heads["needs_answer"].label == "needs_answer"
    for other in (
        "all-MiniLM-L6-v2@sha256-000000000000" + ORT_INT8_SUFFIX,  # another model, quantised
        int8_encoder.base_version,  # the plain embedding (no adapter), quantised
        heads.encoder_version + ORT_INT8_SUFFIX + ORT_INT8_SUFFIX,
        heads.encoder_version + "+ort-int4",
    ):
        with pytest.raises(EncoderMismatch):
            heads.check_encoder(other)


# ---- the cache of exported graphs ----------------------------------------------------------------------------


def _count_exports(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Record every export (the real one runs)."""
    calls: list[Path] = []
    real = onnx_backend.export

    def spy(*args: Any, **kwargs: Any) -> Path:
        calls.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(onnx_backend, "export", spy)
    return calls


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Encoder]:
    """A cache folder with the graph of the plain encoder (no adapter), and that encoder."""
    cache = tmp_path_factory.mktemp("onnx")
    return cache, Encoder(adapter=False, backend="onnx", onnx_cache_dir=cache)


def _graphs(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/*.onnx"))


def test_an_exported_graph_is_reused_by_the_next_encoder(
    exported: tuple[Path, Encoder], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, first = exported
    calls = _count_exports(monkeypatch)
    second = Encoder(adapter=False, backend="onnx", onnx_cache_dir=cache)
    assert calls == []
    assert [p.name for p in _graphs(cache)] == [f"{onnx_backend.graph_name(('plain',), int8=False)}"]
    assert _graphs(cache)[0].parent.name == first.model_version.replace("@", "_")
    np.testing.assert_allclose(second.encode(TEXTS), first.encode(TEXTS), atol=1e-6)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: b[: len(b) // 2], id="truncated"),
        pytest.param(lambda b: b[:1000] + bytes(len(b) - 1000), id="zeroed"),
    ],
)
def test_a_damaged_cached_graph_is_exported_again(
    exported: tuple[Path, Encoder],
    torch_encoder: Encoder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    damage: Callable[[bytes], bytes],
) -> None:
    cache = tmp_path / "onnx"
    shutil.copytree(exported[0], cache)
    [graph] = _graphs(cache)
    graph.write_bytes(damage(graph.read_bytes()))
    (graph.parent / f".{graph.name}.4242-deadbeef.tmp").write_bytes(b"left by an export that was killed")
    calls = _count_exports(monkeypatch)
    encoder = Encoder(adapter=False, backend="onnx", onnx_cache_dir=cache)
    assert len(calls) == 1
    assert calls[0].parent == graph.parent
    assert calls[0].name.endswith(".tmp")  # written under a temporary name, then renamed into place
    assert [p.name for p in graph.parent.iterdir() if p.name != ".lock"] == [graph.name]
    np.testing.assert_allclose(encoder.encode(TEXTS), torch_encoder.encode(TEXTS), atol=1e-5)


def test_a_failed_export_leaves_no_graph_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Path:
        path: Path = args[3]
        path.write_bytes(b"half a graph")  # as a crash or a full disk would leave it
        return path

    monkeypatch.setattr(onnx_backend, "export", broken)
    with pytest.raises(Exception, match=r"(?i)protobuf|load|pars"):
        Encoder(adapter=False, backend="onnx", onnx_cache_dir=tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and p.name != ".lock"] == []


def test_backends_starting_together_export_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two ONNX backends built at the same time on an empty cache (threads here; processes take the same file
    # lock): one exports, the other waits for its file and uses it.
    plain = Encoder(adapter=False, backend="torch")
    assert isinstance(plain._backend, TorchBackend)
    trunk, sample = plain._backend.trunk, plain._pad(plain._tokenize(TEXTS))
    calls = _count_exports(monkeypatch)
    built: list[OrtBackend] = []
    errors: list[BaseException] = []

    def build() -> None:
        try:
            built.append(OrtBackend(trunk, sample, version=plain.model_version, int8=False, cache_dir=tmp_path))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=build) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(calls) == 1
    assert built[0].paths == built[1].paths
    first, second = (b.run(("plain",), *sample)[0] for b in built)
    np.testing.assert_allclose(first, second, atol=1e-6)
    np.testing.assert_allclose(first, plain.encode(TEXTS), atol=1e-5)  # padding does not change a row


# ---- settings ------------------------------------------------------------------------------------------------


def test_an_unknown_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"'torch', 'onnx' or 'onnx-int8'"):
        Settings(encoder_backend="tensorflow")
    monkeypatch.setenv("SWITCHBOARD_ENCODER_BACKEND", "onnx-fp16")
    with pytest.raises(ValidationError, match="encoder_backend"):
        Settings()
    monkeypatch.setenv("SWITCHBOARD_ENCODER_BACKEND", "onnx-int8")
    assert Settings().encoder_backend == "onnx-int8"
    with pytest.raises(ValueError, match="backend must be one of torch, onnx, onnx-int8"):
        Encoder(backend="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="encoder_threads"):
        Settings(encoder_threads=0)
