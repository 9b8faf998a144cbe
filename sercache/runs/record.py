"""A finished (or partly finished) run directory, read: its config, metrics per fold x seed, test predictions.

Every reader of a run (report, plots, eval, predict) reads it through :func:`read_run`; the public
:func:`sercache.load_run` adds ``.predict`` on top (:mod:`results`), so this record imports none of its readers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pandas as pd

from sercache.runs.errors import RunNotFoundError
from sercache.splits import load_folds
from sercache.store.atomic import read_json
from sercache.training import run_layout
from sercache.training.run_config import REQUIRED_KEYS, RunConfig

R = TypeVar("R", bound="RunRecord")


@dataclass
class RunRecord:
    path: Path
    config: RunConfig            # a mapping (the run's config.json) is read into one
    metrics: pd.DataFrame        # one row per fold x seed
    predictions: pd.DataFrame    # all test predictions, with fold and seed columns
    test_ids: dict[str, list[str]]

    def __post_init__(self) -> None:
        if not isinstance(self.config, RunConfig):
            self.config = RunConfig.from_dict(self.config)

    @property
    def label_names(self) -> list[str]:
        return self.config.labels.classes


#: What report and eval read from a run's config.json (checked once, so a damaged run never gives a KeyError).
RUN_CONFIG_KEYS = REQUIRED_KEYS


def read_run(path: str | Path, kind: type[R] = RunRecord) -> R:  # type: ignore[assignment]
    """The run directory's record, as ``kind`` (:class:`RunRecord` or a subclass that adds behaviour)."""
    path = Path(path)
    if not run_layout.config_path(path).exists():
        raise RunNotFoundError(f"{path} is not a run directory (no {run_layout.CONFIG_FILE}): give the --out of "
                               "`sercache train`")
    config = RunConfig.load(run_layout.config_path(path))
    folds = load_folds(run_layout.folds_path(path))
    rows, preds = [], []
    for fold in folds:
        for seed_dir in run_layout.finished_tasks(path, fold.name):
            m = read_json(seed_dir / run_layout.METRICS, "a finished task's metrics", f"Delete {seed_dir} and rerun "
                          "`sercache train` with the same settings: only that task is retrained.")
            seed = run_layout.seed_of(seed_dir)
            rows.append({"fold": fold.name, "seed": seed, **m})
            preds.append(pd.read_csv(seed_dir / run_layout.PREDICTIONS).assign(fold=fold.name, seed=seed))
    if not rows:
        raise RunNotFoundError(f"{path} has no finished fold yet (no */seed*/{run_layout.DONE}); run `sercache train` "
                               "first")
    return kind(path, config, pd.DataFrame(rows), pd.concat(preds, ignore_index=True),
                {f.name: f.test for f in folds})
