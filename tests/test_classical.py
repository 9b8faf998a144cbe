"""Pooled inputs and the classical heads (svm, logreg): exact export, no test-fold leakage, refit, records."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from sercache.cli import cli
from sercache.heads import get_head
from sercache.heads.base import Batch, StreamBatch
from sercache.splits import get_preset
from sercache.store import open_cache
from sercache.training.data import labelled_utterances
from sercache.training.pooled import PooledData
from sercache.training.roles import resolve_roles
from sercache.training.train_config import TrainConfig
from sercache.training.trainer import load_checkpoint, train_fold


def as_batch(x: np.ndarray) -> Batch:
    t = torch.tensor(x, dtype=torch.float32).unsqueeze(1)
    return Batch({"audio": StreamBatch(t, torch.ones(len(x), 1, dtype=torch.bool))}, torch.zeros(len(x), dtype=torch.long))


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_svm_head_computes_sklearn_decision_function(k, kernel):
    rng = np.random.default_rng(k)
    x, y = rng.normal(size=(150, 6)), rng.integers(0, k, 150)
    x[:, 0] += y
    test = rng.normal(size=(40, 6)).astype(np.float32)
    svc = SVC(C=3.0, kernel=kernel, class_weight="balanced", break_ties=True).fit(x, y)
    head = get_head("svm")(dims={"audio": 6}, n_classes=k, kernel=kernel)
    head.export(svc)
    logits = head(as_batch(test)).logits.numpy()
    reference = svc.decision_function(test.astype(np.float64))
    if k == 2:  # scikit-learn gives one value for two classes: positive means class 1
        assert (logits.argmax(1) == (reference > 0)).all()
    else:
        np.testing.assert_allclose(logits, reference, atol=1e-5)
    assert (logits.argmax(1) == svc.predict(test)).all()
    # a checkpoint is a plain state dict of data-sized tensors, restored into a fresh head
    fresh = get_head("svm")(dims={"audio": 6}, n_classes=k, kernel=kernel)
    fresh.load_state_dict(head.state_dict())
    assert torch.equal(fresh(as_batch(test)).logits, head(as_batch(test)).logits)


@pytest.mark.parametrize("k", [2, 4])
def test_logreg_head_computes_sklearn_probabilities(k):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 5)), rng.integers(0, k, 120)
    test = rng.normal(size=(30, 5)).astype(np.float32)
    lr = LogisticRegression(C=0.5, max_iter=1000).fit(x, y)
    head = get_head("logreg")(dims={"audio": 5}, n_classes=k)
    head.export(lr)
    probs = torch.softmax(head(as_batch(test)).logits.double(), 1).numpy()
    np.testing.assert_allclose(probs, lr.predict_proba(test), atol=1e-5)


def fold_data(cache_dir, head: str, streams: str = "ssl,mfcc"):
    cache = open_cache(cache_dir)
    preset = get_preset("iemocap4")
    roles = resolve_roles(cache, ("audio",), (), {"audio": streams}, {}, pooled=True)
    table = labelled_utterances(cache, preset, roles)
    data = PooledData(cache, table, roles, preset)
    cache.close()
    sessions = table.session.astype(str)
    ids = {s: table.utt_id[sessions == s].tolist() for s in ("1", "2")}
    rest = table.utt_id[~sessions.isin(["1", "2"])].tolist()
    return data, rest, ids["2"], ids["1"]   # train, valid, test


def run_fold(tmp_path, name, data, tr, va, te, **cfg):
    out = tmp_path / name
    metrics = train_fold(out, head_name=cfg.pop("head", "svm"), hyperparameters={**get_head("svm").hyperparameters()},
                         cfg=TrainConfig.for_head("svm", cfg), data=data, train_ids=tr, valid_ids=va, test_ids=te,
                         seed=0, label_names=list(get_preset("iemocap4").classes), run_config={}, log=lambda m: None)
    return out, metrics


def test_pooled_data_concatenates_each_streams_statistics(signal_cache):
    data, tr, va, te = fold_data(signal_cache, "svm")
    cache = open_cache(signal_cache)
    ids = data.utt_ids[:5]
    expected = np.concatenate([cache.pooled("ssl", 2, "meanstd", ids), cache.pooled("mfcc", 0, "meanstd", ids)], 1)
    np.testing.assert_array_equal(data.features(data.indices(ids), "audio").numpy(), expected)
    assert data.dims == {"audio": 2 * 32 + 2 * 26}
    # normalisation: scikit-learn's StandardScaler on the given utterances only, applied once
    idx = data.indices(tr)
    data.normalization = data.fit_normalization(idx)
    scaler = StandardScaler().fit(np.concatenate([cache.pooled("ssl", 2, "meanstd", tr),
                                                  cache.pooled("mfcc", 0, "meanstd", tr)], 1))
    np.testing.assert_allclose(data.features(idx, "audio").numpy(),
                               scaler.transform(data._raw["audio"][torch.as_tensor(idx)].double().numpy()), atol=1e-4)


@pytest.mark.parametrize("refit", [False, True])
def test_svm_selection_and_scaling_never_see_the_test_fold(signal_cache, tmp_path, refit):
    """Garbage test features and shuffled test labels change nothing but the test predictions."""
    data, tr, va, te = fold_data(signal_cache, "svm")
    clean_dir, clean = run_fold(tmp_path, "clean", data, tr, va, te, refit=refit)

    poisoned, *_ = fold_data(signal_cache, "svm")
    rows = torch.as_tensor(poisoned.indices(te))
    poisoned._raw["audio"][rows] = 1e6 * torch.randn(len(rows), poisoned.dims["audio"])
    poisoned.y[rows] = poisoned.y[rows][torch.randperm(len(rows))]
    poisoned_dir, dirty = run_fold(tmp_path, "poisoned", poisoned, tr, va, te, refit=refit)

    assert clean["selected"] == dirty["selected"] and clean["valid_ua"] == dirty["valid_ua"]
    pd.testing.assert_frame_equal(pd.read_csv(clean_dir / "curve.csv").drop(columns="fit_seconds"),
                                  pd.read_csv(poisoned_dir / "curve.csv").drop(columns="fit_seconds"))
    a, b = load_checkpoint(clean_dir / "checkpoint.pt"), load_checkpoint(poisoned_dir / "checkpoint.pt")
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert torch.equal(a["normalization"]["audio"]["mean"], b["normalization"]["audio"]["mean"])

    if refit:  # the model and scaler are refit on training + validation (test_refit_... checks that)
        return
    # and the selection is exactly "best validation UA, scaler fitted on the training utterances"
    x = data._raw["audio"].double().numpy()
    y = data.y.numpy()
    itr, iva = data.indices(tr), data.indices(va)
    scaler = StandardScaler().fit(x[itr])
    np.testing.assert_allclose(a["normalization"]["audio"]["mean"].numpy()[0], scaler.mean_, rtol=1e-5, atol=1e-6)
    from sklearn.metrics import balanced_accuracy_score

    scores = [balanced_accuracy_score(y[iva], SVC(C=c, class_weight="balanced", break_ties=True)
                                      .fit(scaler.transform(x[itr]), y[itr]).predict(scaler.transform(x[iva])))
              for c in (0.1, 1.0, 10.0, 100.0)]
    assert clean["selected"] == {"C": [0.1, 1.0, 10.0, 100.0][int(np.argmax(scores))], "gamma": "scale"}


def test_refit_trains_on_training_and_validation(signal_cache, tmp_path):
    data, tr, va, te = fold_data(signal_cache, "svm")
    out, metrics = run_fold(tmp_path, "refit", data, tr, va, te, refit=True)
    assert metrics["refit"] and metrics["n_train"] == len(tr) + len(va)
    mean = load_checkpoint(out / "checkpoint.pt")["normalization"]["audio"]["mean"].numpy()[0]
    both = data._raw["audio"][torch.as_tensor(data.indices(tr + va))].double().numpy()
    np.testing.assert_allclose(mean, both.mean(0), rtol=1e-5, atol=1e-6)
    curve = pd.read_csv(out / "curve.csv")
    assert curve.phase.tolist()[-1] == "refit"


@pytest.mark.parametrize("head", ["svm", "logreg", "linear", "mlp"])
def test_pooled_heads_train_eval_and_report_through_the_cli(signal_cache, tmp_path, head):
    runner = CliRunner()
    out = tmp_path / head
    args = ["train", str(signal_cache), "--head", head, "--audio-stream", "ssl,mfcc", "--fold", "1,2", "--seeds", "1",
            "--out", str(out), "--device", "cpu"] + (["--epochs", "30"] if head in ("linear", "mlp") else [])
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["roles"]["audio"] == {"stream": "ssl,mfcc", "layers": [2, 0]}
    assert [s["stream"] for s in config["encoders"]["audio"]["sources"]] == ["ssl", "mfcc"]
    metrics = json.loads((out / "loso-1" / "seed0" / "metrics.json").read_text())
    assert metrics["ua"] >= 0.9
    ev = runner.invoke(cli, ["eval", str(out)], catch_exceptions=False)
    assert ev.exit_code == 0, ev.output
    assert (pd.read_csv(out / "eval.csv").max_logit_diff_vs_record < 1e-4).all()
    rep = runner.invoke(cli, ["report", str(out), "--bootstrap", "50"], catch_exceptions=False)
    assert rep.exit_code == 0 and ("selected" in rep.output) == (head in ("svm", "logreg"))


def test_frame_heads_refuse_several_streams(signal_cache, tmp_path):
    result = CliRunner().invoke(cli, ["train", str(signal_cache), "--head", "gate", "--audio-stream", "ssl,mfcc",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "only pooled heads" in result.output


def test_progress_inside_a_fold_is_printed(signal_cache, tmp_path):
    """Every epoch and batch with --progress-every 0; nothing inside folds with --no-progress."""
    runner = CliRunner()
    base = ["train", str(signal_cache), "--head", "mlp", "--fold", "1", "--seeds", "1", "--epochs", "2",
            "--batch-size", "64", "--device", "cpu"]
    shown = runner.invoke(cli, [*base, "--out", str(tmp_path / "a"), "--progress-every", "0"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    lines = [ln for ln in shown.output.splitlines() if ln.startswith("mlp loso-1 seed 0: ")]
    assert any("epoch 1/2, batch 1/" in ln for ln in lines)
    assert sum("valid UA" in ln and "% WA" in ln for ln in lines) == 2   # one line per epoch, with validation UA
    assert sum("test UA" in ln for ln in lines) == 1  # once, from the finished task, not again from inside it
    quiet = runner.invoke(cli, [*base, "--out", str(tmp_path / "b"), "--no-progress"], catch_exceptions=False)
    assert quiet.exit_code == 0 and "epoch 1/2" not in quiet.output
    assert re.search(r"^mlp loso-1 seed 0: test UA \d+\.\d\d% WA \d+\.\d\d% \(best epoch \d of \d run(; the last epoch allowed: "
                     r"undertrained\? raise --epochs)?, refit, \d+ s\)$",
                     quiet.output, re.M), quiet.output


def test_svm_on_a_real_emodb_extraction_with_emobox_folds(tmp_path):
    """The issue's promise: `extract --corpus emodb`, then `train --folds EMOBOX --head svm`, no manifest written."""
    import soundfile as sf

    from sercache.synthetic.corpus import speechlike

    rng = np.random.default_rng(0)
    speakers, emotions = ["03", "08", "09", "10", "11", "12"], {"W": "ang", "F": "hap", "T": "sad", "N": "neu"}
    wav = tmp_path / "emodb" / "wav"
    wav.mkdir(parents=True)
    for si, spk in enumerate(speakers):
        for letter, code in emotions.items():
            for version in "ab":
                y = speechlike(code, 0.6, speaker_pitch=0.8 + 0.1 * si, rng=rng)
                sf.write(wav / f"{spk}a0{1 if version == 'a' else 2}{letter}{version}.wav", y, 16_000)
    runner = CliRunner()
    cache = tmp_path / "cache"
    ext = runner.invoke(cli, ["extract", str(tmp_path / "emodb"), "--corpus", "emodb", "--out", str(cache),
                              "--streams", "mfcc,logmel", "--no-progress"], catch_exceptions=False)
    assert ext.exit_code == 0, ext.output
    ids = sorted(p.stem for p in wav.glob("*.wav"))
    folds = tmp_path / "emobox"
    for k, test_speakers in enumerate((speakers[:2], speakers[2:4], speakers[4:]), 1):
        for side, keep in (("train", False), ("test", True)):
            lines = [json.dumps({"key": f"emodb-{u}", "dataset": "emodb", "wav": f"downloads/emodb/wav/{u}.wav"})
                     for u in ids if (u[:2] in test_speakers) == keep]
            (folds / f"fold_{k}").mkdir(parents=True, exist_ok=True)
            (folds / f"fold_{k}" / f"emodb_{side}_fold_{k}.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", str(cache), "--folds", str(folds), "--head", "svm", "--audio-stream",
                                 "mfcc,logmel", "--out", str(out), "--seeds", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "folds.json").read_text())
    assert [sorted(f["test"]) for f in recorded] == [sorted(u for u in ids if u[:2] in s)
                                                     for s in (speakers[:2], speakers[2:4], speakers[4:])]
    uas = [json.loads((out / f["name"] / "seed0" / "metrics.json").read_text())["ua"] for f in recorded]
    assert np.mean(uas) >= 0.6, uas  # chance is 0.25
    assert not list(tmp_path.rglob("manifest.csv"))
