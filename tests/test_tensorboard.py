"""`sercache train --tensorboard`: curve.csv's values, read back with TensorBoard's own event reader."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sercache.cli import cli

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    acc = event_accumulator.EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def train(*args: object) -> None:
    result = CliRunner().invoke(cli, ["train", *map(str, args), "--device", "cpu", "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output


def logged_as_curve(logged: dict, tag: str, rows: pd.DataFrame, column: str, step: str = "epoch") -> None:
    """TensorBoard's scalar ``tag`` holds ``column`` of curve.csv, step by step (float32 precision)."""
    want = [(int(s), pytest.approx(float(v), rel=1e-6, abs=1e-7)) for s, v in zip(rows[step], rows[column])]
    assert want and logged[tag] == want, tag


def test_epoch_curves_of_every_fold_and_seed(small_cache, tmp_path):
    run = tmp_path / "run"
    train(small_cache, "--head", "gate", "--fold", "1", "--seeds", "2", "--epochs", "3", "--lr", "3e-3",
          "--batch-size", "8", "--refit", "--tensorboard", "--out", run)
    assert json.loads((run / "config.json").read_text())["tensorboard"] is True
    tasks = sorted(p.parent for p in run.glob("*/seed*/DONE"))
    assert len(tasks) == 2  # two seeds, each its own log directory
    for task in tasks:
        logged = scalars(task / "tensorboard")
        curve = pd.read_csv(task / "curve.csv")
        select, refit = curve[curve.phase == "select"], curve[curve.phase == "refit"]
        for tag, column in (("train/loss", "train_loss"), ("valid/loss", "valid_loss"), ("valid/ua", "valid_ua"),
                            ("valid/wa", "valid_wa"), ("lr", "lr")):
            logged_as_curve(logged, tag, select, column)
        logged_as_curve(logged, "refit/train_loss", refit, "train_loss")
        logged_as_curve(logged, "refit/lr", refit, "lr")
        metrics = json.loads((task / "metrics.json").read_text())
        assert logged["test/ua"] == [(metrics["best_epoch"], pytest.approx(metrics["ua"], rel=1e-6))]
        assert logged["test/wa"] == [(metrics["best_epoch"], pytest.approx(metrics["wa"], rel=1e-6))]


def test_closed_form_heads_log_their_validation_grid(small_cache, tmp_path):
    run = tmp_path / "run"
    train(small_cache, "--head", "svm", "--fold", "1", "--seeds", "1", "--tensorboard", "--out", run)
    task = run / "loso-1" / "seed0"
    logged, curve = scalars(task / "tensorboard"), pd.read_csv(task / "curve.csv")
    select = curve[curve.phase == "select"]
    assert len(select) == 4  # svm's default grid: C in 0.1, 1, 10, 100
    logged_as_curve(logged, "grid/valid_ua", select, "valid_ua", step="candidate")
    logged_as_curve(logged, "grid/valid_wa", select, "valid_wa", step="candidate")
    assert "train/loss" not in logged and "test/ua" in logged


def test_resuming_with_tensorboard_is_no_change_of_settings(small_cache, tmp_path):
    """--tensorboard only adds logs: a run made without it resumes with it, and the new tasks log."""
    run = tmp_path / "run"
    common = ("--head", "linear", "--seeds", "1", "--epochs", "2", "--no-refit", "--out", run)
    train(small_cache, "--fold", "1", *common)
    train(small_cache, "--fold", "1,2", *common, "--tensorboard")
    assert not (run / "loso-1" / "seed0" / "tensorboard").exists()  # done before: not retrained
    assert scalars(run / "loso-2" / "seed0" / "tensorboard")["train/loss"]


def test_tensorboard_without_the_package_is_refused_up_front(small_cache, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what `import tensorboard` meets when not installed
    result = CliRunner().invoke(cli, ["train", str(small_cache), "--head", "linear", "--tensorboard",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "pip install 'sercache[tensorboard]'" in result.output, result.output
    assert not (tmp_path / "run").exists()
