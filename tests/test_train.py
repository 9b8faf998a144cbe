"""Training from the cache: every head learns a planted signal, and only that; runs, eval, report."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from sercache.cli import cli
from sercache.heads import get_head
from sercache.training.run import RunError, TrainRequest, run_training
from tests.conftest import synthetic_manifest, write_signal_cache
from tests.test_heads import SMALL

#: Per head: small hyperparameters and training settings that fit a 240-utterance synthetic set.
FAST = {
    "gate": {"lr": 3e-3, "batch_size": 8, "epochs": 15, "patience": 15},
    "cmgi": {"lr": 1e-3, "batch_size": 8, "epochs": 15, "patience": 15},
    "linear": {"lr": 2e-2, "batch_size": 16, "epochs": 25},
    "mlp": {"lr": 1e-2, "batch_size": 16, "epochs": 25},
    "svm": {}, "logreg": {},
    "wsum": {"lr": 5e-3, "batch_size": 16, "epochs": 20},
    "glam": {"lr": 2e-3, "batch_size": 8, "epochs": 5},
    "apcnn": {"lr": 3e-3, "batch_size": 8, "epochs": 10},
    "mhcnn": {"lr": 3e-3, "batch_size": 8, "epochs": 10, "patience": 10},
    "tmn": {"lr": 2e-3, "batch_size": 8, "epochs": 15, "patience": 15},
    "mmer": {"lr": 1e-3, "batch_size": 16, "epochs": 12},
}
SEGMENTS = {"segment_frames": 24, "hop_frames": 12}  # shorter GLAM segments keep the test fast
HYPER = {**SMALL, "wsum": {"hidden": 16}, "glam": SEGMENTS, "apcnn": SEGMENTS, "mhcnn": SEGMENTS}


def train(cache: Path, out: Path, head: str, **kw) -> tuple[Path, list[dict]]:
    req = TrainRequest(cache=cache, head=head, out=out, fold=kw.pop("fold", "1,2"), seeds=kw.pop("seeds", 1),
                       hyperparameters=kw.pop("hyperparameters", HYPER[head]), train=kw.pop("train", FAST[head]),
                       device="cpu", **kw)
    run, results = run_training(req, progress=lambda m: None)
    assert all(r["ok"] for r in results), results
    return run, results


#: Heads whose planted-signal test takes more than a few seconds (frame heads): the slow tier.
SLOW_TO_LEARN = {"glam", "mhcnn", "apcnn", "cmgi", "gate", "mmer", "tmn"}


@pytest.mark.parametrize("head", [pytest.param(h, marks=pytest.mark.slow) if h in SLOW_TO_LEARN else h
                                  for h in sorted(FAST)])
def test_every_head_learns_the_planted_signal(signal_cache, tmp_path, head):
    torch.set_num_threads(1)
    _, results = train(signal_cache, tmp_path / head, head)
    uas = [r["ua"] for r in results]
    assert len(uas) == 2 and np.mean(uas) >= 0.9, uas


@pytest.mark.parametrize("head", ["linear", pytest.param("gate", marks=pytest.mark.slow)])
def test_shuffled_labels_stay_at_chance(tmp_path, head):
    """Features carry the true class; the labels are shuffled: nothing real can be learned."""
    torch.set_num_threads(1)
    manifest = synthetic_manifest()
    rng = np.random.default_rng(0)
    manifest["true_label"] = manifest.label
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache

    shuffled = manifest.assign(label=rng.permutation(manifest.label.to_numpy()))
    cache = write_synthetic_cache(tmp_path / "cache", shuffled, [
        SyntheticStream("ssl", "ssl", 32, (0, 1, 2), signal=0.6), SyntheticStream("text_asr", "text", 16, signal=0.6)],
        label_column="true_label")
    _, results = train(cache, tmp_path / "run", head, fold="all")
    assert np.mean([r["ua"] for r in results]) < 0.4  # chance is 0.25


def test_same_seed_same_metrics(signal_cache, tmp_path):
    torch.set_num_threads(1)
    a, ra = train(signal_cache, tmp_path / "a", "gate", fold="1", train={"lr": 3e-3, "batch_size": 8, "epochs": 3})
    b, rb = train(signal_cache, tmp_path / "b", "gate", fold="1", train={"lr": 3e-3, "batch_size": 8, "epochs": 3})
    keys = ("wa", "ua", "macro_f1", "weighted_f1", "best_epoch")
    assert [ra[0][k] for k in keys] == [rb[0][k] for k in keys]
    pa = pd.read_csv(a / "loso-1" / "seed0" / "predictions.csv")
    pb = pd.read_csv(b / "loso-1" / "seed0" / "predictions.csv")
    pd.testing.assert_frame_equal(pa, pb)


@pytest.mark.slow
def test_records_eval_report_and_paired_test(signal_cache, tmp_path):
    torch.set_num_threads(1)
    fast = {"lr": 3e-3, "batch_size": 8, "epochs": 4}
    gate, _ = train(signal_cache, tmp_path / "gate", "gate", fold="1,2,3", seeds=2, train=fast)
    cmgi, _ = train(signal_cache, tmp_path / "cmgi", "cmgi", fold="1,2,3", seeds=2, train=fast)
    config = json.loads((gate / "config.json").read_text())
    assert config["speaker_independent"] and config["labels"]["preset"] == "iemocap4"
    assert config["text_source"] == "asr" and config["roles"]["text"]["stream"] == "text_asr"
    folds = json.loads((gate / "folds.json").read_text())
    record = gate / folds[0]["name"] / "seed1"
    for name in ("checkpoint.pt", "curve.csv", "predictions.csv", "metrics.json", "DONE"):
        assert (record / name).exists(), name
    ckpt = torch.load(record / "checkpoint.pt", weights_only=True)  # a colleague's run is safe to open
    assert ckpt["head"] == "gate" and "state_dict" in ckpt
    metrics = json.loads((record / "metrics.json").read_text())
    assert metrics["train_seconds_per_epoch"] > 0 and metrics["test_inference_seconds"] > 0
    preds = pd.read_csv(record / "predictions.csv")
    assert set(preds.utt_id) == set(folds[0]["test"]) and {"label", "pred", "logit_happy"} <= set(preds.columns)
    assert len(pd.read_csv(record / "curve.csv")) == metrics["epochs_run"]

    runner = CliRunner()
    ev = runner.invoke(cli, ["eval", str(gate)], catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    assert "the checkpoints reproduce the recorded test predictions" in ev.output
    assert f"wrote {gate / 'eval.csv'}" in ev.output
    table = pd.read_csv(gate / "eval.csv")
    assert len(table) == 6 and (table.max_logit_diff_vs_record < 1e-4).all()
    recorded = pd.concat([pd.DataFrame([json.loads((gate / f["name"] / f"seed{s}" / "metrics.json").read_text())])
                          .assign(fold=f["name"], seed=s) for f in folds for s in (0, 1)])
    merged = table.merge(recorded, on=["fold", "seed"], suffixes=("", "_rec"))
    np.testing.assert_allclose(merged.ua, merged.ua_rec)

    rep = runner.invoke(cli, ["report", str(gate), str(cmgi), "--bootstrap", "200"], catch_exceptions=False)
    assert rep.exit_code == 0, rep.output
    text = rep.output
    for needle in ("protocol: loso", "speaker-independent: yes", "text source: asr", "labels: iemocap4",
                   "| WA", "UA", "macro-F1", "weighted-F1", "Paired differences, cmgi - gate", "Wilcoxon p",
                   "pooled UA", "chance: UA 25.00% (1/k, k=4)", "gate: per-class recall", "cmgi: confusion matrix"):
        assert needle in text, needle
    assert (gate / "confusion.png").stat().st_size > 1000 and (gate / "report.md").exists()
    csv = runner.invoke(cli, ["report", str(gate), "--format", "csv", "--bootstrap", "100"], catch_exceptions=False)
    row = pd.read_csv(__import__("io").StringIO(csv.output)).iloc[0]
    expected = np.mean([json.loads((gate / f["name"] / f"seed{s}" / "metrics.json").read_text())["ua"]
                        for f in folds for s in (0, 1)])
    assert row.ua_mean == pytest.approx(expected) and row.ua_ci_low <= row.ua_mean <= row.ua_ci_high


def test_tmn_reports_ccc(signal_cache, tmp_path):
    torch.set_num_threads(1)
    run, results = train(signal_cache, tmp_path / "tmn", "tmn", fold="1", train={"lr": 1e-3, "batch_size": 16, "epochs": 2})
    assert "ccc_valence" in results[0] and "ccc_arousal" in results[0]
    out = CliRunner().invoke(cli, ["report", str(run), "--bootstrap", "50"], catch_exceptions=False).output
    assert "CCC-V" in out and "CCC-A" in out


def test_cross_corpus_eval_on_shared_classes(signal_cache, tmp_path):
    torch.set_num_threads(1)
    run, _ = train(signal_cache, tmp_path / "run", "linear", fold="1")
    other = synthetic_manifest(seed=3)
    names = {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "calm"}  # RAVDESS-style names; calm not shared
    other = other.assign(label=other.label.map(names), corpus="ravdess")
    cache = write_signal_cache(tmp_path / "ravdess", other)
    result = CliRunner().invoke(cli, ["eval", str(run), "--cache", str(cache), "--labels", "ravdess8"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "classes: neutral, happy, sad" in result.output
    assert f"{(other.label == 'calm').sum()} utterances of that cache have classes outside the shared set" in result.output
    table = pd.read_csv(run / "eval-ravdess.csv")
    assert (table.n_test == (other.label != "calm").sum()).all()


def test_resume_skips_finished_folds_and_refuses_other_settings(signal_cache, tmp_path):
    torch.set_num_threads(1)
    fast = {"lr": 3e-3, "batch_size": 8, "epochs": 2}
    run, first = train(signal_cache, tmp_path / "run", "gate", fold="1", train=fast)
    stamp = (run / "loso-1" / "seed0" / "DONE").stat().st_mtime_ns
    _, second = train(signal_cache, tmp_path / "run", "gate", fold="1,2", train=fast)
    assert [r["fold"] for r in second] == ["loso-2"]  # loso-1 was not retrained
    assert (run / "loso-1" / "seed0" / "DONE").stat().st_mtime_ns == stamp
    with pytest.raises(RunError, match=r"other settings: train\.lr: stored 0\.003, asked 0\.01\. Give a new --out"):
        train(signal_cache, tmp_path / "run", "gate", fold="1", train={**fast, "lr": 1e-2})


def test_cli_train_errors_name_the_fix(signal_cache, tmp_path):
    runner = CliRunner()
    bad_stream = runner.invoke(cli, ["train", str(signal_cache), "--head", "gate", "--audio-stream", "wavlm",
                                     "--out", str(tmp_path / "r")])
    assert bad_stream.exit_code == 2 and "streams: mfcc, ssl, text_asr, text_gold" in bad_stream.output
    bad_set = runner.invoke(cli, ["train", str(signal_cache), "--head", "gate", "--set", "gates=2"])
    assert bad_set.exit_code == 2 and "align='attention'" in bad_set.output
    bad_head = runner.invoke(cli, ["train", str(signal_cache), "--head", "gated"])
    assert bad_head.exit_code == 2 and "gate" in bad_head.output


@pytest.mark.parametrize(("option", "value"), [("--epochs", "0"), ("--batch-size", "-4"), ("--lr", "-1"),
                                               ("--seeds", "0"), ("--jobs", "-2"), ("--patience", "0"),
                                               ("--weight-decay", "-1"), ("--valid-fraction", "1.5")])
def test_cli_refuses_bad_training_values_before_any_work(signal_cache, tmp_path, option, value):
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["train", str(signal_cache), "--head", "linear", option, value, "--out", str(out)])
    assert result.exit_code == 2 and option in result.output and value in result.output
    assert not out.exists()  # nothing trained, nothing marked done


def test_cli_refuses_a_validation_fraction_it_would_not_use(signal_cache, tmp_path):
    """--valid-fraction under the default held-out-group validation was recorded and ignored."""
    out = tmp_path / "r"
    args = ["train", str(signal_cache), "--head", "linear", "--valid-fraction", "0.3", "--out", str(out)]
    refused = CliRunner().invoke(cli, args)
    assert refused.exit_code == 2 and "--valid-fraction 0.3: validation here is --valid group" in refused.output
    assert "add --valid fraction" in refused.output and not out.exists()
    taken = CliRunner().invoke(cli, [*args, "--valid", "fraction", "--fold", "1", "--seeds", "1", "--epochs", "1",
                                     "--no-progress"])
    assert taken.exit_code == 0, taken.output
    recorded = json.loads((out / "config.json").read_text())["protocol_options"]
    assert recorded["valid"] == "fraction" and recorded["valid_fraction"] == 0.3


@pytest.mark.parametrize(("head", "setting", "expect"), [
    ("linear", "dropout=2", "a dropout probability"), ("mlp", "hidden=0", "whole number"),
    ("linear", "with_text=3", "true or false"), ("svm", "C=-1", "positive number"),
    ("glam", "segment_seconds=0", "positive number")])
def test_cli_refuses_bad_head_settings_before_any_work(signal_cache, tmp_path, head, setting, expect):
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, ["train", str(signal_cache), "--head", head, "--set", setting, "--out", str(out)])
    assert result.exit_code == 2 and f"--set {setting.split('=')[0]}=" in result.output and expect in result.output
    assert not out.exists()


@pytest.mark.parametrize("bad", [{"epochs": 0}, {"batch_size": -4}, {"lr": -1.0}, {"optimizer": "lbfgs"},
                                 {"momentum": 1.5}])
def test_library_refuses_bad_training_values_before_any_work(signal_cache, tmp_path, bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=f"{name}="):
        train(signal_cache, tmp_path / "run", "linear", fold="1", train=bad)
    assert not (tmp_path / "run").exists()
    with pytest.raises(RunError, match="seeds=0"):
        run_training(TrainRequest(cache=signal_cache, head="linear", out=tmp_path / "run2", seeds=0))


@pytest.mark.slow
def test_every_head_trains_and_reports_on_an_extracted_cache(extracted_cache, tmp_path):
    """The stage-2 promise: `train --fold all` then `report` work for every head on real `extract` output."""
    runner = CliRunner()
    sets = {"tmn": ["fusion_dim=32", "patch_size=8", "mixer_dim=32", "depth=1"],
            "mmer": ["hidden=32", "heads=4", "ffn_dim=64"], "wsum": ["hidden=16"]}
    for head in sorted(FAST):
        out = tmp_path / head
        args = ["train", str(extracted_cache), "--head", head, "--fold", "all", "--seeds", "1", "--jobs", "2",
                "--out", str(out), "--device", "cpu"]
        if not get_head(head).closed_form:  # svm and logreg have no epochs (they refuse --epochs)
            args += ["--epochs", "1"]
        for s in sets.get(head, []):
            args += ["--set", s]
        result = runner.invoke(cli, args, catch_exceptions=False)
        assert result.exit_code == 0, (head, result.output)
        assert len(list(out.glob("loso-*/seed0/DONE"))) == 5, head
        rep = runner.invoke(cli, ["report", str(out), "--bootstrap", "50"], catch_exceptions=False)
        assert rep.exit_code == 0 and "UA" in rep.output, head


def test_mmer_uses_an_augmented_text_stream_when_asked(tmp_path):
    """InfoNCE against augmented views: the extra stream is loaded as the text_aug role and trained on."""
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache
    from tests.conftest import synthetic_manifest

    torch.set_num_threads(1)
    cache = write_synthetic_cache(tmp_path / "cache", synthetic_manifest(3), [
        SyntheticStream("ssl", "ssl", 32, (0,)), SyntheticStream("text_asr", "text", 16),
        SyntheticStream("backtranslated", "text", 16)])
    with pytest.raises(Exception, match="text_aug"):
        train(cache, tmp_path / "missing", "mmer", fold="1",
              hyperparameters={**SMALL["mmer"], "augmented_text": True}, train={"epochs": 1})
    run, results = train(cache, tmp_path / "run", "mmer", fold="1", streams={"text_aug": "backtranslated"},
                         hyperparameters={**SMALL["mmer"], "augmented_text": True}, train={"epochs": 1})
    config = json.loads((run / "config.json").read_text())
    assert config["roles"]["text_aug"]["stream"] == "backtranslated" and results[0]["ok"]
