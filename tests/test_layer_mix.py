"""Fusion heads on a learned mix of layers (``--layer all`` / ``2,4`` for gate, cmgi, tmn, mmer).

A real encoder's emotion sits in its middle layers more than its last; the fusion heads read one
layer, so ``--layer all`` gives them a softmax-weighted sum of the stored layers (zero-init, trained
with the head, as wsum does). The cache is Whisper-shaped and synthetic (7 hidden states, layers 4
and 5 with fp16 spikes of +-460, MiniLM-sized text).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from sercache.cli import cli
from sercache.heads.base import Batch, HeadError, StreamBatch
from sercache.store import open_cache
from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache
from sercache.training.roles import DataError, RoleSpec, resolve_roles
from sercache.training.trainer import build_head
from tests.conftest import synthetic_manifest

SMALL = {"tmn": ["fusion_dim=32", "patch_size=8", "mixer_dim=32", "depth=1"], "mmer": ["hidden=32", "heads=4", "ffn_dim=64"]}


@pytest.fixture(scope="module")
def layered_cache(tmp_path_factory):
    """80 utterances with a 7-layer audio stream; read-only."""
    m = synthetic_manifest(2)
    return write_synthetic_cache(tmp_path_factory.mktemp("mix") / "cache", m, [
        SyntheticStream("whisper", "whisper", 24, tuple(range(7)), outliers=460.0, outlier_layers=(4, 5)),
        SyntheticStream("mfcc", "mfcc", 8), SyntheticStream("text_asr", "text", 16)])


def _train(cache, out, head: str, layer: str, *extra: str):  # noqa: ANN001, ANN202
    args = ["train", str(cache), "--head", head, "--audio-stream", "whisper", "--layer", layer, "--fold", "2",
            "--seeds", "1", "--epochs", "2", "--out", str(out), "--device", "cpu", *extra]
    for setting in SMALL.get(head, []):
        args += ["--set", setting]
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.parametrize("head", ["gate", "cmgi", "tmn", "mmer"])
def test_every_fusion_head_with_a_zero_start_mix_is_the_head_on_the_mean_of_the_layers(head):
    """Same seed: the mixed head's own weights are the unmixed head's, and an equal mix is the layer mean."""
    dims = {"audio": 24, "text": 16}
    hyper = {k: int(v) for k, v in (s.split("=") for s in SMALL.get(head, []))}
    roles = {"audio": RoleSpec("audio", "whisper", [1, 3, 6]), "text": RoleSpec("text", "text_asr", [0])}
    torch.manual_seed(0)
    mixed = build_head(head, dims, 4, hyper, roles).eval()
    torch.manual_seed(0)
    plain = build_head(head, dims, 4, hyper, {**roles, "audio": RoleSpec("audio", "whisper", [6])}).eval()
    assert mixed.layer_weights_of() == {"audio": pytest.approx([1 / 3] * 3)} and plain.layer_weights_of() == {}
    own = {k: v for k, v in mixed.state_dict().items() if not k.startswith("layer_mix.")}
    assert set(own) == set(plain.state_dict()) and all(torch.equal(v, plain.state_dict()[k]) for k, v in own.items())
    g = torch.Generator().manual_seed(1)
    audio, text = torch.randn(3, 3, 10, 24, generator=g), torch.randn(3, 5, 16, generator=g)
    mask_a, mask_t = torch.arange(10) < torch.tensor([[10], [7], [4]]), torch.arange(5) < torch.tensor([[5], [3], [1]])
    y = torch.tensor([0, 1, 2])

    def batch(a: torch.Tensor) -> Batch:
        return Batch({"audio": StreamBatch(a, mask_a), "text": StreamBatch(text, mask_t)}, y)

    with torch.no_grad():
        torch.testing.assert_close(mixed(batch(audio)).logits, plain(batch(audio.mean(1))).logits, rtol=1e-5, atol=1e-5)
        mixed.layer_mix["audio"].copy_(torch.tensor([0.0, 50.0, 0.0]))  # all weight on the second layer read (3)
        torch.testing.assert_close(mixed(batch(audio)).logits, plain(batch(audio[:, 1])).logits, rtol=1e-4, atol=1e-4)
    with pytest.raises(HeadError, match=r"built to mix 3 layers of 'audio', and the batch gives \(3, 10, 24\)"):
        mixed(batch(audio.mean(1)))


def test_gate_learns_a_mix_of_every_layer_that_eval_reproduces_and_a_replay_repeats(layered_cache, tmp_path):
    out = tmp_path / "gate"
    result = _train(layered_cache, out, "gate", "all")
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["roles"]["audio"] == {"stream": "whisper", "layers": list(range(7))}
    metrics = json.loads(next(out.glob("*/seed0/metrics.json")).read_text())
    weights = metrics["layer_weights"]["audio"]
    assert list(weights) == [str(k) for k in range(7)] and sum(weights.values()) == pytest.approx(1, abs=1e-3)
    assert len(set(weights.values())) > 1  # trained away from the equal start
    assert "learned layer weights: audio 0:" in next(out.glob("*/seed0/train.log")).read_text()
    ev = CliRunner().invoke(cli, ["eval", str(out)], catch_exceptions=False)
    assert ev.exit_code == 0 and (pd.read_csv(out / "eval.csv").max_logit_diff_vs_record < 1e-4).all(), ev.output
    rep = CliRunner().invoke(cli, ["report", str(out)], catch_exceptions=False)
    shares = " ".join(f"{k}:{v:.2f}" for k, v in weights.items())  # one task: its weights are the mean
    assert f"audio: whisper layers 0,1,2,3,4,5,6, a learned mix (mean weight over tasks: {shares})" in rep.output
    again = CliRunner().invoke(cli, ["train", "--config", str(out / "config.json"), "--out", str(tmp_path / "again")],
                               catch_exceptions=False)
    assert again.exit_code == 0 and "replaying a recorded run with the same settings" in again.output, again.output
    replayed = json.loads(next((tmp_path / "again").glob("*/seed0/metrics.json")).read_text())
    assert replayed["layer_weights"] == metrics["layer_weights"] and replayed["ua"] == metrics["ua"]


@pytest.mark.parametrize("head", ["cmgi", "tmn", "mmer"])
def test_the_other_fusion_heads_mix_the_layers_named(layered_cache, tmp_path, head):
    result = _train(layered_cache, tmp_path / head, head, "2,4,6")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / head / "config.json").read_text())["roles"]["audio"]["layers"] == [2, 4, 6]
    metrics = json.loads(next((tmp_path / head).glob("*/seed0/metrics.json")).read_text())
    assert list(metrics["layer_weights"]["audio"]) == ["2", "4", "6"] and np.isfinite(metrics["ua"])


def test_one_layer_runs_record_no_mix_and_other_heads_refuse_several(layered_cache, tmp_path):
    result = _train(layered_cache, tmp_path / "one", "gate", "3")
    assert result.exit_code == 0, result.output
    assert "layer_weights" not in json.loads(next((tmp_path / "one").glob("*/seed0/metrics.json")).read_text())
    store = open_cache(layered_cache)
    with pytest.raises(DataError, match=r"--layer select: choosing a layer on validation is for the pooled heads"):
        resolve_roles(store, ("audio", "text"), (), {"audio": "whisper", "text": "text_asr"}, {"audio": "select"},
                      mixes=True)
    with pytest.raises(DataError, match=r"--layer 3,9: stream 'whisper' stores layers \[0, 1, 2, 3, 4, 5, 6\] frame by "
                                        r"frame \(no 9\)"):
        resolve_roles(store, ("audio",), (), {"audio": "whisper"}, {"audio": "3,9"}, mixes=True)
    with pytest.raises(DataError, match="--layer all: several layers, all and select are for the pooled heads"):
        resolve_roles(store, ("audio",), (), {"audio": "whisper"}, {"audio": "all"}, mixes=False)
    with pytest.raises(HeadError, match="head 'apcnn' reads one stored layer per role"):  # it cuts windows itself
        build_head("apcnn", {"mfcc": 8}, 4, {}, {"mfcc": RoleSpec("mfcc", "whisper", [2, 3])})
