"""The one list of metrics (metrics.METRICS) reaches every output: metrics.json, eval (CLI, CSV, API), report."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import sercache
from sercache.cli import cli
from sercache.training.metrics import CLASSIFICATION, METRICS, classification_metrics


@pytest.fixture(scope="module")
def run(small_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("metric-list") / "logreg"
    result = CliRunner().invoke(cli, ["train", str(small_cache), "--head", "logreg", "--fold", "1,2", "--seeds", "2",
                                      "--out", str(out), "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_every_listed_metric_is_in_each_task_record_and_matches_the_predictions(run):
    for seed_dir in sorted(run.glob("loso-*/seed*")):
        metrics = json.loads((seed_dir / "metrics.json").read_text())
        pred = pd.read_csv(seed_dir / "predictions.csv")
        expected = classification_metrics(pred.label.to_numpy(), pred.pred.to_numpy(), 4)
        for m in CLASSIFICATION:
            assert metrics[m.key] == pytest.approx(expected[m.key], nan_ok=True), (seed_dir, m.key)


def test_eval_prints_writes_and_returns_every_listed_metric(run):
    result = CliRunner().invoke(cli, ["eval", str(run)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    written = pd.read_csv(run / "eval.csv")
    assert f"wrote {run / 'eval.csv'}" in result.output
    mean = next(line for line in result.output.splitlines() if line.startswith("mean: "))
    for m in CLASSIFICATION:
        assert m.key in written
        if m.summary:
            assert f"{m.label} {100 * written[m.key].mean():.2f}" in mean
    assert "the checkpoints reproduce the recorded test predictions" in result.output
    # the library call is the command: same table, and the same text
    from sercache.runs.evaluate import evaluation_text

    table = sercache.evaluate(run, write=False)
    assert "written" not in table.attrs
    pd.testing.assert_frame_equal(table.drop(columns="max_logit_diff_vs_record"),
                                  written.drop(columns="max_logit_diff_vs_record"), check_dtype=False)
    again = sercache.evaluate(run)
    assert again.attrs["written"] == run / "eval.csv"
    assert evaluation_text(again).splitlines()[-1] == result.output.splitlines()[-1]


def test_report_tables_and_csv_carry_every_listed_metric(run):
    records = pd.concat([pd.DataFrame([json.loads(p.read_text())]) for p in sorted(run.glob("loso-*/seed*/metrics.json"))])
    result = CliRunner().invoke(cli, ["report", str(run), "--bootstrap", "20", "--format", "csv"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    row = pd.read_csv(io.StringIO(result.output)).iloc[0]
    for m in CLASSIFICATION:
        assert row[f"{m.key}_mean"] == pytest.approx(np.nanmean(records[m.key]))
        assert {f"{m.key}_std", f"{m.key}_ci_low", f"{m.key}_ci_high", f"pooled_{m.key}"} <= set(row.index)
    md = CliRunner().invoke(cli, ["report", str(run), "--bootstrap", "20"], catch_exceptions=False).output
    header = next(line for line in md.splitlines() if line.startswith("| run"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert [m.label for m in CLASSIFICATION] == [c for c in cells if c in {m.label for m in METRICS}]
    assert (run / "report.csv").exists() and f"{CLASSIFICATION[-1].key}_mean" in pd.read_csv(run / "report.csv")


def test_display_names_are_unique_and_every_metric_has_one():
    assert len({m.key for m in METRICS}) == len({m.label for m in METRICS}) == len(METRICS)
    assert all(m.label and (m.of is None) != (m.regression_index is None) for m in METRICS)


def test_a_run_recorded_before_a_metric_existed_still_reports(run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(run, old)
    newest = CLASSIFICATION[-1].key
    for path in old.glob("loso-*/seed*/metrics.json"):
        record = json.loads(path.read_text())
        del record[newest]
        path.write_text(json.dumps(record))
    result = CliRunner().invoke(cli, ["report", str(run), str(old), "--bootstrap", "20"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    paired = result.output.split("Paired differences", 1)[1]
    assert "| UA " in paired and f"| {CLASSIFICATION[-1].label} " not in paired


def test_cohens_kappa_reaches_the_report_the_csv_and_the_eval_summary(run):
    from sklearn.metrics import cohen_kappa_score

    ev = CliRunner().invoke(cli, ["eval", str(run)], catch_exceptions=False).output
    assert "kappa" in next(line for line in ev.splitlines() if line.startswith("mean: "))
    table = pd.read_csv(run / "eval.csv")
    for r in table.itertuples():
        pred = pd.read_csv(run / r.fold / f"seed{r.seed}" / "predictions.csv")
        assert r.kappa == pytest.approx(cohen_kappa_score(pred.label, pred.pred))
    csv = pd.read_csv(io.StringIO(CliRunner().invoke(cli, ["report", str(run), "--bootstrap", "20", "--format", "csv"],
                                                   catch_exceptions=False).output))
    assert csv.kappa_mean.iloc[0] == pytest.approx(table.kappa.mean())
    assert csv.kappa_ci_low.iloc[0] <= csv.kappa_ci_high.iloc[0]
    md = CliRunner().invoke(cli, ["report", str(run), "--bootstrap", "20"], catch_exceptions=False).output
    assert "| kappa" in md.split("Paired", 1)[0]
