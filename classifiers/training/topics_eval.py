"""Evaluation of the product's few-shot topic model (:class:`classifiers.topics.TopicModel`) on public intent data.

``python -m classifiers.training.topics_eval [--data-dir D] [--draws 5] [--seed 0] [--limit N] [--backend B]
[--tasks banking77 ...]`` prints a table (``--backend``: the encoder backend, default torch; ``--tasks``: some of the
three tasks only):

- **banking77** (77 intents, ``train.jsonl`` only): a seeded, stratified 20% is the evaluation set; 8 and 32
  examples per class are drawn from the rest as the topics' examples (topic name = label, no description);
  accuracy with ``other_threshold=-1`` (never "other"), mean ± std over ``--draws`` seeded draws.
- **it-tickets** (8 teams): a seeded, stratified 10% is held out (capped at 2,000 texts); accuracy with 8 and 32
  examples per class and with the whole remaining train as examples ("full train").
- **clinc150**: examples from the in-scope train rows (8, 32 per class, and all 100), evaluated on ``val.jsonl``
  (150 intents + ``oos``). ``other_threshold`` is tuned on val to maximise out-of-scope recall subject to
  in-scope accuracy >= 94% ("other" on an in-scope text counts as wrong); if 94% is out of reach even with no
  "other" at all, the threshold keeps in-scope accuracy at that maximum minus one point, and the row says so.
  Because tuning on val and scoring on val is optimistic, the table also gives the figure from tuning on one half
  of val (seeded, stratified) and scoring on the other half, averaged over both directions.

Every setting is run with two decision rules (:data:`RULES`): **k-NN**, the nearest-examples rule the product
used before (``classifier_weight=0``: a topic's score is the mean similarity of its k nearest examples, "other"
below 0.31), and **k-NN + LR**, the product's rule (that similarity plus ``classifier_weight`` times the topic's
log-probability under a logistic regression fitted on the examples; see :mod:`classifiers.topics`), each with k
(the number of nearest examples averaged per topic) in {1, 3, 5}. A rule comparison section puts the two rules
side by side at the product's k, and a k comparison section shows which k is best for each rule. On clinc150 both
compare OOS recall at one in-scope target that every compared model can reach (94%, or the lowest of their
no-"other" accuracies minus a point), tuned on one half of val and scored on the other, so that nothing is
credited with OOS recall bought by a lower in-scope accuracy.

The threshold of a fitted model only decides "other" (the best topic is the same for any threshold), so one
classification at ``other_threshold=-1`` gives the product's answer at every threshold: a text is "other" exactly
when its best topic's score is below the threshold.

Embeddings of the data files are cached in ``var/cache/topic-embeddings`` (gitignored) under the data file's
sha256, the encoder version and the rows selected, so that reruns only classify. The data is read from ``--data-dir``
(under ``switchboard evaluate-topics``: the ``data_dir`` setting, ``SWITCHBOARD_DATA_DIR``; see
:mod:`classifiers.training.data`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import re
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from classifiers.encoder import BACKENDS, Encoder
from classifiers.topics import (
    DEFAULT_CLASSIFIER_WEIGHT,
    DEFAULT_K,
    DEFAULT_OTHER_THRESHOLD,
    OTHER,
    TopicModel,
    TopicSpec,
)
from classifiers.training.data import add_data_dir_argument, read_jsonl
from classifiers.training.embeddings import encode_logged, save_atomic

__all__ = [
    "BLEND",
    "HELD_OUT",
    "KNN",
    "K_VALUES",
    "NO_OTHER",
    "PRODUCT_DEFAULT",
    "RULES",
    "RULE_TARGET",
    "SAME_TARGET",
    "TUNED",
    "Rule",
    "TopicEvalRow",
    "Tuning",
    "default_cache_dir",
    "evaluate_topics",
    "format_table",
    "main",
    "measure",
    "tune_threshold",
]

log = logging.getLogger(__name__)

K_VALUES = (1, 3, 5)
SHOTS = (8, 32)
IN_SCOPE_TARGET = 0.94
OOS_LABEL = "oos"
BANKING_HOLDOUT = 0.2
TICKETS_HOLDOUT = 0.1
TICKETS_EVAL_CAP = 2000

# Modes: how the "other" threshold of a row was set.
NO_OTHER = "no other (-1)"
PRODUCT_DEFAULT = "the rule's default"
TUNED = "tuned on val"
HELD_OUT = "tuned on ½ val, scored on ½"
SAME_TARGET = "k comparison: ½ / ½, same in-scope target for every k"
RULE_TARGET = "rule comparison: ½ / ½, same in-scope target for both rules"
CLINC_MODES = (NO_OTHER, PRODUCT_DEFAULT, TUNED, HELD_OUT, SAME_TARGET, RULE_TARGET)
COMPARISONS = (SAME_TARGET, RULE_TARGET)


@dataclass(frozen=True, slots=True)
class Rule:
    """A decision rule of :class:`TopicModel`: its ``classifier_weight`` and its default "other" threshold."""

    name: str
    classifier_weight: float
    default_threshold: float


KNN = Rule("k-NN", 0.0, 0.31)  # the product's rule and default until classifiers/training/TOPICS.md
BLEND = Rule("k-NN + LR", DEFAULT_CLASSIFIER_WEIGHT, DEFAULT_OTHER_THRESHOLD)  # the product's rule
RULES = (KNN, BLEND)

BANKING, TICKETS, CLINC = "banking77", "it-tickets", "clinc150"
TASKS = (BANKING, TICKETS, CLINC)


# ---- rows and the table ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicEvalRow:
    """One setting: a data set, how many examples per topic, k, and how "other" was decided.

    ``accuracy`` is plain accuracy (banking77, it-tickets) or in-scope accuracy (clinc150, "other" on an in-scope
    text counting as wrong); scores are fractions in [0, 1], means over ``draws`` with their standard deviation.
    """

    task: str
    rule: str  # the name of one of RULES
    examples: str  # examples per topic: "8/class", "32/class", "full train", "all (100/class)"
    k: int
    mode: str  # one of CLINC_MODES (NO_OTHER only, for banking77 and it-tickets)
    accuracy: float
    accuracy_std: float
    draws: int
    n_eval: int
    n_topics: int
    examples_per_topic: float  # mean number actually used (fewer than asked for when a class has fewer)
    threshold: float | None = None
    threshold_std: float | None = None
    oos_recall: float | None = None
    oos_recall_std: float | None = None
    reference: str = ""
    target: str = ""
    note: str = ""

    @property
    def config(self) -> tuple[str, str, str, str]:
        return (self.rule, self.task, self.examples, self.mode)


def _pct(mean: float | None, std: float | None, draws: int) -> str:
    if mean is None:
        return "-"
    if draws > 1 and std is not None:
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{100 * mean:.1f}"


def _threshold(row: TopicEvalRow) -> str:
    if row.threshold is None:
        return "-"
    if row.draws > 1 and row.threshold_std is not None and row.mode in (TUNED, HELD_OUT):
        return f"{row.threshold:.3f} ± {row.threshold_std:.3f}"
    return f"{row.threshold:.3f}" if row.mode in (TUNED, HELD_OUT) else f"{row.threshold:.2f}"


def _render(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    lines.extend(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in body)
    return lines


def _headline(row: TopicEvalRow) -> tuple[float, float]:
    """What k is chosen by: accuracy, or for clinc150 OOS recall at the in-scope target shared by every k."""
    if row.mode in COMPARISONS and row.oos_recall is not None:
        return (row.oos_recall, row.accuracy)
    return (row.accuracy, 0.0)


def _compared(row: TopicEvalRow) -> bool:
    return row.mode == SAME_TARGET or (row.mode == NO_OTHER and row.oos_recall is None)


def _result(row: TopicEvalRow) -> str:
    if row.oos_recall is not None and row.mode in COMPARISONS:
        return f"{100 * row.oos_recall:.1f} @ {100 * row.accuracy:.1f}"
    return f"{100 * row.accuracy:.1f}"


def _in_order(rows: Sequence[TopicEvalRow]) -> list[TopicEvalRow]:
    """Rows grouped by setting, then mode, then rule (in the order of RULES)."""
    settings: list[tuple[str, str]] = []
    for r in rows:
        if (r.task, r.examples) not in settings:
            settings.append((r.task, r.examples))
    rules = [rule.name for rule in RULES]

    def key(r: TopicEvalRow) -> tuple[int, int, int]:
        rule = rules.index(r.rule) if r.rule in rules else len(rules)
        return (settings.index((r.task, r.examples)), CLINC_MODES.index(r.mode), rule)

    return sorted(rows, key=key)


def format_table(rows: Sequence[TopicEvalRow]) -> str:
    """The rows at the product's k as a table, then the rule and k comparisons, notes and the recommended defaults."""
    out: list[str] = []
    main_k = DEFAULT_K if any(r.k == DEFAULT_K for r in rows) else min((r.k for r in rows), default=DEFAULT_K)
    header = ["task", "examples", "rule", "k", "other threshold", "mode", "eval n", "draws", "accuracy %"]
    header += ["OOS recall %", "reference", "target"]
    body = [
        [
            r.task,
            r.examples,
            r.rule,
            str(r.k),
            _threshold(r),
            r.mode + (" †" if r.note else ""),
            str(r.n_eval),
            str(r.draws),
            _pct(r.accuracy, r.accuracy_std, r.draws),
            _pct(r.oos_recall, r.oos_recall_std, r.draws),
            r.reference or "-",
            r.target or "-",
        ]
        for r in _in_order(rows)
        if r.k == main_k and r.mode not in COMPARISONS
    ]
    out.append(
        f"TopicModel (k={main_k}) with each rule ({BLEND.name} is the product's); for clinc150, accuracy is in-scope "
        "accuracy ('other' counts as wrong)"
    )
    out.extend(_render(header, body))
    if any(r.note for r in rows if r.k == main_k):
        out.append(
            f"† in-scope accuracy >= {100 * IN_SCOPE_TARGET:.0f}% is out of reach even with no 'other' (see the "
            "'no other' row): the threshold keeps in-scope accuracy at that maximum minus 1 point instead"
        )
        out.extend(
            f"  {r.task} {r.examples} {r.rule} k={r.k} {r.mode}: {r.note}"
            for r in _in_order(rows)
            if r.note and r.k == main_k and r.mode not in COMPARISONS
        )
    out.extend(_rule_comparison(rows, main_k))
    out.extend(_k_comparison(rows))
    out.append("")
    out.extend(_recommendation(rows))
    return "\n".join(out)


def _rule_comparison(rows: Sequence[TopicEvalRow], k: int) -> list[str]:
    """Each setting's headline figure for every rule at one k, and the change from the first rule to the last."""
    names = [rule.name for rule in RULES]
    by_key = {(r.rule, r.task, r.examples, r.mode): r for r in rows if r.k == k}
    lines: list[list[str]] = []
    for r in _in_order(rows):
        if r.k != k or r.rule != names[0] or r.mode not in (NO_OTHER, RULE_TARGET):
            continue
        found = [by_key.get((name, r.task, r.examples, r.mode)) for name in names]
        if any(f is None for f in found):
            continue
        present = [f for f in found if f is not None]
        label = f"{r.task} {r.examples}"
        if r.mode == RULE_TARGET:
            label += f" OOS recall ({r.target}%)"
        elif r.oos_recall is not None:
            label += " in-scope, no 'other'"
        cells = [_result(f) if f.mode == RULE_TARGET else _pct(f.accuracy, f.accuracy_std, f.draws) for f in present]
        first, last = present[0], present[-1]
        change = last.accuracy - first.accuracy
        if r.mode == RULE_TARGET:
            change = (last.oos_recall or 0.0) - (first.oos_recall or 0.0)
        lines.append([label, *cells, f"{100 * change:+.1f}"])
    if not lines:
        return []
    return [
        "",
        f"Rule comparison at k={k}: accuracy %; clinc150: in-scope accuracy % with no 'other', and OOS recall % @ "
        "in-scope accuracy % at one in-scope target both rules reach (tuned on one half of val, scored on the "
        f"other); change = {names[-1]} minus {names[0]}, in points",
        *_render(["setting", *names, "change"], lines),
    ]


def _k_comparison(rows: Sequence[TopicEvalRow]) -> list[str]:
    ks = sorted({r.k for r in rows})
    if len(ks) < 2:
        return []
    configs: list[tuple[str, str, str, str]] = []
    for r in _in_order(rows):
        if _compared(r) and r.config not in configs:
            configs.append(r.config)
    by_key = {(r.config, r.k): r for r in rows}
    body = []
    for config in configs:
        present = [by_key[(config, k)] for k in ks if (config, k) in by_key]
        best = max(present, key=_headline).k
        cells = []
        for k in ks:
            row = by_key.get((config, k))
            cells.append("-" if row is None else _result(row) + (" *" if k == best else ""))
        label = f"{config[0]}: {config[1]} {config[2]}"
        if config[3] == SAME_TARGET:
            label += f" ({present[0].target}%)"
        body.append([label, *cells, str(best)])
    return [
        "",
        "k comparison: accuracy %; clinc150: OOS recall % @ in-scope accuracy %, every k of a rule tuned for the "
        "same in-scope target on one half of val and scored on the other; * = best",
        *_render(["setting", *(f"k={k}" for k in ks), "best k"], body),
    ]


def _recommendation(rows: Sequence[TopicEvalRow]) -> list[str]:
    few = [r for r in rows if r.task == CLINC and r.examples == "8/class" and r.rule == BLEND.name]
    lines = [
        f"Recommended defaults of the product's rule ({BLEND.name}) for a taxonomy with ~8 examples per topic "
        f"(product now: k={DEFAULT_K}, other_threshold={DEFAULT_OTHER_THRESHOLD:.2f}, "
        f"classifier_weight={DEFAULT_CLASSIFIER_WEIGHT:g}), from clinc150 8/class:"
    ]
    compared = [r for r in few if r.mode == SAME_TARGET]
    best_k = max(compared, key=_headline).k if compared else DEFAULT_K
    for k in sorted({best_k, DEFAULT_K}):
        tuned = next((r for r in few if r.mode == TUNED and r.k == k), None)
        held = next((r for r in few if r.mode == HELD_OUT and r.k == k), None)
        default = next((r for r in few if r.mode == PRODUCT_DEFAULT and r.k == k), None)
        if tuned is None or tuned.threshold is None or held is None:
            continue
        text = (
            f"- k={k}: other_threshold {tuned.threshold:.2f} (tuned on val{' †' if tuned.note else ''}: "
            f"in-scope {100 * tuned.accuracy:.1f}%, OOS recall {100 * (tuned.oos_recall or 0):.1f}%; "
            f"tuned on ½ val, scored on the other ½: in-scope {100 * held.accuracy:.1f}%, "
            f"OOS recall {100 * (held.oos_recall or 0):.1f}%)"
        )
        if default is not None:
            text += (
                f"; at {BLEND.default_threshold:.2f}: in-scope {100 * default.accuracy:.1f}%, "
                f"OOS recall {100 * (default.oos_recall or 0):.1f}%"
            )
        lines.append(text)
    if compared:
        lines.append(f"- best k at 8/class: clinc150 k={best_k} (OOS recall at the same in-scope target)")
    for task in (BANKING, TICKETS):
        candidates = [
            r for r in rows if r.task == task and r.examples == "8/class" and r.rule == BLEND.name and _compared(r)
        ]
        if candidates:
            lines.append(f"- best k at 8/class: {task} k={max(candidates, key=_headline).k} (accuracy)")
    return lines


# ---- data -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Part:
    """Selected rows of one data file."""

    folder: str
    split: str
    digest: str  # sha256 of the file
    total: int  # rows in the file
    rows: NDArray[np.int64]  # selected line indices (non-blank lines), increasing
    texts: list[str]
    labels: list[str]


def _rng(seed: int, *words: str) -> np.random.Generator:
    """A generator fixed by ``seed`` and the words (stable across runs and Python hash seeds)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *(zlib.crc32(w.encode()) for w in words)]))


def _load(data_dir: Path, folder: str, split: str, *, limit: int | None, seed: int) -> _Part:
    data_hash, pairs = read_jsonl(data_dir / folder / f"{split}.jsonl")
    texts = [text for text, _ in pairs]
    labels = [label for _, label in pairs]
    rows = np.arange(len(texts), dtype=np.int64)
    if limit is not None and len(rows) > limit:
        rows = np.sort(_rng(seed, folder, split, "limit").choice(rows, size=limit, replace=False)).astype(np.int64)
    return _Part(
        folder=folder,
        split=split,
        digest=data_hash,
        total=len(texts),
        rows=rows,
        texts=[texts[int(r)] for r in rows],
        labels=[labels[int(r)] for r in rows],
    )


def _groups(labels: Sequence[str], among: NDArray[np.int64]) -> list[NDArray[np.int64]]:
    """The indices ``among`` grouped by label, groups in label order, each in the order of ``among``."""
    members: dict[str, list[int]] = {}
    for i in among:
        members.setdefault(labels[int(i)], []).append(int(i))
    return [np.asarray(members[label], dtype=np.int64) for label in sorted(members)]


def _stratified(
    labels: Sequence[str], among: NDArray[np.int64], fraction: float, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Split the indices ``among`` into (rest, the given fraction of every label), both sorted."""
    picked: list[int] = []
    for group in _groups(labels, among):
        picked.extend(int(i) for i in rng.permutation(group)[: round(fraction * len(group))])
    chosen = np.asarray(sorted(picked), dtype=np.int64)
    return np.setdiff1d(among, chosen).astype(np.int64), chosen


def _per_class(
    labels: Sequence[str], among: NDArray[np.int64], n: int | None, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Up to ``n`` random indices of every label among ``among`` (all of them when ``n`` is None)."""
    if n is None:
        return among
    picked: list[int] = []
    for group in _groups(labels, among):
        picked.extend(int(i) for i in rng.permutation(group)[:n])
    return np.asarray(sorted(picked), dtype=np.int64)


# ---- embeddings, cached -------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """``var/cache/topic-embeddings`` in the project folder (gitignored)."""
    return Path(__file__).resolve().parents[2] / "var" / "cache" / "topic-embeddings"


def _cache_path(cache_dir: Path, encoder: Encoder, part: _Part, rows_key: str) -> Path:
    version = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{encoder.base_version}-L{encoder.max_length}")
    return cache_dir / f"{part.folder}.{part.split}.{part.digest[:16]}.{version}.{rows_key}.npy"


def _read_cache(path: Path, rows: int, dim: int) -> NDArray[np.float32] | None:
    if not path.is_file():
        return None
    cached = np.load(path, allow_pickle=False)
    if cached.shape != (rows, dim) or cached.dtype != np.float32:
        log.warning("ignoring %s: shape %s, expected %s", path, cached.shape, (rows, dim))
        return None
    return np.asarray(cached, dtype=np.float32)


def _embed(encoder: Encoder, part: _Part, cache_dir: Path | None) -> NDArray[np.float32]:
    """The embeddings of ``part.texts`` in order, from the cache when there (a cache of the whole file serves any
    selection of its rows)."""
    everything = len(part.rows) == part.total
    rows_key = "all" if everything else f"{len(part.rows)}-{hashlib.sha256(part.rows.tobytes()).hexdigest()[:12]}"
    path: Path | None = None
    if cache_dir is not None:
        path = _cache_path(cache_dir, encoder, part, rows_key)
        cached = _read_cache(path, len(part.rows), encoder.dim)
        if cached is not None:
            return cached
        if not everything:
            whole = _read_cache(_cache_path(cache_dir, encoder, part, "all"), part.total, encoder.dim)
            if whole is not None:
                return np.ascontiguousarray(whole[part.rows])
    vectors = encode_logged(encoder, part.texts, f"{part.folder}/{part.split}")
    if path is not None:
        save_atomic(path, vectors)
    return vectors


# ---- the product's model ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Answers:
    """The product's answers at other_threshold=-1: best topic and its score per evaluated text."""

    labels: list[str]
    scores: NDArray[np.float64]
    n_topics: int
    examples_per_topic: float


def _classify_each_k(
    part: _Part,
    vectors: NDArray[np.float32],
    examples: NDArray[np.int64],
    queries: NDArray[np.float32],
    ks: Sequence[int],
    classifier_weight: float,
) -> dict[int, _Answers]:
    """Fit :class:`TopicModel` once on the rows ``examples`` of ``part`` (topic = label, no description) and
    classify ``queries`` with no "other" at every k in ``ks`` (k only changes classification, not the fit)."""
    by_topic: dict[str, list[str]] = {}
    lookup: dict[str, NDArray[np.float32]] = {}
    for i in examples:
        by_topic.setdefault(part.labels[int(i)], []).append(part.texts[int(i)])
        lookup[part.texts[int(i)]] = vectors[int(i)]
    topics = [TopicSpec(name, None, tuple(texts)) for name, texts in sorted(by_topic.items())]

    def embed(texts: list[str]) -> NDArray[np.float32]:  # the examples' cached embeddings, not the model again
        return np.stack([lookup[t] for t in texts]).astype(np.float32)

    model = TopicModel.fit(topics, embed, other_threshold=-1.0, k=ks[0], classifier_weight=classifier_weight)
    answers: dict[int, _Answers] = {}
    for k in ks:
        model.k = k
        results = model.classify(queries)
        assert all(r.label != OTHER for r in results)
        answers[k] = _Answers(
            labels=[r.label for r in results],
            scores=np.asarray([r.score for r in results], dtype=np.float64),
            n_topics=len(topics),
            examples_per_topic=len(examples) / max(1, len(topics)),
        )
    return answers


def _classify(
    part: _Part,
    vectors: NDArray[np.float32],
    examples: NDArray[np.int64],
    queries: NDArray[np.float32],
    k: int,
    classifier_weight: float = DEFAULT_CLASSIFIER_WEIGHT,
) -> _Answers:
    """The product's :class:`TopicModel` (by default its rule) fitted on the rows ``examples`` of ``part``, its
    answers for ``queries`` with no "other"."""
    return _classify_each_k(part, vectors, examples, queries, (k,), classifier_weight)[k]


def _accuracy(answers: _Answers, gold: Sequence[str]) -> float:
    return float(np.mean([a == g for a, g in zip(answers.labels, gold, strict=True)])) if gold else 0.0


# ---- threshold tuning (clinc150) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tuning:
    """A chosen other_threshold and what it gives on the data it was chosen (or measured) on."""

    threshold: float
    in_scope_accuracy: float
    oos_recall: float
    ceiling: float  # in-scope accuracy with no "other" (threshold -1)
    fallback: bool = False  # the in-scope target was out of reach: the threshold keeps ceiling - 1 point


def measure(
    scores: NDArray[np.float64], correct: NDArray[np.bool_], oos: NDArray[np.bool_], threshold: float
) -> Tuning:
    """In-scope accuracy and OOS recall when texts whose best score is below ``threshold`` are "other"."""
    kept = scores >= threshold
    n_in = int((~oos).sum())
    return Tuning(
        threshold=threshold,
        in_scope_accuracy=float((correct & kept & ~oos).sum() / n_in) if n_in else 0.0,
        oos_recall=float((~kept & oos).sum() / oos.sum()) if oos.any() else 0.0,
        ceiling=float((correct & ~oos).sum() / n_in) if n_in else 0.0,
    )


def tune_threshold(
    scores: NDArray[np.float64],
    correct: NDArray[np.bool_],
    oos: NDArray[np.bool_],
    *,
    min_in_scope: float = IN_SCOPE_TARGET,
) -> Tuning:
    """The threshold with the highest OOS recall whose in-scope accuracy is at least ``min_in_scope``.

    ``scores`` are the best topic's scores, ``correct`` whether the best topic is the gold one, ``oos`` which
    texts are out of scope. In-scope accuracy only falls and OOS recall only rises with the threshold, so the
    answer is the highest threshold meeting the constraint; it is a score of a correctly classified in-scope text
    (the highest threshold that still keeps it). If the constraint cannot be met even with no "other", the target
    becomes that ceiling minus one point (``fallback``).
    """
    n_in = int((~oos).sum())
    right = np.sort(scores[correct & ~oos])
    if n_in == 0 or len(right) == 0:
        return measure(scores, correct, oos, -1.0)
    ceiling = len(right) / n_in
    fallback = ceiling < min_in_scope
    target = ceiling - 0.01 if fallback else min_in_scope
    candidates = np.unique(right)
    kept = len(right) - np.searchsorted(right, candidates, side="left")  # correct in-scope texts >= candidate
    meets = kept / n_in >= target - 1e-12
    threshold = float(candidates[meets].max())
    result = measure(scores, correct, oos, threshold)
    return Tuning(result.threshold, result.in_scope_accuracy, result.oos_recall, result.ceiling, fallback)


# ---- the evaluation -----------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def _shots_name(n: int | None, everything: str) -> str:
    return everything if n is None else f"{n}/class"


def _accuracy_rows(
    task: str,
    part: _Part,
    vectors: NDArray[np.float32],
    pool: NDArray[np.int64],
    evaluation: NDArray[np.int64],
    settings: Sequence[tuple[int | None, int, str, str, str]],  # (shots, draws, name, reference, target)
    seed: int,
) -> list[TopicEvalRow]:
    gold = [part.labels[int(i)] for i in evaluation]
    queries = vectors[evaluation]
    rows: list[TopicEvalRow] = []
    for shots, draws, name, reference, target in settings:
        started = time.monotonic()
        per_k: dict[tuple[str, int], list[_Answers]] = {(rule.name, k): [] for rule in RULES for k in K_VALUES}
        for draw in range(draws):
            examples = _per_class(part.labels, pool, shots, _rng(seed, task, name, "draw", str(draw)))
            for rule in RULES:
                found = _classify_each_k(part, vectors, examples, queries, K_VALUES, rule.classifier_weight)
                for k, answers in found.items():
                    per_k[(rule.name, k)].append(answers)
        for (rule_name, k), answers_k in per_k.items():
            mean, std = _mean_std([_accuracy(a, gold) for a in answers_k])
            rows.append(
                TopicEvalRow(
                    task=task,
                    rule=rule_name,
                    examples=name,
                    k=k,
                    mode=NO_OTHER,
                    accuracy=mean,
                    accuracy_std=std,
                    draws=draws,
                    n_eval=len(evaluation),
                    n_topics=answers_k[0].n_topics,
                    examples_per_topic=float(np.mean([a.examples_per_topic for a in answers_k])),
                    threshold=-1.0,
                    reference=reference,
                    target=target,
                )
            )
        log.info(
            "%s %s: %d draw(s) x %d rules x k in %s in %.0f s",
            task,
            name,
            draws,
            len(RULES),
            K_VALUES,
            time.monotonic() - started,
        )
    return rows


def _banking(
    data_dir: Path, encoder: Encoder, cache_dir: Path | None, *, draws: int, seed: int, limit: int | None
) -> list[TopicEvalRow]:
    part = _load(data_dir, BANKING, "train", limit=limit, seed=seed)
    vectors = _embed(encoder, part, cache_dir)
    everything = np.arange(len(part.rows), dtype=np.int64)
    pool, evaluation = _stratified(part.labels, everything, BANKING_HOLDOUT, _rng(seed, BANKING, "holdout"))
    settings: list[tuple[int | None, int, str, str, str]] = [
        (8, draws, "8/class", "LR 83.5 (8/class)", "88"),
        (32, draws, "32/class", "", ""),
    ]
    return _accuracy_rows(BANKING, part, vectors, pool, evaluation, settings, seed)


def _tickets(
    data_dir: Path, encoder: Encoder, cache_dir: Path | None, *, draws: int, seed: int, limit: int | None
) -> list[TopicEvalRow]:
    part = _load(data_dir, TICKETS, "train", limit=limit, seed=seed)
    vectors = _embed(encoder, part, cache_dir)
    everything = np.arange(len(part.rows), dtype=np.int64)
    pool, held = _stratified(part.labels, everything, TICKETS_HOLDOUT, _rng(seed, TICKETS, "holdout"))
    evaluation = held
    if len(held) > TICKETS_EVAL_CAP:  # the rest of the held-out rows are used for nothing
        _, evaluation = _stratified(part.labels, held, TICKETS_EVAL_CAP / len(held), _rng(seed, TICKETS, "cap"))
    settings: list[tuple[int | None, int, str, str, str]] = [
        (8, draws, "8/class", "", ""),
        (32, draws, "32/class", "", ""),
        (None, 1, "full train", "LR 80.9 (all train)", "85"),
    ]
    return _accuracy_rows(TICKETS, part, vectors, pool, evaluation, settings, seed)


def _held_out(
    scores: NDArray[np.float64],
    correct: NDArray[np.bool_],
    oos: NDArray[np.bool_],
    halves: tuple[NDArray[np.int64], NDArray[np.int64]],
    min_in_scope: float,
) -> tuple[Tuning, int]:
    """Tune on one half, score on the other, both ways round: the mean of the two, and how many tunings fell back."""
    scored: list[Tuning] = []
    fallbacks = 0
    for tune_on, score_on in (halves, halves[::-1]):
        chosen = tune_threshold(scores[tune_on], correct[tune_on], oos[tune_on], min_in_scope=min_in_scope)
        fallbacks += chosen.fallback
        scored.append(measure(scores[score_on], correct[score_on], oos[score_on], chosen.threshold))
    mean = Tuning(
        threshold=float(np.mean([t.threshold for t in scored])),
        in_scope_accuracy=float(np.mean([t.in_scope_accuracy for t in scored])),
        oos_recall=float(np.mean([t.oos_recall for t in scored])),
        ceiling=float(np.mean([t.ceiling for t in scored])),
    )
    return mean, fallbacks


def _clinc(
    data_dir: Path, encoder: Encoder, cache_dir: Path | None, *, draws: int, seed: int, limit: int | None
) -> list[TopicEvalRow]:
    train = _load(data_dir, CLINC, "train", limit=limit, seed=seed)
    val = _load(data_dir, CLINC, "val", limit=limit, seed=seed)
    train_vectors = _embed(encoder, train, cache_dir)
    queries = _embed(encoder, val, cache_dir)
    in_scope = np.asarray([i for i, label in enumerate(train.labels) if label != OOS_LABEL], dtype=np.int64)
    oos = np.asarray([label == OOS_LABEL for label in val.labels], dtype=np.bool_)
    every_val = np.arange(len(val.rows), dtype=np.int64)
    halves = _stratified(val.labels, every_val, 0.5, _rng(seed, CLINC, "val halves"))
    reference = "LR: 62 OOS @ 95.5 in-scope (all train)"
    target = f">= 75 OOS @ >= {100 * IN_SCOPE_TARGET:.0f} in-scope"
    settings: list[tuple[int | None, int, str]] = [(8, draws, "8/class"), (32, draws, "32/class")]
    settings.append((None, 1, "all (100/class)"))
    rows: list[TopicEvalRow] = []
    for shots, n_draws, name in settings:
        started = time.monotonic()
        keys = [(rule.name, k) for rule in RULES for k in K_VALUES]
        answers: dict[tuple[str, int], list[_Answers]] = {key: [] for key in keys}
        found: dict[tuple[str, int], dict[str, list[Tuning]]] = {key: {m: [] for m in CLINC_MODES} for key in keys}
        fallbacks: dict[tuple[str, int], dict[str, int]] = {key: dict.fromkeys(CLINC_MODES, 0) for key in keys}
        targets: dict[tuple[str, int], dict[str, list[float]]] = {key: {m: [] for m in COMPARISONS} for key in keys}
        for draw in range(n_draws):
            examples = _per_class(train.labels, in_scope, shots, _rng(seed, CLINC, name, "draw", str(draw)))
            facts: dict[tuple[str, int], tuple[NDArray[np.float64], NDArray[np.bool_]]] = {}
            for rule in RULES:
                each_k = _classify_each_k(train, train_vectors, examples, queries, K_VALUES, rule.classifier_weight)
                for k, result in each_k.items():
                    answers[(rule.name, k)].append(result)
                    labels = zip(result.labels, val.labels, strict=True)
                    facts[(rule.name, k)] = (result.scores, np.asarray([a == g for a, g in labels], dtype=np.bool_))
            # For comparing k (rules): one in-scope target every k of the rule (both rules at the k) can reach, the
            # lowest ceiling minus a point, at most 94%.
            ceilings = {key: measure(scores, correct, oos, -1.0).ceiling for key, (scores, correct) in facts.items()}
            for (rule_name, k), (scores, correct) in facts.items():
                key = (rule_name, k)
                default = next(rule.default_threshold for rule in RULES if rule.name == rule_name)
                found[key][NO_OTHER].append(measure(scores, correct, oos, -1.0))
                found[key][PRODUCT_DEFAULT].append(measure(scores, correct, oos, default))
                tuned = tune_threshold(scores, correct, oos)
                found[key][TUNED].append(tuned)
                fallbacks[key][TUNED] += tuned.fallback
                held, fell = _held_out(scores, correct, oos, halves, IN_SCOPE_TARGET)
                found[key][HELD_OUT].append(held)
                fallbacks[key][HELD_OUT] += fell
                sharing = {
                    SAME_TARGET: [c for (r, _), c in ceilings.items() if r == rule_name],
                    RULE_TARGET: [c for (_, j), c in ceilings.items() if j == k],
                }
                for mode, shared in sharing.items():
                    common = min(IN_SCOPE_TARGET, min(shared) - 0.01)
                    targets[key][mode].append(common)
                    fair, _ = _held_out(scores, correct, oos, halves, common)
                    found[key][mode].append(fair)
        for key in keys:
            rule_name, k = key
            for mode, tunings in found[key].items():
                accuracy, accuracy_std = _mean_std([t.in_scope_accuracy for t in tunings])
                recall, recall_std = _mean_std([t.oos_recall for t in tunings])
                threshold, threshold_std = _mean_std([t.threshold for t in tunings])
                note = ""
                if fallbacks[key][mode]:
                    tries = n_draws * (2 if mode == HELD_OUT else 1)
                    ceiling = float(np.mean([t.ceiling for t in tunings]))
                    note = (
                        f"{100 * IN_SCOPE_TARGET:.0f}% unreachable in {fallbacks[key][mode]}/{tries} tuning(s), "
                        f"max {100 * ceiling:.1f}%"
                    )
                row_target = target if mode in (TUNED, HELD_OUT) else ""
                if mode in COMPARISONS:
                    row_target = f"in-scope >= {100 * float(np.mean(targets[key][mode])):.1f}"
                rows.append(
                    TopicEvalRow(
                        task=CLINC,
                        rule=rule_name,
                        examples=name,
                        k=k,
                        mode=mode,
                        accuracy=accuracy,
                        accuracy_std=accuracy_std,
                        draws=n_draws,
                        n_eval=len(val.rows) if mode in (NO_OTHER, PRODUCT_DEFAULT, TUNED) else len(val.rows) // 2,
                        n_topics=answers[key][0].n_topics,
                        examples_per_topic=float(np.mean([a.examples_per_topic for a in answers[key]])),
                        threshold=threshold,
                        threshold_std=threshold_std,
                        oos_recall=recall,
                        oos_recall_std=recall_std,
                        reference=reference if mode in (TUNED, HELD_OUT) and shots is None else "",
                        target=row_target,
                        note=note,
                    )
                )
        log.info(
            "%s %s: %d draw(s) x %d rules x k in %s in %.0f s",
            CLINC,
            name,
            n_draws,
            len(RULES),
            K_VALUES,
            time.monotonic() - started,
        )
    return rows


def evaluate_topics(
    data_dir: Path,
    encoder: Encoder,
    *,
    draws: int,
    seed: int,
    limit: int | None,
    cache_dir: Path | None = None,
    tasks: Sequence[str] | None = None,
) -> list[TopicEvalRow]:
    """Evaluate the product's :class:`TopicModel` on banking77, it-tickets and clinc150 (see the module docs).

    ``limit`` caps the rows read from each data file (a seeded subsample); ``cache_dir`` defaults to
    :func:`default_cache_dir`; ``tasks`` (default: all) names the tasks to run.
    """
    if draws < 1:
        raise ValueError("draws must be at least 1")
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data folder {data_dir} does not exist (set SWITCHBOARD_DATA_DIR or pass --data-dir)")
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    rows: list[TopicEvalRow] = []
    runners = {BANKING: _banking, TICKETS: _tickets, CLINC: _clinc}
    unknown = sorted(set(tasks or ()) - set(runners))
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose among {list(runners)}")
    for task, evaluate in runners.items():
        if tasks is not None and task not in tasks:
            continue
        rows.extend(evaluate(data_dir, encoder, cache, draws=draws, seed=seed, limit=limit))
    return rows


def main(argv: Sequence[str] | None = None, *, data_dir: Path | None = None) -> int:
    """The command line; ``data_dir`` is the default of ``--data-dir`` (the switchboard CLI passes its setting)."""
    parser = argparse.ArgumentParser(
        prog="python -m classifiers.training.topics_eval", description=__doc__.split("\n")[0]
    )
    add_data_dir_argument(parser, data_dir)
    parser.add_argument("--draws", type=int, default=5, help="seeded draws of the examples per setting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="cap every data file at this many rows (tests)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default: var/cache/...)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch", help="the encoder backend (default: torch)")
    parser.add_argument("--tasks", nargs="+", choices=[BANKING, TICKETS, CLINC], default=None, help="default: all")
    args = parser.parse_args(argv)
    data_dir = args.data_dir
    if not data_dir.is_dir():
        sys.stderr.write(f"data folder {data_dir} does not exist: set SWITCHBOARD_DATA_DIR or pass --data-dir\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    started = time.monotonic()
    encoder = Encoder(backend=args.backend)
    rows = evaluate_topics(
        data_dir,
        encoder,
        draws=args.draws,
        seed=args.seed,
        limit=args.limit,
        cache_dir=args.cache_dir,
        tasks=args.tasks,
    )
    sys.stdout.write(format_table(rows) + "\n")
    sys.stdout.write(f"\n({encoder.model_version}; data {data_dir}; {time.monotonic() - started:.0f} s)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
