"""What a finished ``train`` says and exits with: one summary line, one line per failed task, the exit status.

The CLI prints these; the Python API (``sercache.train``) returns the results themselves, and a
caller can apply the same policy with :func:`training_outcome`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sercache.training import run_layout


@dataclass(frozen=True)
class TrainingOutcome:
    summary: str          # stdout
    failures: list[str]   # stderr, one per fold x seed that failed
    exit_code: int        # 0 when every task trained, 1 when any failed (the others are kept: rerun to retry)
    scores: str | None = None  # stdout: UA/WA mean ± std over folds, and chance (None: nothing finished)


def training_outcome(run: str | Path, results: list[dict[str, Any]], *, n_classes: int | None = None,
                     finished: list[dict[str, Any]] | None = None) -> TrainingOutcome:
    """The summary of ``run_training``'s ``(run, results)``.

    Args:
        run: the run directory.
        results: what this call trained (one dict per fold x seed).
        n_classes: the preset's classes, for the chance level (None: not shown).
        finished: every finished fold x seed of the run, earlier calls' too (:func:`finished_results`);
            the score line is over these. None: over ``results``.
    """
    failed = [r for r in results if not r["ok"]]
    summary = (f"run: {run}  ({len(results) - len(failed)} fold/seed trained, {len(failed)} failed); "
               f"`sercache report {run}` for the table")
    return TrainingOutcome(summary, [f"failed: {r['fold']} seed {r['seed']}: {r['error']}" for r in failed],
                           1 if failed else 0, score_line(results if finished is None else finished, n_classes))


def score_line(results: list[dict[str, Any]], n_classes: int | None = None) -> str | None:
    """``test UA 84.81 ± 3.20%  WA ... (mean ± std over 10 folds, seeds averaged per fold; chance UA 25.00%)``."""
    by_fold: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r.get("ok", True) and "ua" in r:
            by_fold.setdefault(str(r["fold"]), []).append(r)
    if not by_fold:
        return None
    ua = np.array([np.mean([r["ua"] for r in rs]) for rs in by_fold.values()])
    wa = np.array([np.mean([r["wa"] for r in rs]) for rs in by_fold.values()])
    seeds = max(len(rs) for rs in by_fold.values())

    def mean_std(x: np.ndarray) -> str:
        return f"{100 * x.mean():.2f}" + (f" ± {100 * x.std(ddof=1):.2f}%" if len(x) > 1 else "%")

    over = (f"mean ± std over {len(ua)} folds" if len(ua) > 1 else "1 fold") + (
        ", seeds averaged per fold" if seeds > 1 else "")
    chance = f"; chance UA {100 / n_classes:.2f}%" if n_classes else ""
    return f"test UA {mean_std(ua)}  WA {mean_std(wa)}  ({over}{chance})"


def finished_results(run: str | Path) -> list[dict[str, Any]]:
    """The metrics of every finished fold x seed in ``run`` (``<fold>/seed<k>/metrics.json`` beside ``DONE``)."""
    out = []
    for done in sorted(Path(run).glob(f"*/{run_layout.SEED_PREFIX}*/{run_layout.DONE}")):
        try:
            metrics = json.loads((done.parent / run_layout.METRICS).read_text())
            out.append({"fold": done.parent.parent.name, "seed": run_layout.seed_of(done.parent), "ok": True,
                        "ua": float(metrics["ua"]), "wa": float(metrics["wa"])})
        except (OSError, ValueError, KeyError):  # an unreadable record is the report's business, not the summary's
            continue
    return out
