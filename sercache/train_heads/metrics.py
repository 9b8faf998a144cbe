"""Canonical SER metrics (several peers invert WA and UA; we do not).

* WA (weighted accuracy) = overall accuracy = correct / total.
* UA (unweighted accuracy) = mean per-class recall = balanced accuracy.
* macro-F1 = unweighted mean of per-class F1; weighted-F1 = support-weighted mean.
* CCC = 2 cov(x, y) / (var x + var y + (mean x - mean y)^2), population moments.

Computed from a confusion matrix with numpy (fast enough for bootstrap resampling); the tests
check every one against scikit-learn's reference implementation.
"""
from __future__ import annotations

import numpy as np
from scipy import stats


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(classes, classes)`` counts; row = true class, column = predicted class."""
    return np.bincount(np.asarray(y_true) * n_classes + np.asarray(y_pred), minlength=n_classes**2).reshape(
        n_classes, n_classes)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """WA, UA, macro-F1 and weighted-F1 from a confusion matrix.

    UA and macro-F1 average over the classes present in the ground truth (as scikit-learn's
    ``balanced_accuracy_score`` does for recall; for F1, classes absent from both truth and
    predictions are skipped, as ``f1_score(labels=present)`` does).
    """
    cm = np.asarray(cm, dtype=np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    tp = np.diag(cm)
    total = cm.sum()
    present = support > 0
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    return {
        "wa": float(tp.sum() / total) if total else float("nan"),
        "ua": float(recall[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else float("nan"),
    }


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


METRIC_NAMES = ("wa", "ua", "macro_f1", "weighted_f1")


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
