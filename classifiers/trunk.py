"""The encoder's forward pass in torch: one module for the torch backend and for the ONNX export.

:class:`Trunk` runs all-MiniLM-L6-v2 from padded ``input_ids`` and ``attention_mask`` to unit-length sentence
embeddings (mean pooling over the mask, L2 norm: the sentence-transformers recipe). With a LoRA adapter it also
gives the heads' embedding: the layers below the lowest adapted one run once, then the original top layers
(``plain``) and copies of them with the low-rank deltas merged into their weights (``adapted``).

It builds the additive attention mask itself (0 where attended, the dtype's minimum where padded; what
transformers builds for the eager attention and what SDPA takes as is) instead of calling transformers' private
mask helpers, whose signature changes between minor versions; and so that the exported graph is the very function
the torch backend computes.

Imports torch at module level: :mod:`classifiers.encoder` imports this module only when an Encoder is built.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

if TYPE_CHECKING:
    from classifiers.adapter import Adapter

__all__ = ["OUTPUTS", "TorchBackend", "Trunk"]

OUTPUTS = ("plain", "adapted")  # the names of the embeddings, in this order (also the ONNX graph's outputs)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean pooling over the attention mask, then L2 normalisation (the sentence-transformers recipe)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2, dim=1)


class Trunk(torch.nn.Module):
    """The transformer and the adapted copies of its top layers; :meth:`embed` computes the named embeddings.

    Shares its submodules with the transformers model (no copy of the base weights).
    """

    def __init__(self, model: Any, adapter: Adapter | None) -> None:
        super().__init__()
        layers = list(model.encoder.layer)
        first = len(layers)
        tail: list[Any] = []
        if adapter is not None:
            first, tail = _adapted_tail(layers, adapter)
        self.embeddings = model.embeddings
        self.lower = torch.nn.ModuleList(layers[:first])
        self.upper = torch.nn.ModuleList(layers[first:])
        self.tail = torch.nn.ModuleList(tail)
        self.config = model.config
        self.eval()

    @property
    def outputs(self) -> tuple[str, ...]:
        """Every embedding this trunk can compute: ``("plain", "adapted")`` with an adapter, else ``("plain",)``."""
        return OUTPUTS if len(self.tail) else ("plain",)

    def check_outputs(self, outputs: tuple[str, ...]) -> tuple[str, ...]:
        if not outputs or any(o not in self.outputs for o in outputs) or len(set(outputs)) != len(outputs):
            raise ValueError(f"outputs must be distinct names among {self.outputs}, not {outputs}")
        return outputs

    def embed(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, outputs: tuple[str, ...]
    ) -> tuple[torch.Tensor, ...]:
        """The embeddings named in ``outputs``, in that order, from padded int64 ``(batch, sequence)`` inputs."""
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
        keep = attention_mask[:, None, None, :].to(hidden.dtype)
        mask = (1.0 - keep) * torch.finfo(hidden.dtype).min
        for layer in self.lower:
            hidden = layer(hidden, mask)
        result: dict[str, torch.Tensor] = {}
        if "plain" in outputs:
            top = hidden
            for layer in self.upper:
                top = layer(top, mask)
            result["plain"] = pool(top, attention_mask)
        if "adapted" in outputs:
            adapted = hidden
            for layer in self.tail:
                adapted = layer(adapted, mask)
            result["adapted"] = pool(adapted, attention_mask)
        return tuple(result[name] for name in outputs)

    def graph(self, outputs: tuple[str, ...]) -> torch.nn.Module:
        """A module whose ``forward(input_ids, attention_mask)`` is :meth:`embed` of ``outputs`` (for the export)."""
        return _Graph(self, self.check_outputs(outputs))


class _Graph(torch.nn.Module):
    def __init__(self, trunk: Trunk, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.trunk = trunk
        self.names = outputs
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.trunk.embed(input_ids, attention_mask, self.names)


def _adapted_tail(layers: list[Any], adapter: Adapter) -> tuple[int, list[Any]]:
    """Copies of the layers from the lowest adapted one up, with the adapter's deltas merged into their weights."""
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


class TorchBackend:
    """The forward pass on torch (CPU): padded int64 arrays in, float32 embeddings out."""

    name = "torch"

    def __init__(self, trunk: Trunk, *, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        self.trunk = trunk

    def run(
        self, outputs: tuple[str, ...], input_ids: npt.NDArray[np.int64], attention_mask: npt.NDArray[np.int64]
    ) -> list[npt.NDArray[np.float32]]:
        """The embeddings named in ``outputs`` (``("plain",)``, ``("adapted",)`` or both, in that order)."""
        with torch.inference_mode():
            got = self.trunk.embed(torch.from_numpy(input_ids), torch.from_numpy(attention_mask), outputs)
        return [t.to(torch.float32).numpy() for t in got]
