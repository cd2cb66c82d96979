"""Embeddings of data files, cached on disk by file hash, selected rows and encoder version.

Cache files live in ``var/cache/embeddings`` of the project (gitignored) unless another folder is given:
``<encoder version>-L<max_length>/<folder>.<split>.<sha256 of the file>.<rows>.npy``. A rerun on unchanged
data and the same encoder reads them instead of running the model.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from classifiers.encoder import Encoder
from classifiers.training.data import Examples

__all__ = ["default_cache_dir", "embed"]

log = logging.getLogger(__name__)

_CHUNK = 2048  # texts per encode() call: bounds memory and gives progress lines


def default_cache_dir() -> Path:
    """``$SWITCHBOARD_EMBEDDING_CACHE`` if set, else ``var/cache/embeddings`` in the project folder (a source
    checkout), else ``~/.cache/switchboard/embeddings`` (an installed package)."""
    configured = os.environ.get("SWITCHBOARD_EMBEDDING_CACHE")
    if configured:
        return Path(configured)
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / "var" / "cache" / "embeddings"
    return Path.home() / ".cache" / "switchboard" / "embeddings"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def embed(encoder: Encoder, examples: Examples, cache_dir: Path | None) -> NDArray[np.float32]:
    """The heads' embeddings (:meth:`Encoder.encode_heads`) of ``examples.texts`` (rows in order), cached under the
    encoder's ``model_version``; ``cache_dir=None`` disables the cache."""
    path: Path | None = None
    if cache_dir is not None:
        path = cache_dir / f"{_slug(encoder.model_version)}-L{encoder.max_length}" / f"{examples.cache_key}.npy"
        if path.is_file():
            cached = np.load(path, allow_pickle=False)
            if cached.shape == (len(examples), encoder.dim) and cached.dtype == np.float32:
                return np.asarray(cached, dtype=np.float32)
            log.warning("ignoring %s: shape %s, expected %s", path, cached.shape, (len(examples), encoder.dim))
    vectors = encode_logged(encoder, examples.texts, examples.cache_key, heads=True)
    if path is not None:
        save_atomic(path, vectors)
    return vectors


def encode_logged(encoder: Encoder, texts: Sequence[str], what: str, *, heads: bool = False) -> NDArray[np.float32]:
    """Encode in chunks, logging progress for long inputs (embedding a dataset takes minutes here).

    ``heads``: the embeddings the heads read (:meth:`Encoder.encode_heads`, version ``model_version``) rather than
    the plain sentence embeddings (:meth:`Encoder.encode`, version ``base_version``).
    """
    started = time.monotonic()
    parts: list[NDArray[np.float32]] = []
    encode = encoder.encode_heads if heads else encoder.encode
    for begin in range(0, len(texts), _CHUNK):
        parts.append(encode(texts[begin : begin + _CHUNK]))
        if len(texts) > _CHUNK:
            log.info("%s: embedded %d / %d", what, begin + len(parts[-1]), len(texts))
    vectors = np.concatenate(parts) if parts else np.zeros((0, encoder.dim), dtype=np.float32)
    log.info("%s: %d texts embedded in %.1f s", what, len(texts), time.monotonic() - started)
    return vectors


def save_atomic(path: Path, vectors: NDArray[np.float32]) -> None:
    """Write a .npy so that a reader never sees half a file (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as f:
        np.save(f, vectors, allow_pickle=False)
    os.replace(f.name, path)
