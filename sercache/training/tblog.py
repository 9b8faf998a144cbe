"""``sercache train --tensorboard``: one fold/seed's training curves as TensorBoard event files.

Each fold and seed gets its own log directory, ``RUN/<fold>/seed<k>/tensorboard/``, so
``tensorboard --logdir RUN`` shows them all side by side. The scalars are curve.csv's, written as
each epoch ends (step: the epoch):

* selection: ``train/loss``, ``valid/loss``, ``valid/ua``, ``valid/wa``, ``lr``;
* a refit on training + validation: ``refit/train_loss``, ``refit/lr``;
* closed-form heads (svm, logreg) have no epochs: each candidate of the validation grid is one step
  (its number) of ``grid/valid_ua`` and ``grid/valid_wa``;
* at the end, ``test/ua`` and ``test/wa`` (step: the selected epoch, or candidate);
* ``--layer select``: each layer choice's selection scalars under ``layers <choice>/``.

``tensorboard`` is an optional dependency (``pip install 'sercache[tensorboard]'``), imported only here.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

from sercache.errors import SercacheError
from sercache.training.run_layout import TENSORBOARD_DIR

TAGS = {"select": {"train_loss": "train/loss", "valid_loss": "valid/loss", "valid_ua": "valid/ua",
                   "valid_wa": "valid/wa", "lr": "lr"},
        "refit": {"train_loss": "refit/train_loss", "lr": "refit/lr"}}
GRID_TAGS = {"valid_ua": "grid/valid_ua", "valid_wa": "grid/valid_wa"}
LOG_DIR = TENSORBOARD_DIR


class TensorBoardMissing(SercacheError, ValueError):
    """--tensorboard was asked and the tensorboard package is not installed."""


def require_tensorboard() -> None:
    """Refuse --tensorboard up front when its package is missing, with the command that installs it."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise TensorBoardMissing(f"--tensorboard needs the tensorboard package ({exc}); install it with "
                                 "pip install 'sercache[tensorboard]', or train without --tensorboard") from None


class CurveLog:
    """The event files of one fold/seed; an interrupted attempt's are replaced, so steps never repeat."""

    def __init__(self, task_dir: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.dir = Path(task_dir) / LOG_DIR
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def row(self, phase: str, row: dict[str, Any], layers: str | None = None) -> None:
        """One curve.csv row of ``phase`` (select or refit): an epoch, or a closed-form candidate.

        ``layers``: the layer choice being tried (``--layer select``), whose tags go under ``layers <choice>/``.
        """
        if "epoch" in row:
            tags, step = TAGS[phase], int(row["epoch"])
        elif "candidate" in row and phase == "select":
            tags, step = GRID_TAGS, int(row["candidate"])
        else:
            return
        prefix = f"layers {layers}/" if layers else ""
        for key, tag in tags.items():
            value = row.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(prefix + tag, float(value), step)
        self.writer.flush()  # a running `tensorboard` shows the epoch now, not minutes later

    def test(self, metrics: dict[str, Any], step: int) -> None:
        for key in ("ua", "wa"):
            self.writer.add_scalar(f"test/{key}", float(metrics[key]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
