"""Tests of the all-MiniLM-L6-v2 encoder, on the real model (loaded once per session)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from classifiers.encoder import Encoder, default_model_dir

REPO_ROOT = Path(__file__).resolve().parents[2]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_embeddings_have_model_dimension_and_unit_length(encoder: Encoder) -> None:
    vectors = encoder.encode(["hello", "", "   ", "a somewhat longer comment about the canteen menu"])
    assert encoder.dim == 384
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_embeddings_match_the_sentence_transformers_recipe(encoder: Encoder) -> None:
    # Reference: SentenceTransformer(<model dir>).encode("This is a test sentence.")[:8], computed once with
    # sentence-transformers 6.2 on this model folder (Transformer -> mean Pooling -> Normalize). Any change
    # to tokenisation, pooling or normalisation moves these values by far more than the tolerance.
    reference = [0.08429647, 0.05795373, 0.00449334, 0.10582108, 0.00708343, -0.01784469, -0.01688803, -0.01522840]
    vector = encoder.encode(["This is a test sentence."])[0]
    np.testing.assert_allclose(vector[:8], reference, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(encoder: Encoder) -> None:
    a, paraphrase, unrelated = encoder.encode(
        [
            "The printer on the third floor is broken again.",
            "Third-floor printer has stopped working once more.",
            "What time does the summer party start?",
        ]
    )
    assert _cosine(a, paraphrase) > 0.6
    assert _cosine(a, paraphrase) > _cosine(a, unrelated) + 0.3


def test_encode_preserves_input_order_across_length_sorted_batches(
    encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lengths deliberately out of order, so that sorting by length reorders texts across batches of 3.
    texts = [("word " * n) + f"comment number {i}" for i, n in enumerate([40, 1, 25, 0, 60, 3, 12, 0, 33, 7, 2])]
    monkeypatch.setattr(encoder, "batch_size", 3)
    batched = encoder.encode(texts)
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_duplicate_texts_get_identical_embeddings(encoder: Encoder) -> None:
    vectors = encoder.encode(["same", "other", "same"])
    np.testing.assert_allclose(vectors[0], vectors[2], atol=1e-6)


def test_empty_input_gives_an_empty_matrix(encoder: Encoder) -> None:
    vectors = encoder.encode([])
    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


def test_long_text_is_truncated_not_rejected(encoder: Encoder) -> None:
    long_text = "The quick brown fox jumps over the lazy dog. " * 2000  # ~20k tokens, far over max_length
    longer_text = long_text + "Only this tail differs, and it lies beyond the truncation point."
    vectors = encoder.encode([long_text, longer_text])
    assert vectors.shape == (2, 384)
    assert np.isfinite(vectors).all()
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)


def test_a_single_string_is_not_mistaken_for_a_sequence_of_texts(encoder: Encoder) -> None:
    with pytest.raises(TypeError, match="single str"):
        encoder.encode("hello")
    with pytest.raises(TypeError, match="not str"):
        encoder.encode(["hello", None])  # type: ignore[list-item]


def test_concurrent_threads_get_their_own_embeddings(encoder: Encoder) -> None:
    texts = [f"thread {i} says something different about topic {i * 7}" for i in range(4)]
    expected = encoder.encode(texts)
    results: dict[int, np.ndarray] = {}

    def work(i: int) -> None:
        results[i] = encoder.encode([texts[i]] * 3)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(len(texts)):
        np.testing.assert_allclose(results[i], np.repeat(expected[i : i + 1], 3, axis=0), atol=1e-5)


def test_model_version_names_the_model_and_the_package_version(encoder: Encoder) -> None:
    assert encoder.base_version == "all-MiniLM-L6-v2@gt-0.1.0"
    # The heads' embeddings name the adapter when one is loaded (the committed one, by default).
    adapter = "" if encoder.adapter is None else f"+{encoder.adapter.version}"
    assert encoder.model_version == f"all-MiniLM-L6-v2@gt-0.1.0{adapter}"
    assert encoder.model_dir == default_model_dir()
    assert (default_model_dir() / "model.safetensors").is_file()


def test_a_model_folder_with_other_pooling_is_refused(tmp_path: Path) -> None:
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(ValueError, match="mean pooling"):
        Encoder(tmp_path)


def test_a_missing_model_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Encoder(tmp_path / "nope")


def test_model_loads_offline_quietly_and_not_at_import_time() -> None:
    # A fresh interpreter: importing the module must not import torch (nor load the model); building an
    # Encoder with the hub switched off works, emits no warning (-W error) and prints nothing.
    script = (
        "import sys\n"
        "import classifiers.encoder as e\n"
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules\n"
        "enc = e.Encoder()\n"
        "assert enc.encode(['offline']).shape == (1, 384)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent"}
    proc = subprocess.run(  # noqa: S603 -- fixed command line
        [sys.executable, "-W", "error", "-c", script],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr == ""
