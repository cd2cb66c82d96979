"""The encoder's forward pass on ONNX Runtime: the torch :class:`~classifiers.trunk.Trunk` exported once, then cached.

Graphs (never in git; 105 MB fp32, 27 MB int8 for the two-output one):

- ``plain-adapted``: inputs ``input_ids`` and ``attention_mask`` (int64, ``(batch, sequence)``, both axes dynamic),
  outputs ``plain`` (the sentence embedding: topics, storage) and ``adapted`` (the heads' embedding) over one shared
  trunk; serves ``Encoder.encode_both`` and ``encode_heads``. Only with an adapter.
- ``plain``: output ``plain`` only, for ``Encoder.encode`` (ONNX Runtime computes every output of a graph, so the
  two-output graph would spend a third more on the adapted branch nobody reads). Its session is created on the
  first ``encode`` call: the service's pipeline only ever runs ``encode_both``.

``onnx`` runs the fp32 export (the same function as torch, to ~2e-7); ``onnx-int8`` the same graph after
``onnxruntime.quantization.quantize_dynamic`` (int8 weights per output channel, activations quantised per call).

The files live in a cache folder, one sub-folder per encoder version (base model + adapter), named after the graph,
the torch, transformers and opset versions of the export (and the onnxruntime version of the quantiser for int8).
They are exported on first use by whichever process gets there first (a ``filelock`` lock on the folder; the
others wait and then read the file), written to a temporary name and renamed into place (``os.replace``), so that
no process ever reads half a file. Every graph is checked against the torch trunk when loaded, freshly exported or
not (fp32: max abs difference < 1e-4; int8: cosine >= 0.95 on every row); a file that fails to load or to check
(e.g. truncated by a full disk, or tampered with) is exported again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt
from filelock import FileLock

if TYPE_CHECKING:
    from classifiers.trunk import Trunk

__all__ = ["OPSET", "OrtBackend", "default_cache_dir", "default_threads", "export", "quantize"]

log = logging.getLogger(__name__)

OPSET: Final = 17
FP32_TOLERANCE: Final = 1e-4  # max abs difference of an fp32 graph's embeddings from torch's (measured: ~2e-7)
INT8_MIN_COSINE: Final = 0.95  # lowest cosine of an int8 graph's embedding to torch's (measured: 0.98 or more)

Array = npt.NDArray[np.float32]
Ids = npt.NDArray[np.int64]


def default_cache_dir() -> Path:
    """``var/onnx`` in the project folder (a source checkout; gitignored), else ``$XDG_CACHE_HOME/switchboard/onnx``
    (``~/.cache/switchboard/onnx``) for an installed package."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return root / "var" / "onnx"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard" / "onnx"


def default_threads() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)


def graph_name(outputs: tuple[str, ...], *, int8: bool, opset: int = OPSET) -> str:
    """The file name of a graph: what it computes and every version its bytes depend on."""
    import onnxruntime
    import torch
    import transformers

    name = f"{'-'.join(outputs)}.torch-{torch.__version__}.transformers-{transformers.__version__}.opset{opset}"
    return _slug(f"{name}.ort-{onnxruntime.__version__}.int8.onnx" if int8 else f"{name}.fp32.onnx")


# ---- export ------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eager_attention(trunk: Trunk) -> Iterator[None]:
    """The eager attention for the export (it takes the additive mask as is); the previous one afterwards."""
    configs = {id(c): c for m in trunk.modules() if (c := getattr(m, "config", None)) is not None}
    configs = {k: c for k, c in configs.items() if hasattr(c, "_attn_implementation")}
    previous = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = previous[k]


def export(trunk: Trunk, outputs: tuple[str, ...], sample: tuple[Ids, Ids], path: Path, *, opset: int = OPSET) -> Path:
    """Export ``trunk``'s ``outputs`` to ``path`` (fp32) with torch.onnx; batch and sequence axes dynamic."""
    import torch

    module = trunk.graph(outputs)
    args = (torch.from_numpy(sample[0]), torch.from_numpy(sample[1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with _eager_attention(trunk), warnings.catch_warnings(), torch.inference_mode():
        # The TorchScript exporter (dynamo=False) is deprecated in favour of the dynamo one, which needs onnxscript;
        # it is what torch 2.13/2.14 (the pinned range) still ship and it exports this graph exactly.
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=list(outputs),
            dynamic_axes={
                "input_ids": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                **{name: {0: "batch"} for name in outputs},
            },
            opset_version=opset,
            dynamo=False,
        )
    return path


def quantize(fp32: Path, int8: Path) -> Path:
    """Dynamic int8 quantisation: weights int8 per output channel, activations quantised on the fly."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser logs a line per tensor (and advice meant for static quantisation) on the root logger itself; a
    # filter on the root logger drops exactly those records (records of named loggers do not pass through it).
    root = logging.getLogger()
    quiet = _DropBelowError("onnxruntime")
    root.addFilter(quiet)
    try:
        quantize_dynamic(fp32, int8, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        root.removeFilter(quiet)
    return int8


class _DropBelowError(logging.Filter):
    """Drops records below ERROR logged from a file of the package ``package``."""

    def __init__(self, package: str) -> None:
        super().__init__()
        self.marker = f"{os.sep}{package}{os.sep}"

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or self.marker not in record.pathname


# ---- sessions ----------------------------------------------------------------------------------------------


def _session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No busy-waiting of the intra-op threads between runs: in the pipeline the heads, language and PII detection
    # run on this thread right after each forward pass, and spinning threads took the other core from them (and
    # from the event loop): the pipeline went 2x faster without, on 2 shared cores (ONNX.md).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _mismatch(names: tuple[str, ...], got: list[Array], reference: list[Array], *, int8: bool) -> str | None:
    """Why ``got`` is not close enough to the torch ``reference``, or None."""
    for name, a, b in zip(names, got, reference, strict=True):
        if a.shape != b.shape:
            return f"{name} has shape {a.shape}, not {b.shape}"
        if int8:
            cosine = float((a * b).sum(axis=1).min())
            if not cosine >= INT8_MIN_COSINE:
                return f"{name}: lowest cosine to torch {cosine:.4f} (< {INT8_MIN_COSINE})"
        else:
            diff = float(np.abs(a - b).max())
            if not diff < FP32_TOLERANCE:
                return f"{name} differs from torch by up to {diff:.2e} (>= {FP32_TOLERANCE})"
    return None


class _Graph:
    """One graph file of the cache: load it checked, or make it (under the folder's lock) and load it."""

    def __init__(
        self,
        folder: Path,
        outputs: tuple[str, ...],
        *,
        int8: bool,
        sample: tuple[Ids, Ids],
        reference: list[Array],
        threads: int,
    ) -> None:
        self.path = folder / graph_name(outputs, int8=int8)
        self.outputs = outputs
        self.int8 = int8
        self.sample = sample
        self.reference = reference
        self.threads = threads

    def load_checked(self) -> Any | None:
        """A session on the cached file if it is there, loads, and computes what torch does; else None."""
        if not self.path.is_file():
            return None
        try:
            session = _session(self.path, self.threads)
            why = self._check(session)
        except Exception as exc:  # any failure to load or run a cached file means: export it again
            why = f"{type(exc).__name__}: {exc}"
        if why is None:
            return session
        log.warning("ONNX graph %s is unusable (%s): exporting it again", self.path, why)
        return None

    def _check(self, session: Any) -> str | None:
        got = session.run(list(self.outputs), {"input_ids": self.sample[0], "attention_mask": self.sample[1]})
        return _mismatch(self.outputs, [np.asarray(a, dtype=np.float32) for a in got], self.reference, int8=self.int8)

    def ensure(self, make: Callable[[Path], object]) -> Any:
        """A checked session; ``make(path)`` writes the file when it is missing or bad."""
        session = self.load_checked()
        if session is not None:
            return session
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.path.parent / ".lock"):  # between processes and between threads alike
            # Another process may have written it while we waited.
            return self.load_checked() or self.write_locked(make)

    def write_locked(self, make: Callable[[Path], object]) -> Any:
        """Write the file with ``make`` to a temporary name, check it, rename it into place; the caller holds the
        folder's lock. Returns a session on it."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # left by a killed export
            stale.unlink(missing_ok=True)
        tmp = self.path.parent / f".{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
        started = time.monotonic()
        try:
            make(tmp)
            session = _session(tmp, self.threads)
            why = self._check(session)
            if why is not None:
                raise RuntimeError(f"the freshly made {self.path.name} is wrong: {why}")
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        log.info("made %s in %.1f s", self.path, time.monotonic() - started)
        return session


class OrtBackend:
    """The forward pass on ONNX Runtime (CPU): padded int64 arrays in, float32 embeddings out.

    Built from the torch ``trunk`` (only to export and to check the graphs: keep no reference to it afterwards and
    its weights can be freed); ``sample`` is a padded batch of a few texts for the checks.
    """

    def __init__(
        self,
        trunk: Trunk,
        sample: tuple[Ids, Ids],
        *,
        version: str,
        int8: bool,
        cache_dir: Path | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        self.name = "onnx-int8" if int8 else "onnx"
        self.threads = threads if threads is not None else default_threads()
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
        self.folder = (cache_dir if cache_dir is not None else default_cache_dir()) / _slug(version)
        with torch.inference_mode():
            got = trunk.embed(torch.from_numpy(sample[0]), torch.from_numpy(sample[1]), trunk.outputs)
        reference = dict(zip(trunk.outputs, (t.numpy() for t in got), strict=True))
        self.outputs = trunk.outputs
        self._graphs: dict[tuple[str, ...], _Graph] = {}
        self._sessions: dict[tuple[str, ...], Any] = {}
        for outputs in dict.fromkeys([trunk.outputs, ("plain",)]):
            fp32 = _Graph(self.folder, outputs, int8=False, sample=sample, reference=[reference[o] for o in outputs],
                          threads=self.threads)  # fmt: skip

            def make_fp32(path: Path, outputs: tuple[str, ...] = outputs) -> None:
                export(trunk, outputs, sample, path)

            graph = fp32
            if int8:
                graph = _Graph(self.folder, outputs, int8=True, sample=sample, reference=fp32.reference,
                               threads=self.threads)  # fmt: skip

                def make_int8(path: Path, fp32: _Graph = fp32, make_fp32: Callable[[Path], None] = make_fp32) -> None:
                    if fp32.load_checked() is None:  # quantised from the fp32 graph; we hold the folder's lock
                        fp32.write_locked(make_fp32)
                    quantize(fp32.path, path)

                session = graph.ensure(make_int8)
            else:
                session = graph.ensure(make_fp32)
            self._graphs[outputs] = graph
            if outputs == trunk.outputs:  # the plain-only graph of an adapted trunk: loaded on first use
                self._sessions[outputs] = session

    @property
    def paths(self) -> dict[tuple[str, ...], Path]:
        """The graph files in use, by the outputs they compute."""
        return {outputs: graph.path for outputs, graph in self._graphs.items()}

    def run(self, outputs: tuple[str, ...], input_ids: Ids, attention_mask: Ids) -> list[Array]:
        """The embeddings named in ``outputs`` (``("plain",)``, ``("adapted",)`` or both, in that order)."""
        graph = ("plain",) if outputs == ("plain",) else self.outputs
        session = self._sessions.get(graph)
        if session is None:
            session = self._sessions[graph] = _session(self._graphs[graph].path, self.threads)
        got = session.run(list(outputs), {"input_ids": input_ids, "attention_mask": attention_mask})
        return [np.asarray(a, dtype=np.float32) for a in got]
