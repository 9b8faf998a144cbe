"""`sercache report` per-class tables on imbalanced data, checked against scikit-learn."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import confusion_matrix, recall_score

from sercache.cli import cli
from sercache.runs.report import make_report
from tests.conftest import synthetic_manifest, write_signal_cache
from tests.test_train import train

CLASSES = ["neutral", "happy", "sad", "angry"]  # the iemocap4 preset's order


def _md_table(text: str, caption: str) -> pd.DataFrame:
    """The Markdown table printed right after the line starting with ``caption`` (cells as strings)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(caption))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


@pytest.fixture(scope="module")
def imbalanced_run(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """A `linear` run on folds 1-2 x 2 seeds of an imbalanced cache: no sad in session 1 (loso-1's test set),
    3/4 of happy and 1/6 of angry kept, so neutral is the majority and WA chance differs from UA chance."""
    torch.set_num_threads(1)
    m = synthetic_manifest()
    nth = m.groupby(["session", "label"]).cumcount()
    keep = ~((m.label == "sad") & (m.session == "1")) & ~((m.label == "hap") & (nth >= 9)) & ~((m.label == "ang") & (nth >= 2))
    m = m[keep].reset_index(drop=True)
    root = tmp_path_factory.mktemp("imbalanced")
    cache = write_signal_cache(root / "cache", m, signal=0.15)  # a weak signal leaves some errors to count
    run, _ = train(cache, root / "run", "linear", fold="1,2", seeds=2, train={"lr": 2e-2, "batch_size": 16, "epochs": 4})
    return run, m


def _predictions(run: Path) -> pd.DataFrame:
    files = sorted(run.glob("loso-*/seed*/predictions.csv"))
    return pd.concat([pd.read_csv(p).assign(fold=p.parts[-3], seed=p.parts[-2]) for p in files])


def test_per_class_recall_confusion_and_chance_match_sklearn(imbalanced_run):
    run, manifest = imbalanced_run
    text = make_report([run], n_boot=50)
    preds = _predictions(run)
    assert preds.groupby(["fold", "seed"]).ngroups == 4

    # chance: 1/k for UA; the majority class's share of the (distinct) test utterances for WA
    test = manifest[manifest.session.isin(["1", "2"])]
    counts = test.label.value_counts()
    assert counts.idxmax() == "neu" and counts.max() / len(test) > 0.3  # not 1/k: the data are imbalanced
    assert (f"chance: UA 25.00% (1/k, k=4); WA {100 * counts.max() / len(test):.2f}% (majority class neutral in "
            f"the test sets: {counts.max()} of {len(test)} utterances)") in text

    # per-class recall: mean ± std over folds x seeds of sklearn's per-fold recall, skipping a class absent from a fold
    per_fold = []
    for _, g in preds.groupby(["fold", "seed"]):
        r = recall_score(g.label, g.pred, labels=range(4), average=None, zero_division=0)
        per_fold.append(np.where(np.isin(range(4), g.label), r, np.nan))
    per_fold = np.array(per_fold)
    assert np.isnan(per_fold[:, 2]).sum() == 2  # sad: absent from loso-1's test set under both seeds
    pooled = np.mean([recall_score(g.label, g.pred, labels=range(4), average=None) for _, g in preds.groupby("seed")], 0)
    table = _md_table(text, f"{run.name}: per-class recall")
    assert list(table["class"]) == CLASSES
    for i, row in table.iterrows():
        vals = per_fold[:, i][np.isfinite(per_fold[:, i])]
        assert row["recall"] == f"{100 * vals.mean():.2f} ± {100 * vals.std(ddof=1):.2f}", row
        assert row["pooled recall"] == f"{100 * pooled[i]:.2f}"
        assert row["support"] == str(counts[["neu", "hap", "sad", "ang"][i]])
    assert list(table["folds x seeds"]) == ["4", "4", "2", "4"]
    assert "sad missing from 2 of 4 fold x seed results" in text

    # confusion matrix: predictions of both folds pooled, summed over the 2 seeds
    expected = confusion_matrix(preds.label, preds.pred, labels=range(4))
    cm = _md_table(text, f"{run.name}: confusion matrix")
    assert list(cm.columns[1:]) == CLASSES and list(cm.iloc[:, 0]) == CLASSES
    np.testing.assert_array_equal(cm.iloc[:, 1:].astype(int).to_numpy(), expected)
    norm = _md_table(text, f"{run.name}: the same, row-normalised")
    np.testing.assert_allclose(norm.iloc[:, 1:].astype(float).to_numpy(),
                               np.round(100 * expected / expected.sum(1, keepdims=True), 2))

    # report.md carries the same tables; the CSV the same figures as columns
    md = (run / "report.md").read_text()
    assert "chance: UA 25.00%" in md and "All folds: per-class recall" in md and "confusion.png" in md
    csv = CliRunner().invoke(cli, ["report", str(run), "--format", "csv", "--bootstrap", "20"], catch_exceptions=False)
    row = pd.read_csv(io.StringIO(csv.output)).iloc[0]
    assert row.chance_ua == pytest.approx(0.25) and row.chance_wa == pytest.approx(counts.max() / len(test))
    for i, name in enumerate(CLASSES):
        assert row[f"recall_{name}_mean"] == pytest.approx(np.nanmean(per_fold[:, i]))
        assert row[f"pooled_recall_{name}"] == pytest.approx(pooled[i])
        assert [row[f"confusion_{name}_as_{p}"] for p in CLASSES] == list(expected[i])
    config = json.loads((run / "config.json").read_text())
    assert config["labels"]["classes"] == CLASSES


def test_train_and_report_warn_of_chance_undertraining_and_missing_classes(tmp_path):
    """No signal, one epoch, and a session whose test set lacks two classes: each is said, in train and report."""
    from click.testing import CliRunner

    from sercache.cli import cli
    from tests.conftest import synthetic_manifest, write_signal_cache

    manifest = synthetic_manifest(n_per_speaker_label=4)
    lacking = (manifest.session == "5") & manifest.label.isin(["sad", "ang"])
    cache = write_signal_cache(tmp_path / "cache", manifest[~lacking].reset_index(drop=True), signal=0.0)
    run = tmp_path / "run"
    train = CliRunner().invoke(cli, ["train", str(cache), "--head", "linear", "--audio-stream", "mfcc", "--epochs", "1",
                                     "--seeds", "1", "--out", str(run), "--device", "cpu", "--no-progress"])
    assert train.exit_code == 0, train.output
    assert "the last epoch allowed: undertrained? raise --epochs" in train.output
    assert "is within noise of chance (25.00%" in train.output
    report = CliRunner().invoke(cli, ["report", str(run), "--bootstrap", "200"])
    assert "were best at their last epoch (1): they may be undertrained" in report.output
    assert "is within noise of chance (25.00%)" in report.output
    assert "fold loso-5 has no test utterance of sad, angry; its UA averages the recall of the 2 classes" in report.output
    assert "within noise of chance" in (run / "report.md").read_text()
    assert "training: adam lr 0.001, batch 64, up to 1 epochs (patience 20)" in report.output  # linear's defaults
    subsets = report.output.split("By dialog type, %")[1]
    assert "| impro" in subsets and "WA" in subsets.splitlines()[2] and "UA" in subsets.splitlines()[2]
