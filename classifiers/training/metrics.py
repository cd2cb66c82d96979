"""Classification metrics in numpy: macro recall, macro F1, expected calibration error, log loss."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from classifiers.training.data import Metric

__all__ = ["best_threshold", "expected_calibration_error", "log_loss", "macro_f1", "macro_recall", "score"]


def _confusion(y_true: NDArray[np.int64], y_pred: NDArray[np.int64], k: int) -> NDArray[np.int64]:
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def macro_recall(y_true: NDArray[np.int64], y_pred: NDArray[np.int64], k: int) -> float:
    """Mean over the classes present in ``y_true`` of their recall."""
    matrix = _confusion(y_true, y_pred, k)
    support = matrix.sum(axis=1)
    present = support > 0
    return float(np.mean(np.diag(matrix)[present] / support[present]))


def macro_f1(y_true: NDArray[np.int64], y_pred: NDArray[np.int64], k: int) -> float:
    """Mean over the ``k`` classes of F1 (a class never true nor predicted counts as 0, as scikit-learn does)."""
    matrix = _confusion(y_true, y_pred, k)
    tp = np.diag(matrix).astype(np.float64)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)
    f1 = np.divide(2 * tp, denominator, out=np.zeros(k), where=denominator > 0)
    return float(f1.mean())


def score(metric: Metric, y_true: NDArray[np.int64], y_pred: NDArray[np.int64], k: int) -> float:
    if metric == "macro_recall":
        return macro_recall(y_true, y_pred, k)
    return macro_f1(y_true, y_pred, k)


def expected_calibration_error(probabilities: NDArray[np.float64], y_true: NDArray[np.int64], bins: int = 15) -> float:
    """Top-label ECE: |accuracy - confidence| of the most probable label, averaged over equal-width bins."""
    confidence = probabilities.max(axis=1)
    correct = (probabilities.argmax(axis=1) == y_true).astype(np.float64)
    which = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(total / max(len(y_true), 1))


def log_loss(probabilities: NDArray[np.float64], y_true: NDArray[np.int64]) -> float:
    """Mean negative log probability of the true label."""
    p = probabilities[np.arange(len(y_true)), y_true]
    return float(-np.mean(np.log(np.clip(p, 1e-15, 1.0))))


def best_threshold(
    positive_probability: NDArray[np.float64], is_positive: NDArray[np.bool_], metric: Metric
) -> tuple[float, float]:
    """The threshold on the 0.01 grid (predict positive when p >= t) with the best metric, and that metric.

    Labels are 1 for positive and 0 for negative; on ties the threshold closest to 0.5 wins.
    """
    y_true = is_positive.astype(np.int64)
    best = (-1.0, 0.5)
    for t in sorted(np.round(np.arange(0.01, 1.0, 0.01), 2), key=lambda t: abs(t - 0.5)):
        value = score(metric, y_true, (positive_probability >= t).astype(np.int64), 2)
        if value > best[0]:
            best = (value, float(t))
    return best[1], best[0]
