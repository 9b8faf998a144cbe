"""The metric registry: every figure sercache reports, one module per metric (or family) in this package.

Each module here calls :func:`register_metric` with its :class:`Metric` entries when imported; the first
read of the registry imports every module of the package, so a new metric is one new file (see
kappa.py). A key registered twice is refused (``RegistryError``). The trainer (metrics.json), ``eval``
(table, CSV, mean line) and the report (tables, bootstrap CIs, paired tests, CSV, HTML) read it through
:mod:`sercache.training.metrics`, in the metrics' ``order``.
"""
from __future__ import annotations

from sercache.metrics.base import Confusion, Metric, confusion, nan_if_empty
from sercache.registry import Registry, RegistryError

__all__ = ["Confusion", "Metric", "UnknownMetricError", "confusion", "get_metric", "metrics", "nan_if_empty",
           "register_metric"]


class UnknownMetricError(RegistryError, KeyError):
    """A metric no module registers (a ``KeyError`` too, as a lookup by key is)."""

    __str__ = RegistryError.__str__  # the message itself, not KeyError's quoted repr


#: Every metric by key, in table order.
_METRICS: Registry[Metric] = Registry("metric", __name__, UnknownMetricError, order=lambda m: (m.order, m.key))


def register_metric(*entries: Metric) -> tuple[Metric, ...]:
    """Make ``entries`` available by key (a metric module calls this once, at import)."""
    for metric in entries:
        _METRICS.add(metric.key, metric)
    return entries


def metrics() -> dict[str, Metric]:
    """Every metric by key, in table order (the metric modules are imported on the first call)."""
    return _METRICS.all()


def get_metric(key: str) -> Metric:
    return _METRICS.get(key)
