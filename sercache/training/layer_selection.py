"""``--layer select``: a pooled head's layers, chosen per fold on the validation speakers.

Each choice of :meth:`~sercache.training.pooled.PooledData.layer_choices` (every single pooled
layer of the role's layered stream, then all of them together) is fitted exactly as if it had been
given on the command line: standardised with statistics of the training utterances, then the head's
own selection on validation (its epochs with early stopping, or its C/gamma grid), from the same
seed. The choice with the best validation UA is kept; a tie keeps the earlier one (a single layer
before all of them, a lower layer first: the smaller input). For the closed-form heads (svm, logreg)
this is their validation grid with the layers as one more dimension; the trained probes (linear,
mlp) train once per choice, seconds each (an epoch of a pooled probe takes milliseconds:
benchmarks/small_heads.py). The test fold plays no part in any of it. A refit on training +
validation then uses the chosen layers.

The curve gets every choice's rows with a ``layers`` column: the chosen one's as phase ``select``
(what the report draws), the others' as phase ``layers``.
"""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

import numpy as np

from sercache.heads.base import Head
from sercache.training.epochs import FitResult, Progress, TrainingError

#: Fits the head on the data's current layers; its argument names them (for per-row logs).
FitChoice = Callable[[str], tuple[Head, FitResult, float]]


def words(view: dict[str, Any], functionals: Collection[str] = ()) -> str:
    """``whisper:3+egemaps`` (``audio whisper:3; text text_asr:6`` with several roles): one choice, in a few words."""
    return "; ".join(f"{role} {spec.describe(functionals)}" if len(view) > 1 else spec.describe(functionals)
                     for role, spec in view.items())


def choose_layers(data: Any, fit: FitChoice, va: np.ndarray, *, progress: Progress, log: Callable[[str], None],
                  where: str) -> tuple[Head, FitResult, float, list[dict[str, Any]], list[dict[str, Any]]]:
    """Fit every layer choice, keep the best by validation UA; ``data`` is left on the chosen layers.

    Returns the chosen head, its fit, the seconds of all fits, the curve rows (see the module doc)
    and one ``{"layers", "valid_ua"}`` per choice.
    """
    choices = data.layer_choices()
    if not len(va):
        raise TrainingError(f"{where}: --layer select chooses among {len(choices)} layer choices on the validation "
                            "set, and this fold has none; give the layers (e.g. --layer all)")
    best: tuple[float, int, Head, FitResult, Any] | None = None
    fitted, seconds = [], 0.0
    for k, view in enumerate(choices, 1):
        data.use_layers(view)
        name = words(view, data.functionals)
        head, result, took = fit(name)
        seconds += took
        fitted.append((name, result))
        log(f"layer choice {k}/{len(choices)} {name}: valid UA {result.valid_ua:.4f} ({took:.2f}s)")
        progress(f"layer choice {k}/{len(choices)} {name}: valid UA {100 * result.valid_ua:.2f}%", force=True)
        if best is None or result.valid_ua > best[0]:
            best = (result.valid_ua, k, head, result, data.normalization)
    assert best is not None
    _, chosen, head, result, normalization = best
    data.use_layers(choices[chosen - 1])
    data.normalization = normalization  # the chosen fit's training statistics, as it was evaluated with
    log(f"layers chosen on validation: {fitted[chosen - 1][0]}")
    progress(f"layers chosen on validation: {fitted[chosen - 1][0]} (valid UA {100 * best[0]:.2f}%)", force=True)
    curve = [{"phase": "select" if k == chosen else "layers", "layers": name, **row}
             for k, (name, res) in enumerate(fitted, 1) for row in res.curve]
    return head, result, seconds, curve, [{"layers": name, "valid_ua": res.valid_ua} for name, res in fitted]
