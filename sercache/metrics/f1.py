"""macro-F1 (mean over the classes present in the ground truth) and weighted-F1 (support-weighted)."""
from __future__ import annotations

from sercache.metrics import Metric, nan_if_empty, register_metric

register_metric(
    Metric("macro_f1", "macro-F1", nan_if_empty(lambda c: c.f1[c.present].mean()), summary=True, order=30),
    Metric("weighted_f1", "weighted-F1", nan_if_empty(lambda c: (c.f1 * c.support).sum() / c.support.sum()), order=40),
)
