"""The artefact files of the classifiers: deterministic ``.npz`` writing, checked reading, and the one version
suffix that both the encoder and the heads need.

An artefact (``heads.npz``, ``adapter.npz``) is a zip of ``.npy`` arrays plus ``meta``, a JSON string whose
``format`` names the artefact kind; its version is derived from the SHA-256 of its bytes. This module imports
nothing from ``classifiers`` (a leaf), so that :mod:`classifiers.encoder`, :mod:`classifiers.adapter` and
:mod:`classifiers.heads` can all depend on it without depending on each other.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["ORT_INT8_SUFFIX", "Artefact", "load_artefact", "read_npz", "write_npz"]

# Appended to both encoder versions by the onnx-int8 backend: its embeddings are not the torch ones (cosine
# 0.96-0.99). Heads trained on an encoder also accept exactly its int8 variant (Heads.check_encoder).
ORT_INT8_SUFFIX: Final = "+ort-int8"


@dataclass(frozen=True, slots=True)
class Artefact:
    """An artefact file as read: its arrays (``meta`` taken out), its decoded ``meta`` and its SHA-256 (hex)."""

    arrays: dict[str, NDArray[Any]]
    meta: dict[str, Any]
    sha256: str


def read_npz(data: bytes) -> tuple[dict[str, NDArray[Any]], Any]:
    """The arrays of an artefact written by :func:`write_npz` and its decoded ``meta`` JSON (ValueError if it is
    not one)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(str(exc)) from exc
    return arrays, meta


def write_npz(path: Path, arrays: Mapping[str, NDArray[Any]]) -> Path:
    """An .npz that is byte-for-byte the same for the same arrays (fixed member dates and modes; no pickle), so
    a retrained artefact only shows in git when its numbers changed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, member.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return path


def load_artefact(path: Path, *, kind: str, format: str, error: type[ValueError], make: str) -> Artefact:
    """Read the ``kind`` artefact (``"heads"``, ``"adapter"``) at ``path``, whose ``meta`` must name ``format``.

    A missing file is a FileNotFoundError that says how to ``make`` it; anything else wrong is ``error``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {make}")
    data = path.read_bytes()
    try:
        arrays, meta = read_npz(data)
    except ValueError as exc:
        raise error(f"{path} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind} artefact: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != format:
        raise error(f"{path}: unsupported format {meta.get('format') if isinstance(meta, dict) else meta!r}")
    return Artefact(arrays=arrays, meta=meta, sha256=hashlib.sha256(data).hexdigest())
