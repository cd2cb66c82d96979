"""Multinomial logistic regression by full-batch L-BFGS (torch, float64, CPU): the one fitter of the topics'
regression (:mod:`classifiers.topics`, refitted at run time) and of the heads (:mod:`classifiers.training.fit`).

The objective is the mean cross-entropy plus ``weight_decay / 2 * ||W||²`` (the bias is not penalised); it is
strictly convex, and the fit starts from zero weights with no randomness, so the same data gives the same weights
(on the same machine and number of threads). ``torch`` is imported when a fit runs, not with this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Linear", "fit_logistic", "fit_logistic_path"]

Linear = tuple[NDArray[np.float64], NDArray[np.float64]]  # (W of shape (classes, dim), b of shape (classes,))


def fit_logistic(
    x: NDArray[np.floating[Any]],
    y: NDArray[np.int64],
    k: int,
    *,
    weight_decay: float,
    max_iter: int = 500,
    tolerance: float = 1e-6,
) -> Linear:
    """The regression of ``k`` classes on the rows of ``x`` with labels ``y`` (in ``range(k)``)."""
    return fit_logistic_path(x, y, k, [weight_decay], max_iter=max_iter, tolerance=tolerance)[weight_decay]


def fit_logistic_path(
    x: NDArray[np.floating[Any]],
    y: NDArray[np.int64],
    k: int,
    weight_decays: Sequence[float],
    *,
    max_iter: int = 500,
    tolerance: float = 1e-6,
) -> dict[float, Linear]:
    """:func:`fit_logistic` for several weight decays: fitted from the strongest to the weakest, each one starting
    from the previous solution (the first from zero weights), which makes the weakly regularised fits (slow to
    converge from zero) cheap. L-BFGS with a strong-Wolfe line search, stopping when no gradient component exceeds
    ``tolerance`` or after ``max_iter`` iterations."""
    import torch

    features = torch.from_numpy(np.asarray(x, dtype=np.float64))
    target = torch.from_numpy(np.asarray(y, dtype=np.int64))
    w = torch.zeros((k, features.shape[1]), dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    out: dict[float, Linear] = {}
    for weight_decay in sorted(set(weight_decays), reverse=True):
        optimiser = torch.optim.LBFGS(
            [w, b],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=tolerance,
            tolerance_change=1e-10,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure(optimiser: torch.optim.LBFGS = optimiser, weight_decay: float = weight_decay) -> torch.Tensor:
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(features @ w.T + b, target)
            loss = loss + 0.5 * weight_decay * (w * w).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            return loss

        optimiser.step(closure)  # type: ignore[no-untyped-call]
        out[weight_decay] = (w.detach().numpy().copy(), b.detach().numpy().copy())
    return out
