"""Fitting heads on fixed embeddings with torch: L2-regularised multinomial logistic regression (full-batch
L-BFGS, :mod:`classifiers.logistic`) and temperature scaling.

Everything runs in float64 on the CPU, single-threaded by default where it matters for bit-exact reruns
(:func:`deterministic`), and draws randomness only from explicit seeds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from numpy.typing import NDArray

from classifiers.logistic import fit_logistic_path

__all__ = ["Layers", "deterministic", "fit_linear", "fit_linear_path", "fit_temperature", "logits"]

Layers = tuple[tuple[NDArray[np.float32], NDArray[np.float32]], ...]


@contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic torch algorithms on one thread for the duration (both restored afterwards).

    One thread: the fits are many small full-batch steps, for which thread start-up and (on a shared machine)
    oversubscription cost far more than they save (100x slower with 2 threads under load), and reductions then
    do not depend on the number of cores.
    """
    previous = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(previous)


def fit_linear(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    k: int,
    *,
    weight_decay: float,
    max_iter: int = 500,
) -> Layers:
    """Multinomial logistic regression: minimise mean cross-entropy + weight_decay/2 * ||W||^2 (bias free)."""
    return fit_linear_path(x, y, k, [weight_decay], max_iter=max_iter)[weight_decay]


def fit_linear_path(
    x: NDArray[np.float32],
    y: NDArray[np.int64],
    k: int,
    weight_decays: Sequence[float],
    *,
    max_iter: int = 500,
) -> dict[float, Layers]:
    """:func:`fit_linear` for several weight decays, warm-started from the strongest to the weakest
    (:func:`classifiers.logistic.fit_logistic_path`, the fitter the topics use too): deterministic, no seed."""
    path = fit_logistic_path(x, y, k, weight_decays, max_iter=max_iter)
    return {wd: ((w.astype(np.float32), b.astype(np.float32)),) for wd, (w, b) in path.items()}


def logits(layers: Layers, x: NDArray[np.float32]) -> NDArray[np.float64]:
    """The raw (uncalibrated) outputs, computed as :class:`classifiers.heads.HeadWeights` does."""
    h = np.asarray(x, dtype=np.float32)
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = np.maximum(h, np.float32(0))
    return h.astype(np.float64)


def fit_temperature(raw: NDArray[np.float64], y: NDArray[np.int64]) -> float:
    """The temperature T > 0 minimising the log loss of softmax(raw / T) on (raw, y): L-BFGS over log T."""
    z = torch.from_numpy(raw)
    target = torch.from_numpy(np.asarray(y, dtype=np.int64))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [log_t], lr=0.5, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), target)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimiser.step(closure)  # type: ignore[no-untyped-call]
    return float(log_t.exp().item())
