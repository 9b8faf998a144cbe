"""What every metric is a formula of: the confusion matrix and its per-class counts, and :class:`Metric` itself.

Canonical SER definitions (several peers invert WA and UA; we do not):

* WA (weighted accuracy) = overall accuracy = correct / total.
* UA (unweighted accuracy) = mean per-class recall = balanced accuracy.
* macro-F1 = unweighted mean of per-class F1; weighted-F1 = support-weighted mean.
* CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2), population moments.

Computed from a confusion matrix with numpy (fast enough for bootstrap resampling); the tests check
every one against scikit-learn's reference implementation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(classes, classes)`` counts; row = true class, column = predicted class."""
    return np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred), minlength=n_classes**2).reshape(
        n_classes, n_classes)


@dataclass(frozen=True)
class Confusion:
    """The per-class counts every classification metric is a formula of (computed once per confusion matrix)."""

    cm: np.ndarray          # float64, row = true class
    support: np.ndarray     # true utterances per class
    predicted: np.ndarray   # predictions per class
    tp: np.ndarray
    total: float
    present: np.ndarray     # classes present in the ground truth
    recall: np.ndarray
    f1: np.ndarray

    @classmethod
    def of(cls, cm: np.ndarray) -> Confusion:
        cm = np.asarray(cm, dtype=np.float64)
        support, predicted, tp = cm.sum(1), cm.sum(0), np.diag(cm)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp),
                       where=(precision + recall) > 0)
        return cls(cm, support, predicted, tp, float(cm.sum()), support > 0, recall, f1)


def nan_if_empty(fn: Callable[[Confusion], float]) -> Callable[[Confusion], float]:
    """``fn``, or NaN for an empty confusion matrix (no utterance, or no class present)."""
    return lambda c: float(fn(c)) if c.total and c.present.any() else float("nan")


@dataclass(frozen=True)
class Metric:
    """One reported figure: its key (metrics.json, eval CSV, report CSV columns ``KEY_mean``...) and display name.

    Classification metrics are a formula of the test confusion matrix (``of``), so one registry serves the
    trainer, ``eval``, the report's bootstrap and its pooled figures. Regression metrics (``of`` None)
    are the CCC of one valence/arousal output (``regression_index``), for heads that regress them.
    ``order``: the metric's place in tables (and ``sercache catalog``), lowest first.
    """

    key: str
    label: str
    of: Callable[[Confusion], float] | None = None
    regression_index: int | None = None
    summary: bool = False  # on the one-line summaries (eval's mean line)
    order: float = 100.0
