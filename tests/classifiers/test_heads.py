"""The classification heads: the committed artefact, its card, calibrated outputs and the encoder check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifiers.encoder import Encoder
from classifiers.heads import (
    ARTEFACT_NAME,
    EncoderMismatch,
    HeadResult,
    Heads,
    HeadsError,
    HeadWeights,
    default_heads_dir,
    write_heads,
)
from classifiers.training import metrics

SHIPPED = ("sentiment", "offensive", "hate", "emotion", "needs_answer")


@pytest.fixture(scope="module")
def heads() -> Heads:
    return Heads.load()


@pytest.fixture(scope="module")
def card() -> dict[str, Any]:
    card: dict[str, Any] = json.loads((default_heads_dir() / "card.json").read_text(encoding="utf-8"))
    return card


def _rows(path: Path, rows: list[int]) -> tuple[str, list[str], list[str]]:
    data = path.read_bytes()
    lines = [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]
    return hashlib.sha256(data).hexdigest(), [lines[r]["text"] for r in rows], [lines[r]["label"] for r in rows]


def test_committed_heads_load_and_match_their_card_on_a_fixed_sample(
    heads: Heads, card: dict[str, Any], encoder: Encoder, data_dir: Path
) -> None:
    assert heads.names == SHIPPED
    assert heads.version == card["version"]
    assert heads.version.startswith(f"heads-{card['date'].replace('-', '')}-")
    assert heads.encoder_version == card["encoder"]["version"] == encoder.model_version
    assert (default_heads_dir() / ARTEFACT_NAME).stat().st_size < 1_000_000
    for name in heads.names:
        recorded = card["heads"][name]
        sample = recorded["fixed_sample"]
        digest, texts, labels = _rows(data_dir / sample["file"], sample["rows"])
        assert digest == sample["sha256"], f"{sample['file']} changed since the heads were trained: retrain"
        assert len(texts) == 200
        y = np.asarray([heads.labels[name].index(label) for label in labels], dtype=np.int64)
        p = heads.probabilities(encoder.encode_heads(texts), encoder_version=encoder.model_version)[name]
        k = len(heads.labels[name])
        score = metrics.score(sample["metric"], y, heads[name].decide(p), k)
        assert score == pytest.approx(sample["score"], abs=1e-6), name
        assert metrics.log_loss(p, y) == pytest.approx(sample["mean_log_loss"], abs=1e-4), name
        assert heads[name].temperature == recorded["temperature"]
        if "score_lexical" in sample:  # the head's lexical variant, used when the texts are passed in
            p_lexical = heads.probabilities(encoder.encode_heads(texts), texts=texts)[name]
            lexical = metrics.score(sample["metric"], y, heads[name].decide(p_lexical, lexical=True), k)
            assert lexical == pytest.approx(sample["score_lexical"], abs=1e-6), name


def test_committed_heads_read_the_committed_adapter(heads: Heads, encoder: Encoder, card: dict[str, Any]) -> None:
    adapter = card["encoder"].get("adapter")
    if adapter is None:
        pytest.skip("the committed heads read the plain embedding")
    assert encoder.adapter is not None
    assert encoder.adapter.version == adapter["version"]
    assert encoder.model_version == f"{encoder.base_version}+{adapter['version']}"
    assert adapter["bytes"] < 2_000_000
    assert heads.lexical == ("needs_answer",)
    # Heads fitted to the adapted embedding refuse the plain one (and so would heads of the plain one the
    # adapted embedding): a Pipeline over an encoder without the adapter fails at construction.
    with pytest.raises(EncoderMismatch):
        heads.check_encoder(encoder.base_version)


def test_probabilities_are_calibrated_distributions(heads: Heads, encoder: Encoder, card: dict[str, Any]) -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(50, heads.dim)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    texts = ["Great job everyone!", "", "Why is the wifi down again?", "lol", "Please fix the printer asap."]
    embeddings = np.concatenate([encoder.encode_heads(texts), noise])
    results = heads.predict(embeddings, encoder_version=encoder.model_version)
    assert len(results) == len(embeddings)
    for row in results:
        assert set(row) == set(heads.names)
        for name, result in row.items():
            assert isinstance(result, HeadResult)
            assert tuple(result.scores) == heads.labels[name]
            values = np.asarray(list(result.scores.values()))
            assert np.all((values >= 0) & (values <= 1))
            assert values.sum() == pytest.approx(1.0, abs=1e-9)
            decided = heads[name].decide(values[np.newaxis, :])[0]
            assert result.label == heads.labels[name][int(decided)]
            if heads[name].decision_weights is None:
                assert result.label == max(result.scores, key=lambda label: result.scores[label])
    # The card's calibration record, measured on val (which took no part in training or calibration): small
    # top-label ECE, a log loss temperature scaling did not worsen beyond noise, and mean probabilities that
    # match the label shares (no prior shift, as balanced class weights would cause).
    for name in heads.names:
        calibration = card["heads"][name]["calibration"]
        # 0.065: the emotion head's ECE is 0.060 on its 374 val rows (15 bins), i.e. within noise of it
        assert calibration["ece_val_after"] < 0.065
        assert calibration["log_loss_val_after"] <= calibration["log_loss_val_before"] + 0.01
        for label in heads.labels[name]:
            assert calibration["mean_probability_val"][label] == pytest.approx(
                calibration["frequency_val"][label], abs=0.05
            ), (name, label)


def test_thresholds_decide_binary_heads(heads: Heads, encoder: Encoder) -> None:
    embeddings = encoder.encode_heads(["When does the canteen open?"])
    p = heads.probabilities(embeddings)["needs_answer"][0, heads.labels["needs_answer"].index("needs_answer")]
    never = heads.predict(embeddings, thresholds={"needs_answer": 1.0} if p < 1.0 else {})[0]
    always = heads.predict(embeddings, thresholds={"needs_answer": 0.0})[0]
    assert always["needs_answer"].label == "needs_answer"
    assert never["needs_answer"].label == ("no_answer" if p < 1.0 else "needs_answer")
    with pytest.raises(HeadsError, match="not a binary head"):
        heads.predict(embeddings, thresholds={"sentiment": 0.5})
    with pytest.raises(HeadsError, match=r"\[0, 1\]"):
        heads.predict(embeddings, thresholds={"hate": 1.5})


def test_heads_refuse_embeddings_of_another_encoder_version(heads: Heads, encoder: Encoder) -> None:
    other = "all-MiniLM-L6-v2@sha256-000000000000"
    with pytest.raises(EncoderMismatch, match="retrain"):
        Heads.load(encoder_version=other)
    with pytest.raises(EncoderMismatch):
        heads.check_encoder(other)
    embeddings = encoder.encode_heads(["hello"])
    with pytest.raises(EncoderMismatch):
        heads.predict(embeddings, encoder_version=other)
    heads.check_encoder(encoder.model_version)  # the right one passes
    with pytest.raises(HeadsError, match="shape"):
        heads.predict(np.zeros((2, heads.dim + 1), dtype=np.float32))


@pytest.mark.parametrize(
    ("text", "head", "label"),
    [
        ("I love this, thank you!", "sentiment", "positive"),
        ("This update is terrible, everything is broken and nobody cares.", "sentiment", "negative"),
        ("When does the canteen open?", "needs_answer", "needs_answer"),
        ("Could you send me the slides from today's meeting?", "needs_answer", "needs_answer"),
        ("Thanks, I got it.", "needs_answer", "no_answer"),
        ("I'm so happy with the new office, great news!", "emotion", "joy"),
        ("Have a nice weekend, everyone.", "offensive", "not-offensive"),
        ("Have a nice weekend, everyone.", "hate", "not-hate"),
    ],
)
def test_obvious_sentences(heads: Heads, encoder: Encoder, text: str, head: str, label: str) -> None:
    result = heads.predict(encoder.encode_heads([text]))[0][head]
    assert result.label == label, result.scores


def test_missing_or_broken_artefacts_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"classifiers\.training\.train"):
        Heads.load(tmp_path)
    (tmp_path / ARTEFACT_NAME).write_bytes(b"not a zip")
    with pytest.raises(HeadsError, match="not a heads artefact"):
        Heads.load(tmp_path)


def _head(name: str, seed: int, labels: tuple[str, ...] = ("a", "b")) -> HeadWeights:
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(len(labels), 8)).astype(np.float32)
    b = rng.normal(size=len(labels)).astype(np.float32)
    return HeadWeights(name=name, labels=labels, layers=((w, b),), temperature=1.5, positive=labels[0])


def test_written_artefacts_round_trip_byte_identically(tmp_path: Path) -> None:
    weighted = HeadWeights(
        name="three",
        labels=("p", "q", "r"),
        layers=((np.eye(3, 8, dtype=np.float32), np.zeros(3, np.float32)),),
        temperature=1.0,
        decision_weights=(1.0, 1.0, 10.0),
    )
    heads = [_head("one", 1), _head("two", 2, ("x", "y")), weighted]
    first = write_heads(tmp_path / "a", heads, encoder_version="enc@1", date="2026-01-02").read_bytes()
    second = write_heads(tmp_path / "b", heads, encoder_version="enc@1", date="2026-01-02").read_bytes()
    assert first == second  # no zip timestamps: the same heads give the same version
    loaded = Heads.load(tmp_path / "a", encoder_version="enc@1")
    assert loaded.names == ("one", "two", "three")
    assert loaded.version == f"heads-20260102-{hashlib.sha256(first).hexdigest()[:8]}"
    assert loaded["three"].decision_weights == (1.0, 1.0, 10.0)
    assert loaded["one"].decision_weights is None
    x = np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32)
    for head in heads:
        np.testing.assert_array_equal(loaded.probabilities(x)[head.name], head.probabilities(x))
    # The decision weights decide: "r" wins unless another label is over ten times as probable.
    x = np.zeros((1, 8), np.float32)
    x[0, 0] = 2.0  # softmax([2, 0, 0]): p ~ (0.79, 0.11, 0.11); times (1, 1, 10) -> "r"
    result = loaded.predict(x)[0]["three"]
    assert result.label == "r"
    assert max(result.scores, key=lambda label: result.scores[label]) == "p"


def test_invalid_heads_are_refused() -> None:
    w, b = np.zeros((2, 8), np.float32), np.zeros(2, np.float32)
    with pytest.raises(HeadsError, match="temperature"):
        HeadWeights(name="h", labels=("a", "b"), layers=((w, b),), temperature=0.0)
    with pytest.raises(HeadsError, match="outputs"):
        HeadWeights(name="h", labels=("a", "b", "c"), layers=((w, b),), temperature=1.0)
    with pytest.raises(HeadsError, match="distinct"):
        HeadWeights(name="h", labels=("a", "a"), layers=((w, b),), temperature=1.0)
    with pytest.raises(HeadsError, match="decision weights"):
        HeadWeights(name="h", labels=("a", "b"), layers=((w, b),), temperature=1.0, decision_weights=(1.0, 0.0))
    with pytest.raises(HeadsError, match="float32"):
        HeadWeights(name="h", labels=("a", "b"), layers=((w.astype(np.float64), b),), temperature=1.0)
