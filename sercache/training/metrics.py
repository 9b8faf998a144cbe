"""The metrics as training, ``eval`` and the report use them: the registry's lists, bootstrap CIs, paired tests.

Every metric is declared by a module of :mod:`sercache.metrics` (one file per metric, registered on
import; the definitions are in :mod:`sercache.metrics.base`). :data:`METRICS` is the registry read once,
in table order: the trainer, ``eval``, the report's tables, CSV and bootstrap read it, so a new metric
is one new file there.
"""
from __future__ import annotations

import numpy as np

from sercache.metrics import Confusion, Metric, confusion, metrics
from sercache.metrics.ccc import ccc

__all__ = ["CLASSIFICATION", "METRICS", "METRIC_KEYS", "METRIC_NAMES", "REGRESSION", "Confusion", "Metric",
           "bootstrap_ci", "ccc", "classification_metrics", "confusion", "metrics_from_confusion", "paired_comparison",
           "per_class_recall"]

#: Every metric sercache reports, in table order (the metric registry, read when this module is imported).
METRICS: tuple[Metric, ...] = tuple(metrics().values())
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
        from scipy import stats  # here: a training worker needs no paired tests (scipy.stats: 0.5 s to import)

        out["t_p"] = float(stats.ttest_rel(a, b).pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b).pvalue)
    return out
