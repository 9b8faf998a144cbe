"""Canonical SER metrics (several peers invert WA and UA; we do not).

* WA (weighted accuracy) = overall accuracy = correct / total.
* UA (unweighted accuracy) = mean per-class recall = balanced accuracy.
* macro-F1 = unweighted mean of per-class F1; weighted-F1 = support-weighted mean.
* CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2), population moments.

:data:`METRICS` is the one list of them, with their display names: the trainer, ``eval``, the
report's tables, CSV and bootstrap read it, so a new metric is one entry there.

Computed from a confusion matrix with numpy (fast enough for bootstrap resampling); the tests
check every one against scikit-learn's reference implementation.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import stats


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


def _nan_if_empty(fn: Callable[[Confusion], float]) -> Callable[[Confusion], float]:
    return lambda c: float(fn(c)) if c.total and c.present.any() else float("nan")


@dataclass(frozen=True)
class Metric:
    """One reported figure: its key (metrics.json, eval CSV, report CSV columns ``KEY_mean``...) and display name.

    Classification metrics are a formula of the test confusion matrix (``of``), so one list serves the
    trainer, ``eval``, the report's bootstrap and its pooled figures. Regression metrics (``of`` None)
    are the CCC of one valence/arousal output (``regression_index``), for heads that regress them.
    """

    key: str
    label: str
    of: Callable[[Confusion], float] | None = None
    regression_index: int | None = None
    summary: bool = False  # on the one-line summaries (eval's mean line)


#: Every metric sercache reports, in table order. A new metric is one entry here.
METRICS: tuple[Metric, ...] = (
    Metric("wa", "WA", _nan_if_empty(lambda c: c.tp.sum() / c.total), summary=True),
    Metric("ua", "UA", _nan_if_empty(lambda c: c.recall[c.present].mean()), summary=True),
    Metric("macro_f1", "macro-F1", _nan_if_empty(lambda c: c.f1[c.present].mean()), summary=True),
    Metric("weighted_f1", "weighted-F1", _nan_if_empty(lambda c: (c.f1 * c.support).sum() / c.support.sum())),
    # Cohen's kappa as scikit-learn's cohen_kappa_score: (p_o - p_e) / (1 - p_e), both terms times N^2; NaN at p_e = 1
    Metric("kappa", "kappa", _nan_if_empty(lambda c: (c.total * c.tp.sum() - c.support @ c.predicted) / d
                                           if (d := c.total ** 2 - c.support @ c.predicted) else float("nan")), summary=True),
    Metric("ccc_valence", "CCC-V", regression_index=0),
    Metric("ccc_arousal", "CCC-A", regression_index=1),
)
CLASSIFICATION = tuple(m for m in METRICS if m.of is not None)
REGRESSION = tuple(m for m in METRICS if m.regression_index is not None)
#: The classification metrics' keys (every one computed for every run), and every metric's.
METRIC_NAMES = tuple(m.key for m in CLASSIFICATION)
METRIC_KEYS = tuple(m.key for m in METRICS)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Every classification metric of :data:`METRICS` from a confusion matrix.

    UA and macro-F1 average over the classes present in the ground truth (as scikit-learn's
    ``balanced_accuracy_score`` does for recall; for F1, classes absent from both truth and
    predictions are skipped, as ``f1_score(labels=present)`` does).
    """
    c = Confusion.of(cm)
    return {m.key: m.of(c) for m in CLASSIFICATION}


def per_class_recall(cm: np.ndarray) -> np.ndarray:
    """Recall of every class from a confusion matrix (row = true class).

    Classes absent from the ground truth get NaN rather than scikit-learn's 0, so that averaging
    over folds (``np.nanmean``) skips a fold whose test set lacks the class instead of counting a 0.
    """
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(1)
    return np.divide(np.diag(cm), support, out=np.full(len(cm), np.nan), where=support > 0)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict[str, float]:
    return metrics_from_confusion(confusion(y_true, y_pred, n_classes))


def ccc(x: np.ndarray, y: np.ndarray) -> float:
    """Concordance correlation coefficient of predictions ``x`` and targets ``y`` (NaN pairs dropped)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2:
        return float("nan")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denom = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denom) if denom > 0 else float("nan")



def bootstrap_ci(runs: list[tuple[np.ndarray, np.ndarray]], n_classes: int, *, n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95, paired_groups: list[int] | None = None) -> dict[str, tuple[float, float]]:
    """Percentile CI of the mean-over-runs metrics, resampling each run's test utterances.

    Args:
        runs: ``(y_true, y_pred)`` per fold x seed.
        paired_groups: runs with the same group id (e.g. the same fold under several seeds) share
            their resampled indices, so seeds are not treated as independent test sets.
    """
    rng = np.random.default_rng(seed)
    groups = paired_groups or list(range(len(runs)))
    sizes = {g: len(runs[i][0]) for i, g in enumerate(groups)}
    samples = {m: np.empty(n_boot) for m in METRIC_NAMES}
    for b in range(n_boot):
        idx = {g: rng.integers(0, n, n) for g, n in sizes.items()}
        per_run = [metrics_from_confusion(confusion(t[idx[g]], p[idx[g]], n_classes)) for (t, p), g in zip(runs, groups)]
        for m in METRIC_NAMES:
            samples[m][b] = np.mean([r[m] for r in per_run])
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    return {m: (float(np.nanpercentile(v, lo)), float(np.nanpercentile(v, hi))) for m, v in samples.items()}


def paired_comparison(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired differences ``a - b`` over matched folds x seeds, with a t-test and a Wilcoxon test."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = a - b
    out = {"n": int(len(d)), "mean_diff": float(d.mean()), "std_diff": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
           "t_p": float("nan"), "wilcoxon_p": float("nan")}
    if len(d) > 1 and np.any(d != 0):
        out["t_p"] = float(stats.ttest_rel(a, b).pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    return out
