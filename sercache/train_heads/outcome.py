"""What a finished ``train`` says and exits with: one summary line, one line per failed task, the exit status.

The CLI prints these; the Python API (``sercache.train``) returns the results themselves, and a
caller can apply the same policy with :func:`training_outcome`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainingOutcome:
    summary: str          # stdout
    failures: list[str]   # stderr, one per fold x seed that failed
    exit_code: int        # 0 when every task trained, 1 when any failed (the others are kept: rerun to retry)


def training_outcome(run: str | Path, results: list[dict[str, Any]]) -> TrainingOutcome:
    """The summary of ``run_training``'s ``(run, results)``."""
    failed = [r for r in results if not r["ok"]]
    summary = (f"run: {run}  ({len(results) - len(failed)} fold/seed trained, {len(failed)} failed); "
               f"`sercache report {run}` for the table")
    return TrainingOutcome(summary, [f"failed: {r['fold']} seed {r['seed']}: {r['error']}" for r in failed],
                           1 if failed else 0)
