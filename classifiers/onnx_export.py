"""Experiment (not wired into the service): the encoder pass of the pipeline as ONNX, fp32 and dynamic int8.

    .venv/bin/python -m classifiers.onnx_export [--out var/onnx] [--opset 17]

Exports what :meth:`classifiers.encoder.Encoder.encode_both` computes, as one graph with a shared trunk:
inputs ``input_ids`` and ``attention_mask`` (int64, shape ``(batch, sequence)``, both axes dynamic), outputs
``plain`` (layers 0-5 of all-MiniLM-L6-v2, mean-pooled, L2-normalised: the topics' embedding) and ``adapted``
(layers 0-3 shared, then the copies of the top layers with the LoRA deltas merged: the heads' embedding). Then
``onnxruntime.quantization.quantize_dynamic`` (int8 weights, per channel) gives the int8 variant.

Writes ``encoder.fp32.onnx`` and ``encoder.int8.onnx`` under ``var/onnx/`` (gitignored: never commit them), the
same after onnxruntime's transformer optimiser (``encoder.fp32.fused.onnx``, ``encoder.int8.fused.onnx``: fused
attention, LayerNorm, GELU; skip with ``--no-optimize``), and a ``meta.json`` naming the encoder version.

:class:`OrtEncoder` runs such a file with the Encoder's tokenizer and batching (length-sorted batches of
``batch_size``), for the benchmark (``benchmarks/onnx_speed.py``) and the accuracy check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from classifiers.encoder import Encoder, check_texts

__all__ = ["OrtEncoder", "default_onnx_dir", "export", "quantize"]


def default_onnx_dir() -> Path:
    """``var/onnx`` of the project folder (gitignored)."""
    return Path(__file__).resolve().parents[1] / "var" / "onnx"


def _two_output_module(encoder: Encoder) -> Any:
    """A torch module computing (plain, adapted) embeddings from padded ``input_ids`` and ``attention_mask``."""
    import torch

    if encoder.adapter is None:
        raise ValueError("the encoder has no adapter: nothing to export as two outputs")
    model = encoder._model
    first = encoder._first_adapted
    lower = list(model.encoder.layer)[:first]
    upper = list(model.encoder.layer)[first:]
    tail = list(encoder._tail)

    def pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * mask).sum(dim=1)
        counts = mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(summed / counts, p=2, dim=1)

    class TwoOutput(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embeddings = model.embeddings
            self.lower = torch.nn.ModuleList(lower)
            self.upper = torch.nn.ModuleList(upper)
            self.tail = torch.nn.ModuleList(tail)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            hidden = self.embeddings(input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids))
            # Additive mask (batch, 1, 1, seq): 0 where attended, a large negative where padded; the same
            # semantics as the mask transformers builds for the eager attention.
            keep = attention_mask[:, None, None, :].to(hidden.dtype)
            mask = (1.0 - keep) * torch.finfo(hidden.dtype).min
            for layer in self.lower:
                hidden = layer(hidden, mask)
            top = hidden
            for layer in self.upper:
                top = layer(top, mask)
            adapted = hidden
            for layer in self.tail:
                adapted = layer(adapted, mask)
            return pool(top, attention_mask), pool(adapted, attention_mask)

    module = TwoOutput()
    module.eval()
    return module


def export(encoder: Encoder, path: Path, *, opset: int = 17) -> Path:
    """Export the two-output graph to ``path`` (fp32) with torch.onnx, dynamic batch and sequence axes."""
    import torch

    module = _two_output_module(encoder)
    # The eager attention takes the additive 4-D mask as is; make sure the layers use it for the export.
    model = encoder._model
    previous = getattr(model.config, "_attn_implementation", None)
    for m in [model, *module.modules()]:
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            config._attn_implementation = "eager"
    ids = encoder._tokenizer(["a short example", "a somewhat longer example text for the export"], padding=True,
                             return_tensors="pt", return_token_type_ids=False)  # fmt: skip
    args = (ids["input_ids"].to(torch.long), ids["attention_mask"].to(torch.long))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.inference_mode():
            reference = module(*args)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["plain", "adapted"],
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "plain": {0: "batch"},
                "adapted": {0: "batch"},
            },
            opset_version=opset,
            dynamo=False,
        )
    finally:
        if previous is not None:
            for m in [model, *module.modules()]:
                config = getattr(m, "config", None)
                if config is not None and hasattr(config, "_attn_implementation"):
                    config._attn_implementation = previous
    # Sanity check against the Encoder's own pass.
    plain, adapted = encoder.encode_both(["a short example", "a somewhat longer example text for the export"])
    got = np.abs(reference[0].numpy() - plain).max(), np.abs(reference[1].numpy() - adapted).max()
    if max(got) > 1e-4:
        raise RuntimeError(f"the export module differs from Encoder.encode_both by {got}")
    return path


def optimize(fp32: Path, out: Path, *, num_heads: int, hidden_size: int) -> Path:
    """onnxruntime's transformer optimiser (fused attention, LayerNorm, GELU, bias adds) on the fp32 graph."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(fp32), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=1)
    sys.stdout.write(f"{out.name}: fused operators {model.get_fused_operator_statistics()}\n")
    model.save_model_to_file(str(out))
    return out


def quantize(fp32: Path, int8: Path) -> Path:
    """Dynamic int8 quantisation (weights int8 per channel, activations quantised on the fly)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # DefaultTensorType: the fused graph has contrib ops (com.microsoft) that ONNX shape inference cannot type.
    quantize_dynamic(str(fp32), str(int8), per_channel=True, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})  # fmt: skip
    return int8


class OrtEncoder:
    """``encode_both`` of :class:`~classifiers.encoder.Encoder`, run by onnxruntime on an exported graph."""

    def __init__(self, path: Path, encoder: Encoder, *, threads: int = 2, batch_size: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = encoder._tokenizer
        self._pad_id = int(self._tokenizer.pad_token_id)
        self.max_length = encoder.max_length
        self.batch_size = batch_size if batch_size is not None else encoder.batch_size
        self.dim = encoder.dim
        self.path = path

    def encode_both(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        items = check_texts(texts, "encode_both")
        plain = np.zeros((len(items), self.dim), dtype=np.float32)
        adapted = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return plain, adapted
        ids: list[list[int]] = self._tokenizer(
            items,
            truncation=True,
            max_length=self.max_length,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        order = sorted(range(len(items)), key=lambda i: len(ids[i]))
        for begin in range(0, len(order), self.batch_size):
            batch = order[begin : begin + self.batch_size]
            width = max(len(ids[i]) for i in batch)
            input_ids = np.full((len(batch), width), self._pad_id, dtype=np.int64)
            attention_mask = np.zeros((len(batch), width), dtype=np.int64)
            for r, i in enumerate(batch):
                input_ids[r, : len(ids[i])] = ids[i]
                attention_mask[r, : len(ids[i])] = 1
            p, a = self.session.run(["plain", "adapted"], {"input_ids": input_ids, "attention_mask": attention_mask})
            plain[batch] = p
            adapted[batch] = a
        return plain, adapted

    def encode_heads(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return self.encode_both(texts)[1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifiers.onnx_export", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="default: var/onnx")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--no-optimize", action="store_true", help="skip the fused (transformer-optimised) variants")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None else default_onnx_dir()
    encoder = Encoder()
    started = time.perf_counter()
    fp32 = export(encoder, out / "encoder.fp32.onnx", opset=args.opset)
    int8 = quantize(fp32, out / "encoder.int8.onnx")
    written = [fp32, int8]
    if not args.no_optimize:
        config = encoder._model.config
        fused = optimize(fp32, out / "encoder.fp32.fused.onnx", num_heads=int(config.num_attention_heads),
                         hidden_size=int(config.hidden_size))  # fmt: skip
        written += [fused, quantize(fused, out / "encoder.int8.fused.onnx")]
    import onnxruntime
    import torch

    meta = {
        "model_version": encoder.model_version,
        "base_version": encoder.base_version,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "opset": args.opset,
        "files": {p.name: p.stat().st_size for p in written},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(json.dumps(meta, indent=2) + "\n")
    sys.stdout.write(f"exported and quantised in {time.perf_counter() - started:.1f} s\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
