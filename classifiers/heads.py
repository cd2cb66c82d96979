"""Classification heads over the shared sentence embedding: sentiment, offensive, hate, emotion, needs-answer, ...

Every head is a small feed-forward net (in practice a multinomial logistic regression: one linear layer) on the
384-d unit-length all-MiniLM-L6-v2 embedding, followed by temperature scaling, so that its softmax outputs are
calibrated probabilities. All heads share one encoder pass: the service embeds a batch once and calls
:meth:`Heads.predict` on the embeddings. Inference is plain numpy; ``torch`` is needed only to train.

The artefact is one ``heads.npz`` (arrays per head: ``<name>/w0``, ``<name>/b0``, ... float32 layers,
``<name>/temperature``, ``<name>/labels``, optionally ``<name>/decision_weights`` and a lexical variant
(``<name>/lexical_w``, ``lexical_b``, ``lexical_temperature``: a linear layer on the embedding followed by
:data:`classifiers.lexical.FEATURES`, used when :meth:`Heads.predict` gets the texts); plus ``meta``, a JSON string
with the format, the encoder version the heads were trained on, the training date and the head order) next to
``card.md`` / ``card.json``, the model card written by ``python -m classifiers.training.train``. The committed
artefact ships as package data in ``classifiers/artefacts/heads``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from classifiers.npz import ORT_INT8_SUFFIX, load_artefact, write_npz

__all__ = [
    "ARTEFACT_NAME",
    "EncoderMismatch",
    "HeadResult",
    "HeadWeights",
    "Heads",
    "HeadsError",
    "LexicalVariant",
    "default_heads_dir",
    "write_heads",
]

ARTEFACT_NAME: Final = "heads.npz"
FORMAT: Final = "switchboard-heads/1"


class HeadsError(ValueError):
    """The heads artefact is unreadable or inconsistent, or the input does not fit it."""


class EncoderMismatch(HeadsError):
    """The heads were trained on the embeddings of another encoder: their outputs would be meaningless."""


def default_heads_dir() -> Path:
    """The committed artefact folder: ``classifiers/artefacts/heads`` (package data)."""
    return Path(__file__).resolve().parent / "artefacts" / "heads"


@dataclass(frozen=True, slots=True)
class HeadResult:
    """One head's verdict on one text: the chosen label and the calibrated probability of every label."""

    label: str
    scores: dict[str, float]


@dataclass(frozen=True, slots=True)
class LexicalVariant:
    """A head's variant that also reads surface features of the text (:func:`classifiers.lexical.lexical_features`):
    one linear layer ``w`` of shape ``(len(labels), dim + len(features))`` on the embedding followed by the
    features, then ``temperature``. Used when the caller passes the texts; the plain head otherwise."""

    features: tuple[str, ...]
    w: NDArray[np.float32]
    b: NDArray[np.float32]
    temperature: float
    decision_weights: tuple[float, ...] | None = None


@dataclass(frozen=True, slots=True)
class HeadWeights:
    """The parameters of one head: ``layers`` are ``(w, b)`` with ``w`` of shape ``(out, in)``; ReLU between
    layers; the logits of the last layer are divided by ``temperature`` before the softmax."""

    name: str
    labels: tuple[str, ...]
    layers: tuple[tuple[NDArray[np.float32], NDArray[np.float32]], ...]
    temperature: float
    positive: str | None = None  # binary heads: the label a decision threshold applies to
    # The label is argmax(probabilities * decision_weights); None: plain argmax. Training sets 1 / (class
    # frequency) where that decision scores better on the task's macro metric ("prior-corrected" argmax).
    decision_weights: tuple[float, ...] | None = None
    lexical: LexicalVariant | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise HeadsError(f"invalid head name {self.name!r}")
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise HeadsError(f"head {self.name}: needs at least two distinct labels, got {self.labels}")
        if self.positive is not None and (len(self.labels) != 2 or self.positive not in self.labels):
            raise HeadsError(f"head {self.name}: positive label {self.positive!r} needs a binary head with it")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise HeadsError(f"head {self.name}: temperature must be positive, got {self.temperature}")
        if not self.layers:
            raise HeadsError(f"head {self.name}: no layers")
        width = self.layers[0][0].shape[1] if self.layers[0][0].ndim == 2 else -1
        for i, (w, b) in enumerate(self.layers):
            if w.ndim != 2 or b.shape != (w.shape[0],) or w.shape[1] != width:
                raise HeadsError(f"head {self.name}: layer {i} has shapes {w.shape}, {b.shape}")
            if w.dtype != np.float32 or b.dtype != np.float32 or not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise HeadsError(f"head {self.name}: layer {i} must hold finite float32 values")
            width = w.shape[0]
        if width != len(self.labels):
            raise HeadsError(f"head {self.name}: {width} outputs for {len(self.labels)} labels")
        weights = self.decision_weights
        if weights is not None and (len(weights) != len(self.labels) or not all(0 < v < np.inf for v in weights)):
            raise HeadsError(f"head {self.name}: decision weights must be {len(self.labels)} positive numbers")
        if self.lexical is not None:
            lex = self.lexical
            from classifiers.lexical import FEATURES

            if lex.features != FEATURES:
                raise HeadsError(f"head {self.name}: lexical features {lex.features} are not this version's {FEATURES}")
            if lex.w.shape != (len(self.labels), self.dim + len(lex.features)) or lex.b.shape != (len(self.labels),):
                raise HeadsError(f"head {self.name}: lexical variant has shapes {lex.w.shape}, {lex.b.shape}")
            if lex.w.dtype != np.float32 or lex.b.dtype != np.float32 or not np.isfinite(lex.w).all():
                raise HeadsError(f"head {self.name}: lexical variant must hold finite float32 values")
            if not (np.isfinite(lex.temperature) and lex.temperature > 0):
                raise HeadsError(f"head {self.name}: lexical temperature must be positive")
            lw = lex.decision_weights
            if lw is not None and (len(lw) != len(self.labels) or not all(0 < v < np.inf for v in lw)):
                raise HeadsError(f"head {self.name}: lexical decision weights must be {len(self.labels)} positives")

    @property
    def dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    def probabilities(self, x: NDArray[np.float32], features: NDArray[np.float32] | None = None) -> NDArray[np.float64]:
        """Calibrated probabilities, shape ``(len(x), len(labels))``; ``x`` is float32 of shape ``(n, dim)``.

        With ``features`` (the texts' :func:`~classifiers.lexical.lexical_features`) a head that has a lexical
        variant uses it; other heads ignore them.
        """
        if features is not None and self.lexical is not None:
            joined = np.concatenate([x, features.astype(np.float32)], axis=1)
            logits = (joined @ self.lexical.w.T + self.lexical.b).astype(np.float64) / self.lexical.temperature
        else:
            h = x
            for i, (w, b) in enumerate(self.layers):
                h = h @ w.T + b
                if i < len(self.layers) - 1:
                    h = np.maximum(h, np.float32(0))
            logits = h.astype(np.float64) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def decide(self, probabilities: NDArray[np.float64], *, lexical: bool = False) -> NDArray[np.int64]:
        """The chosen label index per row of ``probabilities``: the argmax, weighted by ``decision_weights``
        (those of the lexical variant when ``lexical`` and the head has one)."""
        weights = self.decision_weights
        if lexical and self.lexical is not None:
            weights = self.lexical.decision_weights
        if weights is not None:
            probabilities = probabilities * np.asarray(weights, dtype=np.float64)
        return np.asarray(probabilities.argmax(axis=1), dtype=np.int64)


def write_heads(folder: Path, heads: Sequence[HeadWeights], *, encoder_version: str, date: str) -> Path:
    """Write ``heads.npz`` into ``folder`` (created if needed); ``date`` is ``YYYY-MM-DD``.

    The bytes depend only on the arguments (no zip timestamps), so a deterministic training run rebuilds a
    byte-identical file, and with it the same :attr:`Heads.version`.
    """
    if not heads:
        raise HeadsError("no heads to write")
    names = [h.name for h in heads]
    if len(set(names)) != len(names):
        raise HeadsError(f"duplicate head names in {names}")
    if len({h.dim for h in heads}) != 1:
        raise HeadsError("all heads must read embeddings of the same dimension")
    _check_date(date)
    meta = {
        "format": FORMAT,
        "encoder_version": encoder_version,
        "dim": heads[0].dim,
        "date": date,
        "heads": [
            {
                "name": h.name,
                "layers": len(h.layers),
                "positive": h.positive,
                "decision": h.decision_weights is not None,
                **({"lexical": list(h.lexical.features)} if h.lexical is not None else {}),
            }
            for h in heads
        ],
    }
    arrays: dict[str, NDArray[Any]] = {"meta": np.asarray(json.dumps(meta, sort_keys=True))}
    for h in heads:
        for i, (w, b) in enumerate(h.layers):
            arrays[f"{h.name}/w{i}"] = np.ascontiguousarray(w, dtype=np.float32)
            arrays[f"{h.name}/b{i}"] = np.ascontiguousarray(b, dtype=np.float32)
        arrays[f"{h.name}/temperature"] = np.asarray(h.temperature, dtype=np.float64)
        arrays[f"{h.name}/labels"] = np.asarray(h.labels, dtype=np.str_)
        if h.decision_weights is not None:
            arrays[f"{h.name}/decision_weights"] = np.asarray(h.decision_weights, dtype=np.float64)
        if h.lexical is not None:
            arrays[f"{h.name}/lexical_w"] = np.ascontiguousarray(h.lexical.w, dtype=np.float32)
            arrays[f"{h.name}/lexical_b"] = np.ascontiguousarray(h.lexical.b, dtype=np.float32)
            arrays[f"{h.name}/lexical_temperature"] = np.asarray(h.lexical.temperature, dtype=np.float64)
            if h.lexical.decision_weights is not None:
                arrays[f"{h.name}/lexical_decision_weights"] = np.asarray(h.lexical.decision_weights, dtype=np.float64)
    return write_npz(folder / ARTEFACT_NAME, arrays)


def _check_date(date: str) -> None:
    if len(date) != 10 or date[4] != "-" or date[7] != "-" or not date.replace("-", "").isdigit():
        raise HeadsError(f"date must be YYYY-MM-DD, got {date!r}")


class Heads:
    """The classification heads of one artefact, for embeddings of one encoder version."""

    version: str
    names: tuple[str, ...]
    labels: dict[str, tuple[str, ...]]
    positive: dict[str, str | None]
    encoder_version: str
    dim: int
    date: str

    def __init__(self, heads: Sequence[HeadWeights], *, encoder_version: str, version: str, date: str) -> None:
        if not heads:
            raise HeadsError("no heads")
        self._heads = {h.name: h for h in heads}
        self.names = tuple(h.name for h in heads)
        self.labels = {h.name: h.labels for h in heads}
        self.positive = {h.name: h.positive for h in heads}
        self.encoder_version = encoder_version
        self.version = version
        self.date = date
        self.dim = heads[0].dim

    def __repr__(self) -> str:
        return f"Heads(version={self.version!r}, names={self.names}, encoder_version={self.encoder_version!r})"

    def __getitem__(self, name: str) -> HeadWeights:
        return self._heads[name]

    @classmethod
    def load(cls, folder: Path | None = None, *, encoder_version: str | None = None) -> Heads:
        """Read ``heads.npz`` from ``folder`` (default: :func:`default_heads_dir`).

        With ``encoder_version`` (the :attr:`~classifiers.encoder.Encoder.model_version` whose embeddings will
        be passed in), an artefact trained on another encoder raises :class:`EncoderMismatch`.
        """
        path = (folder if folder is not None else default_heads_dir()) / ARTEFACT_NAME
        make = f"train the heads with `python -m classifiers.training.train --out {path.parent}`"
        artefact = load_artefact(path, kind="heads", format=FORMAT, error=HeadsError, make=make)
        meta = artefact.meta
        try:
            heads = [cls._read_head(artefact.arrays, spec) for spec in meta["heads"]]
            trained_on = str(meta["encoder_version"])
            date = str(meta["date"])
            dim = int(meta["dim"])
        except KeyError as exc:
            raise HeadsError(f"{path}: missing {exc}") from exc
        _check_date(date)
        if any(h.dim != dim for h in heads):
            raise HeadsError(f"{path}: heads disagree with the declared dimension {dim}")
        version = f"heads-{date.replace('-', '')}-{artefact.sha256[:8]}"
        loaded = cls(heads, encoder_version=trained_on, version=version, date=date)
        if encoder_version is not None:
            loaded.check_encoder(encoder_version)
        return loaded

    @staticmethod
    def _read_head(arrays: Mapping[str, NDArray[Any]], spec: Mapping[str, Any]) -> HeadWeights:
        name = str(spec["name"])
        layers = tuple(
            (arrays[f"{name}/w{i}"].astype(np.float32), arrays[f"{name}/b{i}"].astype(np.float32))
            for i in range(int(spec["layers"]))
        )
        positive = spec.get("positive")
        weights = arrays[f"{name}/decision_weights"] if spec.get("decision") else None
        lexical = None
        if spec.get("lexical"):
            lexical_weights = arrays.get(f"{name}/lexical_decision_weights")
            lexical = LexicalVariant(
                features=tuple(str(f) for f in spec["lexical"]),
                w=arrays[f"{name}/lexical_w"].astype(np.float32),
                b=arrays[f"{name}/lexical_b"].astype(np.float32),
                temperature=float(arrays[f"{name}/lexical_temperature"]),
                decision_weights=None if lexical_weights is None else tuple(float(v) for v in lexical_weights),
            )
        return HeadWeights(
            name=name,
            labels=tuple(str(label) for label in arrays[f"{name}/labels"]),
            layers=layers,
            temperature=float(arrays[f"{name}/temperature"]),
            positive=None if positive is None else str(positive),
            decision_weights=None if weights is None else tuple(float(v) for v in weights),
            lexical=lexical,
        )

    def check_encoder(self, version: str) -> None:
        """Raise :class:`EncoderMismatch` unless these heads were trained on embeddings of encoder ``version``.

        The one exception: the int8 ONNX Runtime variant of exactly that encoder (``version`` + ``+ort-int8``). Heads
        trained on the torch embeddings keep their val scores on it within 0.5 points on every head (the table in
        classifiers/training/ONNX.md), so they are accepted there without retraining.
        """
        if version != self.encoder_version and version != self.encoder_version + ORT_INT8_SUFFIX:
            raise EncoderMismatch(
                f"heads {self.version} were trained on embeddings of encoder {self.encoder_version!r}, not "
                f"{version!r}: retrain them (python -m classifiers.training.train) for this encoder"
            )

    def _check(self, embeddings: NDArray[np.float32], encoder_version: str | None) -> NDArray[np.float32]:
        if encoder_version is not None:
            self.check_encoder(encoder_version)
        x = np.asarray(embeddings)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise HeadsError(f"embeddings must have shape (n, {self.dim}), got {x.shape}")
        return x.astype(np.float32, copy=False)

    @property
    def lexical(self) -> tuple[str, ...]:
        """The heads that have a lexical variant (used when the texts are passed in)."""
        return tuple(name for name, head in self._heads.items() if head.lexical is not None)

    def _features(self, texts: Sequence[str] | None, n: int) -> NDArray[np.float32] | None:
        if texts is None or not self.lexical:
            return None
        if isinstance(texts, str) or len(texts) != n:
            raise HeadsError(f"texts must be a sequence of {n} texts, one per row of the embeddings")
        from classifiers.lexical import lexical_features

        return lexical_features(texts)

    def probabilities(
        self,
        embeddings: NDArray[np.float32],
        *,
        encoder_version: str | None = None,
        texts: Sequence[str] | None = None,
    ) -> dict[str, NDArray[np.float64]]:
        """Per head, the calibrated probabilities: shape ``(n, len(labels[name]))``, columns in label order.

        ``texts`` (the texts the embeddings are of, in order) lets heads with a lexical variant use it.
        """
        x = self._check(embeddings, encoder_version)
        features = self._features(texts, x.shape[0])
        return {name: head.probabilities(x, features) for name, head in self._heads.items()}

    def predict(
        self,
        embeddings: NDArray[np.float32],
        *,
        encoder_version: str | None = None,
        thresholds: Mapping[str, float] | None = None,
        texts: Sequence[str] | None = None,
    ) -> list[dict[str, HeadResult]]:
        """One ``{head name: HeadResult}`` per row of ``embeddings`` (shape ``(n, dim)``).

        The label is the most probable one (for a head with decision weights: the argmax of the probabilities
        times those weights, see :meth:`HeadWeights.decide`), except for a binary head named in ``thresholds``:
        its positive label (:attr:`positive`) is chosen when its probability is at least the threshold.
        ``encoder_version``, if given, is checked as in :meth:`check_encoder`. With ``texts`` (one per row),
        heads that have a lexical variant (:attr:`lexical`) use it.
        """
        for name, threshold in (thresholds or {}).items():
            if self.positive.get(name) is None:
                raise HeadsError(f"threshold for {name!r}, which is not a binary head of {self.version}")
            if not 0.0 <= threshold <= 1.0:
                raise HeadsError(f"threshold for {name!r} must be in [0, 1], got {threshold}")
        probabilities = self.probabilities(embeddings, encoder_version=encoder_version, texts=texts)
        n = int(np.asarray(embeddings).shape[0])
        results: list[dict[str, HeadResult]] = [{} for _ in range(n)]
        for name, p in probabilities.items():
            labels = self.labels[name]
            choice = self._heads[name].decide(p, lexical=texts is not None)
            cut = None if thresholds is None else thresholds.get(name)
            if cut is not None:
                positive = labels.index(str(self.positive[name]))
                choice = np.where(p[:, positive] >= cut, positive, 1 - positive)
            rows = p.tolist()
            for i in range(n):
                results[i][name] = HeadResult(
                    label=labels[int(choice[i])], scores=dict(zip(labels, rows[i], strict=True))
                )
        return results
