"""Where things live inside a run directory (what ``sercache train`` and ``sweep`` write).

A run is one head on one cache, trained per fold and seed::

    RUN/
      config.json            everything needed to rebuild the experiment (see run_config.RunConfig)
      folds.json             utterance ids of every fold's train/valid/test side
      .lock                  held (flock) by the one `sercache train` or `sweep` training into RUN
      report.md, report.csv  written by `sercache report`, with confusion.png
      eval.csv               written by `sercache eval` (eval-<cache>.csv for another cache)
      <fold>/seed<k>/
        checkpoint.pt        the selected weights and the config (tensors and plain values only)
        curve.csv            per epoch (or closed-form candidate) training curves
        predictions.csv      the test utterances' labels, predictions and logits
        metrics.json         test metrics, the selection, timings
        train.log            the task's log, appended to by every attempt
        tensorboard/         --tensorboard: curve.csv as TensorBoard event files
        DONE                 written last: the task is finished and is never retrained
        FAILED               the error of the last attempt (removed when it is retried)

A sweep directory holds one run per configuration, ``sweep.json`` (the grid), the combined
``report.md``/``report.csv`` and, on SLURM, submitit's ``.jobs/<time>/`` folder.
"""
from __future__ import annotations

import re
from pathlib import Path

from sercache._typing import Pathlike
from sercache.errors import SercacheError
from sercache.store.layout import is_folder_name

# written by train: the run's settings and folds, the lock of the one process training into it
CONFIG_FILE, FOLDS_FILE, LOCK_FILE = "config.json", "folds.json", ".lock"
# written by report (and, in a sweep directory, the combined report beside sweep.json and SLURM's .jobs/)
REPORT_MD, REPORT_CSV, CONFUSION_PNG = "report.md", "report.csv", "confusion.png"
SWEEP_FILE, JOBS_DIR = "sweep.json", ".jobs"
# inside <fold>/seed<k>/: the task's records, DONE last
CHECKPOINT, CURVE, PREDICTIONS, METRICS = "checkpoint.pt", "curve.csv", "predictions.csv", "metrics.json"
TRAIN_LOG, TENSORBOARD_DIR = "train.log", "tensorboard"
DONE, FAILED = "DONE", "FAILED"

SEED_PREFIX = "seed"
_SEED_RE = re.compile(rf"^{SEED_PREFIX}(\d+)$")


class RunLayoutError(SercacheError, ValueError):
    """A fold or task folder name that does not fit a run's layout."""


def config_path(run: Pathlike) -> Path:
    return Path(run) / CONFIG_FILE


def folds_path(run: Pathlike) -> Path:
    return Path(run) / FOLDS_FILE


def lock_path(run: Pathlike) -> Path:
    return Path(run) / LOCK_FILE


def eval_csv(run: Pathlike, other_cache: Pathlike | None = None) -> Path:
    """Where ``sercache eval`` writes its table: ``eval.csv``, or ``eval-<cache name>.csv`` for another cache."""
    return Path(run) / ("eval.csv" if other_cache is None else f"eval-{Path(other_cache).name}.csv")


def task_dir(run: Pathlike, fold: str, seed: int) -> Path:
    """``RUN/<fold>/seed<k>``: a fold name is one folder level inside the run, whatever folds.json says."""
    if not is_folder_name(fold):
        raise RunLayoutError(f"invalid fold name {fold!r}: a fold is a directory directly inside the run {run}")
    return Path(run) / fold / f"{SEED_PREFIX}{int(seed)}"


def seed_of(task: Pathlike) -> int:
    """The seed of a ``seed<k>`` task directory."""
    match = _SEED_RE.match(Path(task).name)
    if match is None:
        raise RunLayoutError(f"{task} is not a task directory (seed<k>)")
    return int(match.group(1))


def is_done(task: Pathlike) -> bool:
    return (Path(task) / DONE).exists()


def finished_tasks(run: Pathlike, fold: str) -> list[Path]:
    """A fold's finished ``seed<k>`` directories, in name order (seed0, seed1, seed10, seed2...)."""
    folder = Path(run) / fold
    return [d for d in sorted(folder.glob(f"{SEED_PREFIX}*")) if _SEED_RE.match(d.name) and is_done(d)]


def has_finished_task(run: Pathlike) -> bool:
    """Whether any fold x seed of ``run`` is done (a report can be made)."""
    return any(_SEED_RE.match(d.parent.name) for d in Path(run).glob(f"*/{SEED_PREFIX}*/{DONE}"))
