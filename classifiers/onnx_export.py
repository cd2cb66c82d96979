"""Export the encoder's ONNX graphs into the cache ahead of time (an image build, a deployment step), and report them.

    .venv/bin/python -m classifiers.onnx_export [--backend onnx onnx-int8] [--cache-dir DIR]

The service exports them itself on first use (:mod:`classifiers.onnx_backend`: keyed by the encoder version and the
torch, transformers and opset versions, written atomically, checked against torch); this command only does it
before the first start, so that no process spends the ~10 s at start-up, and prints every graph with its size
and its agreement with torch on a few texts. ``--cache-dir`` defaults to the service's default
(``SWITCHBOARD_ONNX_CACHE_DIR`` unset): ``var/onnx`` in a source checkout, else ``~/.cache/switchboard/onnx``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from classifiers.encoder import BACKENDS, Encoder
from classifiers.onnx_backend import OrtBackend, default_cache_dir

__all__ = ["main"]

_TEXTS = [
    "Why is the canteen closed on Fridays?",
    "Thanks for sorting the VPN so quickly - great work!",
    "Nobody told us about the reorganisation, it is a joke.",
    "ok",
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifiers.onnx_export", description=__doc__.split("\n")[0])
    onnx_backends = [b for b in BACKENDS if b != "torch"]
    parser.add_argument("--backend", nargs="+", choices=onnx_backends, default=onnx_backends)
    parser.add_argument("--cache-dir", type=Path, default=None, help=f"default: {default_cache_dir()}")
    args = parser.parse_args(argv)
    reference = Encoder(backend="torch").encode_both(_TEXTS)
    for backend in args.backend:
        started = time.perf_counter()
        encoder = Encoder(backend=backend, onnx_cache_dir=args.cache_dir)
        plain, adapted = encoder.encode_both(_TEXTS)
        plain_only = encoder.encode(_TEXTS)
        seconds = time.perf_counter() - started
        assert isinstance(encoder._backend, OrtBackend)
        sys.stdout.write(f"{backend}: {encoder.model_version} (ready in {seconds:.1f} s)\n")
        for path in encoder._backend.paths.values():
            sys.stdout.write(f"  {path} ({path.stat().st_size / 1e6:.1f} MB)\n")
        for name, got, want in (("plain", plain, reference[0]), ("adapted", adapted, reference[1]),
                                ("plain (plain-only graph)", plain_only, reference[0])):  # fmt: skip
            diff, cosine = float(np.abs(got - want).max()), float((got * want).sum(axis=1).min())
            sys.stdout.write(f"  {name}: max |d| to torch {diff:.2e}, lowest cosine {cosine:.6f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
