"""Training and evaluation of the heads: end to end on a small subset, plus the pieces it is made of."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifiers.encoder import Encoder
from classifiers.heads import ARTEFACT_NAME, Heads
from classifiers.training import metrics
from classifiers.training.data import TASKS, load_task, rng_for, stratified_split
from classifiers.training.evaluate import evaluate, format_table
from classifiers.training.fit import deterministic, fit_linear, fit_temperature, logits
from classifiers.training.train import main as train_main
from classifiers.training.train import train
from service.settings import Settings

LIMIT = 120  # rows per split and task: enough to exercise every step, small enough for a test


def test_training_runs_end_to_end_on_a_subset(encoder: Encoder, data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    scores = train(data_dir, tmp_path / "a", limit=LIMIT, seed=0, encoder=encoder, cache_dir=cache)
    assert set(scores) == {t.name for t in TASKS}
    assert all(0.0 <= s <= 1.0 for s in scores.values())

    heads = Heads.load(tmp_path / "a", encoder_version=encoder.model_version)
    assert heads.names == tuple(t.name for t in TASKS if t.ship)
    card = json.loads((tmp_path / "a" / "card.json").read_text(encoding="utf-8"))
    assert card["version"] == heads.version
    assert card["limit"] == LIMIT
    assert "--limit 120 --seed 0" in card["command"]
    assert card["heads"]["needs_answer"]["data"]["sources"][0]["licence"].startswith("CC BY-NC-SA")
    assert not card["heads"]["workplace_sentiment"]["shipped"]
    assert card["heads"]["offensive"]["decision"]["rule"] == "argmax"  # binary heads: thresholds are settings
    for name in heads.names:
        head = card["heads"][name]
        assert head["val_score"] == scores[name]
        assert {"ece_val_before", "ece_val_after", "ece_calibration_split_before"} <= set(head["calibration"])
        assert len(head["fixed_sample"]["rows"]) == LIMIT  # val has LIMIT rows: the sample is all of them
    assert "## Heads" in (tmp_path / "a" / "card.md").read_text(encoding="utf-8")

    # Same seed, same data: byte-identical weights (the embeddings now come from the cache).
    train(data_dir, tmp_path / "b", limit=LIMIT, seed=0, encoder=encoder, cache_dir=cache)
    assert (tmp_path / "a" / ARTEFACT_NAME).read_bytes() == (tmp_path / "b" / ARTEFACT_NAME).read_bytes()

    rows = evaluate(data_dir, tmp_path / "a", encoder=encoder, cache_dir=cache, limit=LIMIT)
    by_method = {(r.task, r.method): r for r in rows}
    assert by_method[("sentiment", "head sentiment")].score == pytest.approx(scores["sentiment"])
    assert ("needs-answer", "rule: contains '?'") in by_method
    assert ("employee pros/cons", "head sentiment (neg vs pos)") in by_method
    table = format_table(rows)
    assert "65.8" in table
    assert "71.0" in table


def test_val_and_holdout_splits_are_seeded_and_disjoint(data_dir: Path) -> None:
    workplace = next(t for t in TASKS if t.name == "workplace_sentiment")
    first = load_task(workplace, data_dir, seed=0)
    again = load_task(workplace, data_dir, seed=0)
    other = load_task(workplace, data_dir, seed=1)
    np.testing.assert_array_equal(first.val.rows, again.val.rows)
    assert not np.array_equal(first.val.rows, other.val.rows)
    assert not set(first.val.rows.tolist()) & set(first.train[0].rows.tolist())
    assert len(first.val) == pytest.approx(0.1 * (len(first.val) + len(first.train[0])), abs=2)
    capped = load_task(next(t for t in TASKS if t.name == "needs_answer"), data_dir, seed=0)
    assert len(capped.train[0]) == 30_000


def test_the_data_dir_setting_is_the_shared_sibling_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_DATA_DIR", raising=False)
    project = Path(__file__).resolve().parents[2]
    assert Settings().data_dir == project.parent / "shared" / "data"
    monkeypatch.setenv("SWITCHBOARD_DATA_DIR", "/somewhere/else")
    assert Settings().data_dir == Path("/somewhere/else")


def test_train_help_says_where_the_data_comes_from(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        train_main(["--help"], data_dir=Path("/somewhere/else"))  # as `switchboard train --help` calls it
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--data-dir" in help_text
    assert "/somewhere/else, the data_dir setting (SWITCHBOARD_DATA_DIR;" in help_text


def test_stratified_split_keeps_class_proportions() -> None:
    labels = np.asarray([0] * 80 + [1] * 20, dtype=np.int64)
    rest, part = stratified_split(labels, [0.1], rng_for(0, "test"))
    assert sorted([*rest, *part]) == list(range(100))
    assert np.bincount(labels[part]).tolist() == [8, 2]


def test_metrics_match_hand_computed_values() -> None:
    y = np.asarray([0, 0, 0, 1, 1, 2], dtype=np.int64)
    p = np.asarray([0, 0, 1, 1, 2, 2], dtype=np.int64)
    # recalls 2/3, 1/2, 1; F1 per class: 0.8, 0.5, 2/3
    assert metrics.macro_recall(y, p, 3) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert metrics.macro_f1(y, p, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    confident = np.asarray([[1.0, 0.0], [0.0, 1.0]])
    assert metrics.expected_calibration_error(confident, np.asarray([0, 1])) == 0.0
    assert metrics.expected_calibration_error(confident, np.asarray([1, 0])) == 1.0
    threshold, value = metrics.best_threshold(
        np.asarray([0.1, 0.3, 0.35, 0.9]), np.asarray([0, 1, 1, 1]) == 1, "macro_f1"
    )
    assert 0.1 < threshold <= 0.3
    assert value == 1.0


def test_temperature_scaling_fixes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 16)).astype(np.float32)
    y = (x[:, 0] + rng.normal(scale=1.5, size=4000) > 0).astype(np.int64)  # noisy labels
    with deterministic():
        layers = fit_linear(x, y, 2, weight_decay=1e-4)
        raw = logits(layers, x) * 4.0  # an overconfident model
        temperature = fit_temperature(raw, y)
    assert temperature == pytest.approx(4.0, rel=0.1)
