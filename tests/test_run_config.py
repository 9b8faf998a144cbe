"""A run's config.json as a typed RunConfig: the same JSON back, old runs still open, unknown keys refused by name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.training import run_layout
from sercache.training.roles import RoleSpec
from sercache.training.run_config import RunConfig, RunConfigError, settings_changes
from sercache.training.train_config import TrainConfig
from tests.conftest import LINEAR_PROBE, trained_linear_probe

TRAIN = [*LINEAR_PROBE, "--epochs", "2"]


@pytest.fixture(scope="module")
def trained_run(signal_cache, tmp_path_factory) -> Path:
    return trained_linear_probe(signal_cache, tmp_path_factory.mktemp("runconf") / "run", "--epochs", "2", "--seeds", "1")


def invoke(*args: object):  # noqa: ANN201 - click Result
    return CliRunner().invoke(cli, [str(a) for a in args])


def edit_config(run: Path, change) -> Path:  # noqa: ANN001 - a function of the parsed JSON
    path = run_layout.config_path(run)
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=1))
    return path


def test_a_runs_config_json_round_trips_to_the_same_text(trained_run):
    path = run_layout.config_path(trained_run)
    text = path.read_text()
    config = RunConfig.load(path)
    assert config.to_json() == text  # same keys, same order, same values
    assert isinstance(config.train, TrainConfig) and config.train.epochs == 2
    assert config.roles["audio"] == RoleSpec("audio", "mfcc", config.roles["audio"].layers)
    assert config.head == "linear" and config.seeds == [0] and config.streams == ["mfcc"]
    # it also reads as the mapping config.json holds, as `load_run(run).config` did when it was a dict
    assert dict(config) == json.loads(text) and config["labels"]["classes"] == config.labels.classes
    assert ("protocol_default" in config) == (config.protocol_default is not None)
    assert "fold_warnings" not in config and config.get("fold_warnings") is None


def test_a_config_from_before_the_optional_keys_reports_and_resumes(run_copy, signal_cache):
    """Runs made before threads_per_task, tensorboard and protocol_default existed still open and resume."""
    def drop(data: dict) -> None:
        for key in ("threads_per_task", "tensorboard", "protocol_default"):
            data.pop(key, None)

    path = edit_config(run_copy, drop)
    assert invoke("report", run_copy, "--bootstrap", "10").exit_code == 0
    again = invoke("train", signal_cache, *TRAIN, "--seeds", "2", "--out", run_copy)
    assert again.exit_code == 0, again.output
    config = json.loads(path.read_text())
    assert config["seeds"] == [0, 1] and config["tensorboard"] is False  # resume records both, as before
    assert "threads_per_task" not in config and "protocol_default" not in config  # nothing made up for the old run
    assert sorted(run_layout.seed_of(d) for d in run_copy.glob("*/seed*") if run_layout.is_done(d)) == [0, 1]


@pytest.mark.parametrize(("change", "expect"), [
    (lambda d: d.update(warmup=3), "unknown key 'warmup' in this run's config.json; valid keys: cache"),
    (lambda d: d["train"].update(warmup=3), "unknown training setting 'warmup'; valid ones: optimizer"),
    (lambda d: d["labels"].update(order="x"), "labels: unknown key 'order'"),
    (lambda d: d.update(seeds="0,1"), "seeds: expected a list of integers"),
    (lambda d: d["train"].update(epochs="many"), "train.epochs: 'many' is not a int"),
    (lambda d: d["roles"]["audio"].pop("layers"), "roles.audio: expected"),
])
def test_a_crafted_config_is_refused_naming_the_key_and_the_file(run_copy, signal_cache, change, expect):
    path = edit_config(run_copy, change)
    before = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*"))
    for args in (("report", run_copy), ("eval", run_copy),
                 ("train", signal_cache, *TRAIN, "--seeds", "2", "--out", run_copy)):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert expect in result.output and str(path) in result.output and "Traceback" not in result.output
    assert sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")) == before  # nothing trained or written


def test_settings_changes_compare_a_config_with_a_recorded_mapping(trained_run):
    config = RunConfig.load(run_layout.config_path(trained_run))
    recorded = json.loads(run_layout.config_path(trained_run).read_text())
    assert settings_changes(recorded, config) == ""
    recorded["train"]["lr"] = 0.5
    assert settings_changes(recorded, config) == f"train.lr: stored 0.5, asked {json.dumps(config.train.lr)}"
    with pytest.raises(RunConfigError, match="unknown key 'warmup'"):
        RunConfig.from_dict({**recorded, "warmup": 1})


def test_layout_keeps_tasks_inside_the_run(tmp_path):
    assert run_layout.task_dir(tmp_path, "Session1", 2) == tmp_path / "Session1" / "seed2"
    for bad in ("../out", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="fold"):
            run_layout.task_dir(tmp_path, bad, 0)
    for name in ("seed0", "seed10", "seed2", "seed_old", "seed3"):
        (tmp_path / "f" / name).mkdir(parents=True)
        if name != "seed3":  # seed3 unfinished
            (tmp_path / "f" / name / run_layout.DONE).write_text("")
    assert [d.name for d in run_layout.finished_tasks(tmp_path, "f")] == ["seed0", "seed10", "seed2"]
    assert run_layout.seed_of(tmp_path / "f" / "seed10") == 10 and run_layout.has_finished_task(tmp_path)
    with pytest.raises(ValueError, match="not a task directory"):
        run_layout.seed_of(tmp_path / "f" / "seed_old")
