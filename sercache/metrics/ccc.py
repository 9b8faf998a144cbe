"""CCC of the valence and arousal outputs, for heads that regress them (the trainer computes them)."""
from __future__ import annotations

import numpy as np

from sercache.metrics import Metric, register_metric


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


register_metric(
    Metric("ccc_valence", "CCC-V", regression_index=0, order=60),
    Metric("ccc_arousal", "CCC-A", regression_index=1, order=61),
)
