"""sercache: extract frozen encoder features once, train SER fusion heads from the cache.

Importing this package is cheap: it pulls in neither torch nor transformers, so a
notebook can ``import sercache`` and read a cache with h5py, numpy and pandas alone.
The four stages are functions here, with the CLI's options as keywords::

    import sercache
    sercache.extract("/data/emodb", corpus="emodb", out="cache/emodb", streams=("mfcc", "egemaps"))
    run, results = sercache.train("cache/emodb", "svm", streams={"audio": "egemaps"}, seeds=1)
    print(sercache.report([run]))
    sercache.report([run], html="report.html")   # also one self-contained page with the plots
    sercache.load_run(run).metrics          # one row per fold x seed
    sercache.evaluate(run)                  # checkpoints re-evaluated (as `sercache eval`), RUN/eval.csv written
    sercache.predict(run, ["clips/"], out="predictions.csv")   # new audio, features as the cache made them
    sercache.load_run(run).predict(waveform, 16_000)            # the same for an array
"""
from __future__ import annotations

import os
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "evaluate", "extract", "extract_features", "load_run", "open_cache", "predict", "report",
           "train"]


def open_cache(path):  # noqa: ANN001, ANN201 - thin re-export, documented in store.reader
    """Open a feature cache directory for reading. See :func:`sercache.store.open_cache`."""
    from sercache.store import open_cache as _open_cache

    return _open_cache(path)


def extract_features(root: Any, corpus: str, out: Any, **options: Any) -> Any:
    """``sercache extract``: keywords are :class:`sercache.extract.options.ExtractOptions` fields
    (``streams``, ``ssl_model``, ``layers``, ``device``, ...). Returns the :class:`ExtractReport`."""
    from sercache.extract.api import extract_features as _extract_features

    return _extract_features(root, corpus, out, **options)


#: ``sercache.extract(...)``; the ``sercache.extract`` subpackage, once imported, takes this name and is callable.
extract = extract_features


def train(cache: Any, head: str, **options: Any) -> tuple[Any, list[dict[str, Any]]]:
    """``sercache train``: keywords are :class:`sercache.training.run.TrainRequest` fields (``out``,
    ``protocol``, ``folds``, ``labels``, ``streams``, ``seeds``, ``jobs``, ``hyperparameters``, ``train`` for
    optimisation settings, ...). Returns ``(run directory, one result dict per fold x seed trained)``;
    :func:`sercache.training.outcome.training_outcome` of them is the command's summary and exit status."""
    from sercache.training.run import TrainRequest, run_training

    options.setdefault("command", f"sercache.train({cache!r}, {head!r}, **{options!r})")
    options.setdefault("progress_every", None)
    return run_training(TrainRequest(cache=cache, head=head, **options), progress=lambda message: None)


def load_run(path: Any) -> Any:
    """A finished (or partly finished) run directory: ``.config`` (a :class:`~sercache.training.run_config.RunConfig`,
    also readable as config.json's mapping), ``.metrics`` (per fold x seed), ``.predictions``.
    See :func:`sercache.runs.results.load_run`."""
    from sercache.runs.results import load_run as _load_run

    return _load_run(path)


def evaluate(run: Any, **options: Any) -> Any:
    """``sercache eval``: re-evaluate a run's checkpoints on their test folds (``cache=`` another corpus's cache, on
    the classes both presets share), one row per fold x seed as a DataFrame; also written to ``RUN/eval.csv`` (or
    ``RUN/eval-<cache>.csv``) unless ``write=False``. Keywords: see :func:`sercache.runs.evaluate.evaluate_run`
    (``fold``, ``cache``, ``labels``, ``device``); :func:`~sercache.runs.evaluate.evaluation_text` prints it
    as the command does."""
    from sercache.runs.evaluate import evaluate_run

    options.setdefault("write", True)
    return evaluate_run(run, **options)


def predict(run: Any, inputs: list[Any], **options: Any) -> Any:
    """``sercache predict``: one row per input (audio files, folders, CSV manifests) as a DataFrame, also written to
    ``out=`` when given. Keywords: see :func:`sercache.runs.predict.predict_run` (``fold``, ``window``,
    ``hop``, ``cache``, ``device``, ``models``, ``allow_different_weights``)."""
    from sercache.runs.predict import predict_run

    return predict_run(run, [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs), **options)[0]


def report(runs: list[Any], fmt: str = "md", n_boot: int = 1000, html: Any = None) -> str:
    """``sercache report``: the paper-style table of one or more runs (``fmt`` ``"md"`` or ``"csv"``).

    ``html``: also write the self-contained HTML page (tables and plots) to this file."""
    from sercache.runs.report import make_report

    return make_report(list(runs), fmt, n_boot=n_boot, html=html)
