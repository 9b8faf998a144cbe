"""A run directory edited or linked by hand: report, eval and predict refuse it by path, never with a traceback."""
from __future__ import annotations

import json
import shutil
import wave
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from sercache.cli import cli
from tests.conftest import trained_linear_probe

QUICK = ("--seeds", "1", "--epochs", "2")


@pytest.fixture(scope="module")
def trained_run(small_cache, tmp_path_factory) -> Path:
    return trained_linear_probe(small_cache, tmp_path_factory.mktemp("linear") / "run", *QUICK)


@pytest.fixture(scope="module")
def mlp_run(small_cache, tmp_path_factory) -> Path:
    return trained_linear_probe(small_cache, tmp_path_factory.mktemp("mlp") / "run", *QUICK, "--head", "mlp")


def invoke(command: str, run: Path, tmp_path: Path) -> tuple[int, str]:
    with wave.open(str(tmp_path / "clip.wav"), "wb") as clip:  # one second of silence, for predict
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(16000)
        clip.writeframes(bytes(32000))
    args = {"report": ["report", str(run)], "eval": ["eval", str(run)],
            "predict": ["predict", str(run), str(tmp_path / "clip.wav"), "--out", str(tmp_path / "p.csv")]}[command]
    result = CliRunner().invoke(cli, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["report", "eval", "predict"])
def test_a_recorded_head_that_is_not_a_sercache_head_is_refused(run_copy, tmp_path, command):
    path = run_copy / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "head": "os.system"}))
    code, output = invoke(command, run_copy, tmp_path)
    assert code == 2, output
    assert f"error: {path}: head: 'os.system' is not a sercache head (heads: " in output


@pytest.mark.parametrize("command", ["report", "eval", "predict"])
@pytest.mark.parametrize("nested", ["[" * 100_000 + "]" * 100_000, '{"a": ' * 100_000 + "1" + "}" * 100_000])
def test_a_deeply_nested_config_json_is_refused(run_copy, tmp_path, command, nested):
    path = run_copy / "config.json"
    path.write_text(nested)
    code, output = invoke(command, run_copy, tmp_path)
    assert code == 2, output
    assert f"error: {path} (the run's settings) is damaged: nested too deeply" in output


def _list_checkpoint(tmp_path: Path) -> Path:
    torch.save([1, 2], tmp_path / "list.pt")
    return tmp_path / "list.pt"


def _incomplete_checkpoint(tmp_path: Path) -> Path:
    torch.save({"state_dict": {}, "head": "linear"}, tmp_path / "incomplete.pt")
    return tmp_path / "incomplete.pt"


@pytest.mark.parametrize(("target", "expect"), [
    (lambda run, other, tmp: run / "loso-1" / "seed0" / "predictions.csv",
     "is not a checkpoint written by `sercache train` (neither a PyTorch archive nor a pickle"),
    (lambda run, other, tmp: run / "loso-1" / "seed0" / "metrics.json", "neither a PyTorch archive nor a pickle"),
    (lambda run, other, tmp: other / "loso-1" / "seed0" / "checkpoint.pt",
     "holds a 'mlp' head, and this run trains 'linear': it comes from another run"),
    (lambda run, other, tmp: _list_checkpoint(tmp), "is not a checkpoint written by `sercache train` (no state_dict)"),
    (lambda run, other, tmp: _incomplete_checkpoint(tmp),
     "not a checkpoint of `sercache train` (no valid dims, n_classes, hyperparameters, normalization)"),
], ids=["csv", "json", "other-head", "list", "incomplete"])
def test_eval_refuses_a_checkpoint_linked_to_something_else(run_copy, mlp_run, tmp_path, target, expect):
    link = run_copy / "loso-1" / "seed0" / "checkpoint.pt"
    pointed = Path(shutil.copy(target(run_copy, mlp_run, tmp_path), tmp_path / "pointed"))
    link.unlink()
    link.symlink_to(pointed)
    code, output = invoke("eval", run_copy, tmp_path)
    assert code == 2, output
    assert f"error: {link}" in output and expect in output and "rerun `sercache train`" in output
