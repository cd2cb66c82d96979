"""Evaluate the committed heads on the val splits and print a table next to the published reference numbers.

    python -m classifiers.training.evaluate [--data-dir DIR] [--heads-dir classifiers/artefacts/heads]

The baselines are the data sets' published reference points (frozen all-MiniLM-L6-v2 + logistic regression,
measured on the held-back official *test* splits) and the targets the scores the product aims for; the scores
here are on *val* (employee-pros-cons: the seeded 10% of train held out at training time), so compare with care.
The "contains ?" rule is scored on the same DailyDialog val turns as the needs_answer head.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifiers.encoder import Encoder
from classifiers.heads import Heads, default_heads_dir
from classifiers.training import metrics
from classifiers.training.data import TASKS, Task, add_data_dir_argument, load_task
from classifiers.training.embeddings import default_cache_dir, embed

__all__ = [
    "REFERENCES",
    "EvalRow",
    "evaluate",
    "format_table",
    "main",
    "question_mark_rule",
    "sentiment_head_on_workplace",
]


@dataclass(frozen=True, slots=True)
class EvalRow:
    task: str
    method: str  # the head, or the rule, that produced the predictions
    metric: str
    split: str
    n: int
    score: float  # in [0, 1]
    baseline: float | None  # published reference, in percent, on the official test split
    target: float | None  # in percent


# task -> (baseline, target), in percent: the published reference point and the product's aim.
REFERENCES: dict[str, tuple[float, float]] = {
    "sentiment": (65.8, 71.0),
    "offensive": (72.0, 78.0),
    "hate": (47.6, 55.0),
    "emotion": (68.3, 75.0),
    "employee pros/cons": (81.8, 88.0),
    "needs-answer": (85.9, 90.0),
}

_TASK_TITLE = {
    "sentiment": "sentiment",
    "offensive": "offensive",
    "hate": "hate",
    "emotion": "emotion",
    "needs_answer": "needs-answer",
    "workplace_sentiment": "employee pros/cons",
}

_METRIC = {"macro_recall": "macro-recall", "macro_f1": "macro-F1"}


def _row(task_title: str, method: str, metric: str, split: str, n: int, score: float) -> EvalRow:
    baseline, target = REFERENCES.get(task_title, (None, None))
    return EvalRow(task_title, method, metric, split, n, score, baseline, target)


def _split_name(task: Task) -> str:
    return f"{task.source.folder} {'held-out 10%' if task.holdout_fraction is not None else 'val'}"


def evaluate(
    data_dir: Path,
    heads_dir: Path,
    *,
    encoder: Encoder | None = None,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    limit: int | None = None,
) -> list[EvalRow]:
    """Score the heads in ``heads_dir`` on every task's val split, plus the comparisons of the table.

    Heads that were trained but not shipped (in ``card.json`` only) get a row with the score the card records.
    ``limit`` scores a seeded subsample of at most that many val rows per task (quick checks only).
    """
    encoder = encoder if encoder is not None else Encoder(backend="torch")
    heads = Heads.load(heads_dir, encoder_version=encoder.model_version)
    card_file = heads_dir / "card.json"
    card: dict[str, Any] = json.loads(card_file.read_text(encoding="utf-8")) if card_file.is_file() else {}
    seed = int(card.get("seed", 0))
    cache = (cache_dir if cache_dir is not None else default_cache_dir()) if use_cache else None
    rows: list[EvalRow] = []
    for task in TASKS:
        title, split = _TASK_TITLE[task.name], _split_name(task)
        metric = _METRIC[task.metric]
        uses_sentiment_head = task.name == "workplace_sentiment" and "sentiment" in heads.names
        if task.name not in heads.names and task.name != "needs_answer" and not uses_sentiment_head:
            continue
        val = load_task(task, data_dir, seed=seed, limit=limit, extra=False).val
        if task.name == "needs_answer":
            value = question_mark_rule(val.texts, val.labels, task.labels)
            rows.append(_row(title, "rule: contains '?'", "macro-F1", split, len(val), value))
        if task.name not in heads.names and not uses_sentiment_head:
            continue
        p = heads.probabilities(embed(encoder, val, cache))
        if task.name in heads.names:
            value = metrics.score(task.metric, val.labels, heads[task.name].decide(p[task.name]), len(task.labels))
            rows.append(_row(title, f"head {task.name}", metric, split, len(val), value))
        else:
            recorded = card.get("heads", {}).get(task.name)
            if recorded is not None and "val_score" in recorded:
                method = f"head {task.name} (not shipped: card.json)"
                rows.append(_row(title, method, metric, split, int(recorded["counts"]["val"]), recorded["val_score"]))
        if uses_sentiment_head:
            value = sentiment_head_on_workplace(p["sentiment"], heads.labels["sentiment"], val.labels, task.labels)
            rows.append(_row(title, "head sentiment (neg vs pos)", "macro-F1", split, len(val), value))
    return rows


def question_mark_rule(texts: Sequence[str], y: NDArray[np.int64], labels: Sequence[str]) -> float:
    """Macro-F1 of the rule "needs an answer when it contains a question mark"."""
    positive, negative = list(labels).index("needs_answer"), list(labels).index("no_answer")
    predicted = np.asarray([positive if "?" in t else negative for t in texts], dtype=np.int64)
    return metrics.macro_f1(y, predicted, len(labels))


def sentiment_head_on_workplace(
    p: NDArray[np.float64],
    sentiment_labels: Sequence[str],
    y: NDArray[np.int64],
    workplace_labels: Sequence[str],
) -> float:
    """Macro-F1 on positive/negative data of the 3-way sentiment head: the likelier of negative and positive
    (neutral ignored)."""
    negative = p[:, list(sentiment_labels).index("negative")]
    positive = p[:, list(sentiment_labels).index("positive")]
    chosen = np.where(
        positive >= negative, list(workplace_labels).index("positive"), list(workplace_labels).index("negative")
    )
    return metrics.macro_f1(y, chosen.astype(np.int64), len(workplace_labels))


def format_table(rows: Sequence[EvalRow]) -> str:
    """A plain-text table: one line per row, scores and references in percent."""
    header = ("task", "method", "metric", "split", "n", "score", "baseline", "target")
    body = [
        (
            r.task,
            r.method,
            r.metric,
            r.split,
            f"{r.n:,}",
            f"{100 * r.score:.1f}",
            "-" if r.baseline is None else f"{r.baseline:.1f}",
            "-" if r.target is None else f"{r.target:.1f}",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = {4, 5, 6, 7}

    def render(line: Sequence[str]) -> str:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True))]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    footer = (
        "score: on val (employee pros/cons: the seeded 10% of train held out at training); baseline (frozen "
        "MiniLM + LR, published) and target (the aim): on the official test splits."
    )
    return "\n".join([render(header), rule, *(render(line) for line in body), "", footer])


def main(argv: Sequence[str] | None = None, *, data_dir: Path | None = None) -> int:
    """The command line; ``data_dir`` is the default of ``--data-dir`` (the switchboard CLI passes its setting)."""
    parser = argparse.ArgumentParser(prog="python -m classifiers.training.evaluate", description=__doc__.split("\n")[0])
    add_data_dir_argument(parser, data_dir)
    parser.add_argument(
        "--heads-dir", type=Path, default=None, help="default: the committed classifiers/artefacts/heads"
    )
    parser.add_argument("--no-cache", action="store_true", help="do not read or write cached embeddings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    rows = evaluate(
        args.data_dir,
        args.heads_dir if args.heads_dir is not None else default_heads_dir(),
        use_cache=not args.no_cache,
    )
    sys.stdout.write(format_table(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
