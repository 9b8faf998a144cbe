"""`sercache sweep`: heads x layers as run directories, one pool of fold x seed tasks, one combined report;
the same numbers from loky, a dask.distributed cluster and a SLURM job array; resumable."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sercache.cli import cli
from tests.test_cluster import cluster_extra, slurm

TIMING = ("train s/epoch", "test inference s", "train s", "seconds")
ARGS = ["--heads", "linear,mlp,wsum", "--layers", "1,2", "--seeds", "2", "--fold", "1,2", "--epochs", "3",
        "--device", "cpu"]
CONFIGS = ["linear-layer1", "linear-layer2", "mlp-layer1", "mlp-layer2", "wsum"]


def sweep(cache: Path, out: Path, *extra: str) -> str:
    result = CliRunner().invoke(cli, ["sweep", str(cache), *ARGS, "--out", str(out), *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def numbers(out: Path) -> pd.DataFrame:
    """The combined report's table without its timing columns (the only thing an engine may change)."""
    table = pd.read_csv(out / "report.csv")
    table["run"] = [Path(p).name for p in table.run]  # where the sweep lives is not a result
    return table[[c for c in table.columns if not any(t in c for t in TIMING)]]


def task_records(out: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    records = {}
    for metrics in sorted(out.glob("*/*/seed*/metrics.json")):
        m = {k: v for k, v in json.loads(metrics.read_text()).items() if "seconds" not in k}
        records[str(metrics.parent.relative_to(out))] = (m, pd.read_csv(metrics.parent / "predictions.csv"))
    return records


def assert_same_sweep(a: Path, b: Path) -> None:
    pd.testing.assert_frame_equal(numbers(a), numbers(b))
    ra, rb = task_records(a), task_records(b)
    assert ra.keys() == rb.keys() and len(ra) == len(CONFIGS) * 2 * 2
    for key in ra:
        assert ra[key][0] == rb[key][0], key
        # logits equal up to float rounding: which core's BLAS path summed them may differ (seen: 1.5e-8 on a
        # logit of 6.5e-4, beyond the default relative tolerance alone)
        pd.testing.assert_frame_equal(ra[key][1], rb[key][1], rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def loky_sweep(signal_cache, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sweep") / "loky"
    sweep(signal_cache, out, "--jobs", "2")
    return out


def test_sweep_expands_the_grid_into_runs_and_one_report(loky_sweep):
    assert sorted(p.name for p in loky_sweep.iterdir() if p.is_dir()) == CONFIGS
    for name in CONFIGS:  # each configuration is a normal run, for `report`, `eval` and a resumed `train`
        config = json.loads((loky_sweep / name / "config.json").read_text())
        assert config["head"] == name.split("-")[0]
        if "layer" in name:
            assert config["roles"]["audio"]["layers"] == [int(name[-1])]
    report = (loky_sweep / "report.md").read_text()
    assert report.count("Paired differences") == len(CONFIGS) - 1 and "paired t p" in report
    recorded = json.loads((loky_sweep / "sweep.json").read_text())
    assert recorded["runs"] == CONFIGS and recorded["backend"] == "loky"


@cluster_extra("dask.distributed")
def test_dask_cluster_gives_the_loky_numbers(signal_cache, loky_sweep, tmp_path):
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        sweep(signal_cache, tmp_path / "dask", "--backend", "dask", "--scheduler", cluster.scheduler_address)
    assert_same_sweep(loky_sweep, tmp_path / "dask")


def test_an_interrupted_sweep_resumes_only_what_is_missing(signal_cache, loky_sweep, tmp_path):
    out = tmp_path / "resumed"
    shutil.copytree(loky_sweep, out)
    for lost in ("mlp-layer2", "wsum"):  # as if killed before these tasks finished
        fold = sorted(p for p in (out / lost).iterdir() if p.is_dir())[0]
        shutil.rmtree(fold / "seed1")
    for p in out.glob("report.*"):
        p.unlink()
    output = sweep(signal_cache, out)
    assert "18 already done, 2 to train" in output
    assert_same_sweep(loky_sweep, out)


def test_bad_sweeps_are_refused_before_training(signal_cache, tmp_path):
    cases = [(["--heads", "nosuch"], "unknown head"), (["--heads", "linear", "--backend", "dask"], "--scheduler"),
             (["--heads", "linear", "--layers", "x"], "--layers 'x'"), (["--heads", "linear", "--layers", "9"], "9"),
             (["--heads", "linear", "--valid-fraction", "0.3"], "--valid-fraction 0.3: validation here is --valid group")]
    for extra, message in cases:
        result = CliRunner().invoke(cli, ["sweep", str(signal_cache), *extra, "--out", str(tmp_path / "s")])
        assert result.exit_code == 2 and message in result.output, (extra, result.output)
    assert not list((tmp_path / "s").glob("*/config.json"))


@slurm
@pytest.mark.slow
def test_slurm_backend_gives_the_loky_numbers(signal_cache, loky_sweep, tmp_path):
    out = tmp_path / "slurm"
    sweep(signal_cache, out, "--backend", "slurm", "--slurm-time", "0:20:00")
    assert_same_sweep(loky_sweep, out)
    assert not list(out.rglob("*.pkl"))


def test_sweep_takes_trains_fold_options_an_emobox_folder_included(tmp_path):
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache
    from tests.test_emobox import manifest, write_folds

    cache = write_synthetic_cache(tmp_path / "cache", manifest(), [SyntheticStream("ssl", "ssl", 8, (0, 1))])
    root = tmp_path / "emobox"
    tests = write_folds(root, list(manifest().utt_id))
    args = ["sweep", str(cache), "--heads", "linear,wsum", "--protocol", "emobox", "--seeds", "1", "--epochs", "1",
            "--device", "cpu", "--out", str(tmp_path / "sweep")]
    refused = CliRunner().invoke(cli, args)  # the fold folder is missing: train's own message
    assert refused.exit_code == 2 and "--protocol emobox reads fold files: give them with --folds PATH" in refused.output
    made = CliRunner().invoke(cli, [*args, "--folds", str(root)], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    for name in ("linear", "wsum"):
        run = tmp_path / "sweep" / name
        config = json.loads((run / "config.json").read_text())
        assert config["protocol"] == "emobox" and config["protocol_options"]["path"] == str(root.resolve())
        for k, test in tests.items():  # each fold tests exactly the utterances its file names
            predicted = pd.read_csv(run / f"fold-{k}" / "seed0" / "predictions.csv")
            assert sorted(predicted.utt_id) == sorted(test), (name, k)
    assert "emobox" in (tmp_path / "sweep" / "sweep.json").read_text()


def test_sweep_takes_trains_patience(tmp_path):
    """A sweep's configurations are `train` runs: the early stopping `train --patience` sets is a sweep option too."""
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache
    from tests.test_emobox import manifest

    cache = write_synthetic_cache(tmp_path / "cache", manifest(), [SyntheticStream("ssl", "ssl", 8, (0, 1))])
    made = CliRunner().invoke(cli, ["sweep", str(cache), "--heads", "linear", "--seeds", "1", "--fold", "1",
                                    "--epochs", "3", "--patience", "1", "--device", "cpu",
                                    "--out", str(tmp_path / "sweep")], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    assert json.loads((tmp_path / "sweep" / "linear" / "config.json").read_text())["train"]["patience"] == 1


def test_sweep_seeds_default_as_trains(tmp_path):
    """Without --seeds a sweep gives each head train's default: 3 seeds, 1 for a deterministic head (logreg)."""
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache
    from tests.test_emobox import manifest

    cache = write_synthetic_cache(tmp_path / "cache", manifest(), [SyntheticStream("ssl", "ssl", 8, (0, 1))])
    made = CliRunner().invoke(cli, ["sweep", str(cache), "--heads", "linear,logreg", "--fold", "1", "--epochs", "1",
                                    "--device", "cpu", "--out", str(tmp_path / "sweep")], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["seeds"] == {"linear": 3, "logreg": 1}
    for head, seeds in (("linear", [0, 1, 2]), ("logreg", [0])):
        assert json.loads((tmp_path / "sweep" / head / "config.json").read_text())["seeds"] == seeds


def test_a_sweep_takes_all_layers_and_the_text_source_as_configurations(small_cache, tmp_path):
    """--layers 1,all: a configuration per layer and one on every stored layer; --text goes to the heads that read
    text only (linear reads none: it would be refused by train)."""
    out = tmp_path / "sweep"
    result = CliRunner().invoke(cli, ["sweep", str(small_cache), "--heads", "linear,gate", "--layers", "1,all",
                                      "--text", "gold", "--fold", "1", "--seeds", "1", "--epochs", "1",
                                      "--device", "cpu", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    names = ["gate-all-layers", "gate-layer1", "linear-all-layers", "linear-layer1"]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == names
    configs = {n: json.loads((out / n / "config.json").read_text()) for n in names}
    assert configs["gate-all-layers"]["roles"]["audio"]["layers"] == [0, 1, 2]  # the learned mix
    assert configs["gate-layer1"]["roles"]["audio"]["layers"] == [1]
    assert {configs[n]["roles"]["text"]["stream"] for n in names if n.startswith("gate")} == {"text_gold"}
    assert all(list(configs[n]["roles"]) == ["audio"] for n in names if n.startswith("linear"))
    assert configs["linear-all-layers"]["roles"]["audio"]["layers"] == [[0, 1, 2]]  # pooled statistics of each
    report = (out / "report.md").read_text()
    assert all(f"- run: {out / n}\n" in report for n in names)  # one combined report


@pytest.mark.parametrize(("layers", "expect"), [("1,x", "'x' is not a layer number, 'all' or 'select'"),
                                                ("1,all,1", "'1' is given twice")])
def test_sweep_refuses_a_bad_layers_word(small_cache, tmp_path, layers, expect):
    result = CliRunner().invoke(cli, ["sweep", str(small_cache), "--heads", "linear", "--layers", layers,
                                      "--out", str(tmp_path / "sweep")])
    assert result.exit_code != 0 and expect in result.output, result.output
    assert not (tmp_path / "sweep").exists()
