"""Cohen's kappa as scikit-learn's ``cohen_kappa_score``: (p_o - p_e) / (1 - p_e), both terms times N^2; NaN at p_e = 1."""
from __future__ import annotations

from sercache.metrics import Confusion, Metric, nan_if_empty, register_metric


def kappa(c: Confusion) -> float:
    d = c.total ** 2 - c.support @ c.predicted
    return (c.total * c.tp.sum() - c.support @ c.predicted) / d if d else float("nan")


register_metric(Metric("kappa", "kappa", nan_if_empty(kappa), summary=True, order=50))
