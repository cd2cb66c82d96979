"""The labelled data of the heads: where it is, which folder feeds which head, and seeded splits of it.

The data lives outside the project (never copied into it), in the folder the caller passes: the setting
``data_dir`` (``SWITCHBOARD_DATA_DIR``, read by ``service.settings.Settings``; default :func:`default_data_dir`,
``shared/data`` next to the project folder) under the ``switchboard`` commands, ``--data-dir`` otherwise. Each
dataset folder in it holds ``train.jsonl`` (and usually ``val.jsonl``), one ``{"text": ..., "label": ...}`` object
per line; :data:`TASKS` says which folder feeds which head.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "TASKS",
    "DataMissing",
    "Examples",
    "Source",
    "Task",
    "TaskData",
    "add_data_dir_argument",
    "default_data_dir",
    "load_task",
    "rng_for",
    "stratified_split",
]

Metric = Literal["macro_recall", "macro_f1"]


class DataMissing(FileNotFoundError):
    """The data folder (or one of its files) is not there."""


def default_data_dir() -> Path:
    """``shared/data`` beside the project folder (``../shared/data``): the default of the ``data_dir`` setting."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def add_data_dir_argument(parser: argparse.ArgumentParser, data_dir: Path | None) -> None:
    """``--data-dir``, defaulting to ``data_dir`` (what the ``switchboard`` commands pass: the ``data_dir`` setting)
    or, run as ``python -m``, to :func:`default_data_dir`; its help says which."""
    if data_dir is not None:
        source = f"{data_dir}, the data_dir setting (SWITCHBOARD_DATA_DIR; unset: ../shared/data beside the project)"
    else:
        source = f"{default_data_dir()}, ../shared/data beside the project (the switchboard commands read "
        source += "SWITCHBOARD_DATA_DIR instead)"
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=data_dir if data_dir is not None else default_data_dir(),
        help=f"the labelled data: one folder per dataset, each with train.jsonl (and val.jsonl) of "
        f'{{"text", "label"}} lines; which feeds which head: classifiers/training/data.py (default: {source})',
    )


@dataclass(frozen=True, slots=True)
class Source:
    """A data folder; ``label_map`` renames its labels to the head's (``None``: the same names)."""

    folder: str
    licence: str
    origin: str
    label_map: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Task:
    """One head: its data, label names, model-selection metric and (binary heads) the positive label."""

    name: str
    source: Source
    labels: tuple[str, ...]
    metric: Metric
    positive: str | None = None
    train_cap: int | None = None  # seeded subsample of train, to bound the embedding time
    holdout_fraction: float | None = None  # no val.jsonl: this seeded part of train.jsonl is the val split
    extra_train: tuple[Source, ...] = ()
    notes: tuple[str, ...] = ()
    ship: bool = True  # False: trained and reported in the card, but not written into the artefact


_TWEETEVAL = "TweetEval adds no restriction; the underlying SemEval task terms and Twitter's terms apply"
_TWEETEVAL_ORIGIN = "cardiffnlp/tweeteval (Barbieri et al. 2020), official train / validation splits"

TASKS: tuple[Task, ...] = (
    Task(
        name="sentiment",
        source=Source("tweeteval-sentiment", _TWEETEVAL, _TWEETEVAL_ORIGIN),
        labels=("negative", "neutral", "positive"),
        metric="macro_recall",
    ),
    Task(
        name="offensive",
        source=Source("tweeteval-offensive", _TWEETEVAL, _TWEETEVAL_ORIGIN),
        labels=("offensive", "not-offensive"),
        metric="macro_f1",
        positive="offensive",
    ),
    Task(
        name="hate",
        source=Source("tweeteval-hate", _TWEETEVAL, _TWEETEVAL_ORIGIN),
        labels=("hate", "not-hate"),
        metric="macro_f1",
        positive="hate",
    ),
    Task(
        name="emotion",
        source=Source("tweeteval-emotion", _TWEETEVAL, _TWEETEVAL_ORIGIN),
        labels=("anger", "joy", "optimism", "sadness"),
        metric="macro_f1",
    ),
    Task(
        name="needs_answer",
        source=Source(
            "dailydialog-needs-answer",
            "CC BY-NC-SA 4.0 (non-commercial, share-alike)",
            "DailyDialog (Li et al., IJCNLP 2017), official train / validation splits; acts question, directive "
            "-> needs_answer, inform, commissive -> no_answer",
        ),
        labels=("needs_answer", "no_answer"),
        metric="macro_f1",
        positive="needs_answer",
        train_cap=30_000,
        notes=(
            "Trained on DailyDialog, licensed CC BY-NC-SA 4.0 (non-commercial, share-alike): using this head "
            "inside a company is arguably commercial use. Keep a path that does not depend on it (e.g. the "
            "'contains ?' rule).",
        ),
    ),
    Task(
        name="workplace_sentiment",
        source=Source(
            "employee-pros-cons",
            "GPL-2 (package DESCRIPTION of vicencfernandez/HRdatasets)",
            "vicencfernandez/HRdatasets raw-data/employees_opinion_ext.csv ('like' -> positive, 'dislike' -> negative)",
        ),
        labels=("positive", "negative"),
        metric="macro_f1",
        positive="negative",
        holdout_fraction=0.1,
        ship=False,
        notes=(
            "Evaluated, not shipped: the product's heads are the five above, and this one would be fitted to "
            "GPL-2 data (see licence). Its score is in card.json; `--heads` with `--ship-all` builds an artefact "
            "that includes it.",
            "Trained on employee-pros-cons, whose package is licensed GPL-2; whether weights fitted to it are a "
            "derivative work is unsettled: check before shipping this head in a non-GPL product.",
            "No official validation split: 'val' is a seeded, stratified 10% of train.jsonl (rows, not reviews: "
            "the pros and the cons of one review can fall on both sides).",
        ),
    ),
)

STORMFRONT = Source(
    "stormfront-hate",
    "CC BY-SA 3.0 ES",
    "Vicomtech/hate-speech-dataset (Stormfront posts), labels hate/noHate -> hate/not-hate",
    label_map={"hate": "hate", "noHate": "not-hate"},
)


def rng_for(seed: int, *words: str) -> np.random.Generator:
    """A generator determined by ``seed`` and the words (stable across runs, platforms and Python hashes)."""
    return np.random.default_rng(np.random.SeedSequence([seed, *(zlib.crc32(w.encode()) for w in words)]))


@dataclass(frozen=True, slots=True)
class Examples:
    """Some rows of one data file: their texts and label indices (into the task's ``labels``)."""

    folder: str
    split: str  # the file: "train" or "val"
    file_sha256: str
    rows: NDArray[np.int64]  # line numbers in the file, increasing
    texts: list[str]
    labels: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def cache_key(self) -> str:
        """Names these texts: the file's content hash and the selected rows."""
        rows = hashlib.sha256(self.rows.astype("<i8").tobytes()).hexdigest()[:12]
        return f"{self.folder}.{self.split}.{self.file_sha256[:16]}.{len(self.rows)}-{rows}"


@dataclass(frozen=True, slots=True)
class TaskData:
    task: Task
    train: list[Examples]  # the task's own train rows first, then any extra sources
    val: Examples
    files: dict[str, str] = field(default_factory=dict)  # "folder/file" -> sha256


def read_jsonl(path: Path) -> tuple[str, list[tuple[str, str]]]:
    """The file's sha256 and its (text, label) pairs; DataMissing if it is not there."""
    if not path.is_file():
        raise DataMissing(f"{path} is missing (data folder: set SWITCHBOARD_DATA_DIR or pass --data-dir)")
    data = path.read_bytes()
    pairs: list[tuple[str, str]] = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not isinstance(label, str):
            raise ValueError(f"{path}:{number}: expected string 'text' and 'label'")
        pairs.append((text, label))
    return hashlib.sha256(data).hexdigest(), pairs


def _examples(
    folder: str,
    split: str,
    digest: str,
    pairs: Sequence[tuple[str, str]],
    rows: NDArray[np.int64],
    labels: tuple[str, ...],
    label_map: Mapping[str, str] | None,
) -> Examples:
    index = {name: i for i, name in enumerate(labels)}
    ids: list[int] = []
    for r in rows:
        raw = pairs[int(r)][1]
        mapped = label_map[raw] if label_map is not None and raw in label_map else raw
        if mapped not in index:
            raise ValueError(f"{folder}/{split}.jsonl row {int(r)}: unknown label {raw!r} (expected {labels})")
        ids.append(index[mapped])
    return Examples(
        folder=folder,
        split=split,
        file_sha256=digest,
        rows=rows,
        texts=[pairs[int(r)][0] for r in rows],
        labels=np.asarray(ids, dtype=np.int64),
    )


def _subsample(rows: NDArray[np.int64], n: int | None, rng: np.random.Generator) -> NDArray[np.int64]:
    if n is None or len(rows) <= n:
        return rows
    return np.sort(rng.choice(rows, size=n, replace=False)).astype(np.int64)


def stratified_split(
    labels: NDArray[np.int64], fractions: Sequence[float], rng: np.random.Generator
) -> list[NDArray[np.int64]]:
    """Split ``range(len(labels))`` into ``len(fractions) + 1`` parts: the given fractions of every class, and the
    rest first. Each part is sorted. A class with enough examples gets at least one in every part."""
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        sizes = [round(f * len(members)) for f in fractions]
        if len(members) > len(fractions):
            sizes = [max(1, s) for s in sizes]
        begin = 0
        for p, size in enumerate(sizes, start=1):
            parts[p].extend(int(i) for i in members[begin : begin + size])
            begin += size
        parts[0].extend(int(i) for i in members[begin:])
    return [np.asarray(sorted(p), dtype=np.int64) for p in parts]


def load_task(task: Task, data_dir: Path, *, seed: int, limit: int | None = None, extra: bool = True) -> TaskData:
    """The task's train and val examples.

    ``seed`` fixes the hold-out split (tasks without ``val.jsonl``) and the subsamples (``train_cap``,
    ``limit``); ``limit`` caps every part (train, val, extra sources) at that many rows.
    """
    if not data_dir.is_dir():
        raise DataMissing(f"data folder {data_dir} does not exist (set SWITCHBOARD_DATA_DIR or pass --data-dir)")
    folder = data_dir / task.source.folder
    files: dict[str, str] = {}
    digest, pairs = read_jsonl(folder / "train.jsonl")
    files[f"{task.source.folder}/train.jsonl"] = digest
    all_rows = np.arange(len(pairs), dtype=np.int64)
    if task.holdout_fraction is not None:
        everything = _examples(task.source.folder, "train", digest, pairs, all_rows, task.labels, None)
        train_part, val_part = stratified_split(
            everything.labels, [task.holdout_fraction], rng_for(seed, task.name, "holdout")
        )
        train_rows, val_rows = all_rows[train_part], all_rows[val_part]
        val_digest, val_pairs, val_split = digest, pairs, "train"
    else:
        train_rows = all_rows
        val_digest, val_pairs = read_jsonl(folder / "val.jsonl")
        files[f"{task.source.folder}/val.jsonl"] = val_digest
        val_rows = np.arange(len(val_pairs), dtype=np.int64)
        val_split = "val"
    train_rows = _subsample(train_rows, task.train_cap, rng_for(seed, task.name, "cap"))
    train_rows = _subsample(train_rows, limit, rng_for(seed, task.name, "limit", "train"))
    val_rows = _subsample(val_rows, limit, rng_for(seed, task.name, "limit", "val"))
    train = [_examples(task.source.folder, "train", digest, pairs, train_rows, task.labels, None)]
    val = _examples(task.source.folder, val_split, val_digest, val_pairs, val_rows, task.labels, None)
    if extra:
        for source in task.extra_train:
            extra_digest, extra_pairs = read_jsonl(data_dir / source.folder / "train.jsonl")
            files[f"{source.folder}/train.jsonl"] = extra_digest
            rows = _subsample(
                np.arange(len(extra_pairs), dtype=np.int64), limit, rng_for(seed, task.name, source.folder)
            )
            train.append(
                _examples(source.folder, "train", extra_digest, extra_pairs, rows, task.labels, source.label_map)
            )
    return TaskData(task=task, train=train, val=val, files=files)
