"""WA (overall accuracy) and UA (mean per-class recall over the classes present in the ground truth)."""
from __future__ import annotations

from sercache.metrics import Metric, nan_if_empty, register_metric

register_metric(
    Metric("wa", "WA", nan_if_empty(lambda c: c.tp.sum() / c.total), summary=True, order=10),
    Metric("ua", "UA", nan_if_empty(lambda c: c.recall[c.present].mean()), summary=True, order=20),
)
