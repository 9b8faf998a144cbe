"""--precision: autocast training and evaluation, recorded in the run, reused by eval; refused where it has no use."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from sercache.cli import cli
from sercache.heads.base import HeadOutput
from sercache.heads.tmn import TensorMixerHead
from sercache.runs.evaluate import evaluate_run
from sercache.training.train_config import TrainConfig, TrainConfigError

#: a small tmn that learns the planted signal in a few epochs (as tests/test_train.py's)
TMN = ["--head", "tmn", "--set", "fusion_dim=32", "--set", "patch_size=8", "--set", "mixer_dim=32", "--set", "depth=2",
       "--lr", "2e-3", "--batch-size", "8", "--epochs", "8", "--patience", "8", "--fold", "1", "--device", "cpu",
       "--no-progress"]


@pytest.fixture
def logit_dtypes(monkeypatch) -> list[torch.dtype]:
    """The dtype of every tmn forward pass's logits, in the order they ran (training and evaluation)."""
    seen: list[torch.dtype] = []
    forward = TensorMixerHead.forward

    def recording(self, batch) -> HeadOutput:  # noqa: ANN001
        out = forward(self, batch)
        seen.append(out.logits.dtype)
        return out

    monkeypatch.setattr(TensorMixerHead, "forward", recording)
    return seen


def _train(cache, out, *extra: str) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    result = CliRunner().invoke(cli, ["train", str(cache), *TMN, *extra, "--out", str(out)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_run_trains_and_evaluates_at_its_precision(signal_cache, tmp_path, logit_dtypes, precision, dtype):
    _train(signal_cache, tmp_path / "run", "--precision", precision)
    assert logit_dtypes and set(logit_dtypes) == {dtype}  # every forward pass: training, validation, test
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["precision"] == precision
    metrics = json.loads(next((tmp_path / "run").glob("*/seed0/metrics.json")).read_text())
    assert metrics["ua"] >= 0.9, metrics["ua"]  # it still learns the planted signal
    # eval rebuilds the checkpoint and evaluates at the run's precision: the recorded logits come back exactly
    # (at fp32 they would differ by the low-precision rounding, about 1e-2)
    logit_dtypes.clear()
    table = evaluate_run(tmp_path / "run", write=False)
    assert set(logit_dtypes) == {dtype}
    assert table.max_logit_diff_vs_record.max() < 1e-5


def test_the_default_is_fp32_and_differs_from_bf16(signal_cache, tmp_path, logit_dtypes):
    _train(signal_cache, tmp_path / "fp32")
    assert set(logit_dtypes) == {torch.float32}
    assert json.loads((tmp_path / "fp32" / "config.json").read_text())["train"]["precision"] == "fp32"
    _train(signal_cache, tmp_path / "bf16", "--precision", "bf16")
    logits = [pd.read_csv(next((tmp_path / run).glob("*/seed0/predictions.csv"))).filter(like="logit_").to_numpy()
              for run in ("fp32", "bf16")]
    assert logits[0].shape == logits[1].shape and logits[0].shape[1] == 4
    assert not np.allclose(*logits, atol=1e-4)  # same seed and data: only the precision differs


def test_replaying_a_run_keeps_its_precision(signal_cache, tmp_path, logit_dtypes):
    _train(signal_cache, tmp_path / "run", "--precision", "bf16")
    _train(signal_cache, tmp_path / "replay", "--config", str(tmp_path / "run" / "config.json"))
    assert json.loads((tmp_path / "replay" / "config.json").read_text())["train"]["precision"] == "bf16"


def test_closed_form_heads_refuse_a_precision(signal_cache, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(signal_cache), "--head", "logreg", "--audio-stream", "mfcc",
                                      "--precision", "bf16", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "--precision bf16" in result.output and "closed form" in result.output
    assert not (tmp_path / "run").exists()


def test_an_unknown_precision_is_refused_by_name() -> None:
    with pytest.raises(TrainConfigError, match="precision='fp8'"):
        TrainConfig(precision="fp8").check()
    result = CliRunner().invoke(cli, ["train", ".", "--head", "tmn", "--precision", "fp8"])
    assert result.exit_code == 2 and "'fp8' is not one of" in result.output
