"""``sercache.load_run``: a run's record (:mod:`record`) with ``.predict`` for new audio (:mod:`predict`).

It sits above both, so that the record never imports the code that reads it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from sercache.runs.predict import run_predict
from sercache.runs.record import RunRecord, read_run


class RunResults(RunRecord):
    def predict(self, waveform: Any, sample_rate: int, **options: Any) -> pd.DataFrame:
        """Emotion of one waveform as ``sercache predict`` gives it: one row (or one per ``window``/``hop``).

        Options: ``fold``, ``window``, ``hop``, ``cache``, ``device``, ``models``, ``allow_different_weights``
        (see :class:`sercache.runs.predict.Predictor`). Models load on the first call and are kept.
        """
        return run_predict(self, waveform, sample_rate, **options)


def load_run(path: str | Path) -> RunResults:
    """A finished (or partly finished) run directory, with ``.predict``; see :func:`sercache.load_run`."""
    return read_run(path, RunResults)
