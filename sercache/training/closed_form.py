"""Fitting the classical heads (``svm``, ``logreg``) on one fold: a validation grid, then the chosen model.

Every candidate of the head's grid (e.g. C x gamma) is fitted on the training utterances, standardised
with statistics of those utterances only, and scored by UA on the validation set; the first best
candidate wins (grids run from strong to weak regularisation, so ties keep the simpler model).
The test fold plays no part in any of it. A refit (``--refit``) then fits the chosen candidate
on training + validation, re-standardised on both.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from sercache.heads.classical import ClassicalHead
from sercache.training.epochs import FitResult, Progress, TrainingError
from sercache.training.metrics import classification_metrics


def head_inputs(head: ClassicalHead, data: Any, idx: np.ndarray) -> np.ndarray:
    """The exact matrix the head's ``forward`` sees for utterances ``idx``, as float64 for scikit-learn."""
    return head.inputs(data.batch(idx)).double().cpu().numpy()


def _fit_one(head: ClassicalHead, params: dict[str, Any], x: np.ndarray, y: np.ndarray) -> tuple[Any, str]:
    estimator = head.estimator(params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimator.fit(x, y)
    notes = sorted({type(w.message).__name__ for w in caught})
    return estimator, ", ".join(notes)


def select_and_fit(head: ClassicalHead, data: Any, tr: np.ndarray, va: np.ndarray | None, *, progress: Progress,
                   log: Callable[[str], None], where: str) -> FitResult:
    """Fit every candidate on ``tr``, keep the best by validation UA, export it into ``head``."""
    candidates = head.candidates()
    if len(candidates) > 1 and (va is None or not len(va)):
        raise TrainingError(f"{where}: {head.name} chooses among {len(candidates)} candidates on the validation set, "
                            "and this fold has none; give one value (e.g. --set C=10)")
    y = data.y.cpu().numpy()
    missing = sorted(set(range(data.n_classes)) - set(y[tr].tolist()))
    if missing:
        raise TrainingError(f"{where}: no training utterance of class(es) {missing}; {head.name} needs every class "
                            "on the training side (check the folds and --labels)")
    x_tr = head_inputs(head, data, tr)
    x_va = head_inputs(head, data, va) if va is not None and len(va) else None
    result, best = FitResult(), None
    for k, params in enumerate(candidates, 1):
        start = time.perf_counter()
        estimator, notes = _fit_one(head, params, x_tr, y[tr])
        row: dict[str, Any] = {"candidate": k, **{key: str(v) for key, v in params.items()},
                               "fit_seconds": time.perf_counter() - start}
        if notes:
            row["warnings"] = notes
        if x_va is not None:
            vm = classification_metrics(y[va], estimator.predict(x_va), data.n_classes)
            row.update(valid_ua=vm["ua"], valid_wa=vm["wa"])
            if best is None or vm["ua"] > best[0]:
                best = (vm["ua"], k, params, estimator)
        else:
            best = (float("nan"), k, params, estimator)
        result.curve.append(row)
        shown = " ".join(f"{key}={v}" for key, v in params.items())
        log(f"candidate {k}/{len(candidates)} {shown}: " + (f"valid UA {row['valid_ua']:.4f} WA {row['valid_wa']:.4f}"
            if "valid_ua" in row else "no validation set") + f" ({row['fit_seconds']:.2f}s){' ' + notes if notes else ''}")
        progress(f"candidate {k}/{len(candidates)} {shown}"
                 + (f": valid UA {100 * row['valid_ua']:.2f}%" if "valid_ua" in row else ""), force=k == 1)
    assert best is not None
    result.valid_ua, result.best_epoch, result.selected = best[0], best[1], dict(best[2])
    head.export(best[3])
    return result


def refit(head: ClassicalHead, data: Any, idx: np.ndarray, params: dict[str, Any]) -> float:
    """Fit ``params`` on utterances ``idx`` (training + validation) into ``head``; returns seconds."""
    start = time.perf_counter()
    estimator, _ = _fit_one(head, params, head_inputs(head, data, idx), data.y.cpu().numpy()[idx])
    head.export(estimator)
    return time.perf_counter() - start
