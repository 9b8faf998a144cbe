"""`sercache train --config FILE`: options from YAML/JSON, a run's config.json replays the run, bad keys refused."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.training.config_file import OPTION_KEYS, RECORD_KEYS, load_train_file
from sercache.training.roles import RecordedLayers

TIMINGS = {"train_seconds", "train_seconds_per_epoch", "test_inference_seconds"}
RECORDS = {"command", "created", "protocol_default"}  # what a replay records differently, by design


def invoke(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, ["train", *map(str, args)], catch_exceptions=False)


def task_dirs(run: Path) -> list[Path]:
    return sorted(p.parent for p in run.glob("*/seed*/DONE"))


def assert_same_results(a: Path, b: Path) -> None:
    """Every fold/seed of run ``b`` gives run ``a``'s metrics, predictions and curves (timings aside)."""
    tasks = task_dirs(a)
    assert tasks and [t.relative_to(a) for t in tasks] == [t.relative_to(b) for t in task_dirs(b)]
    for task in tasks:
        other = b / task.relative_to(a)
        ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (task, other))
        assert {k: v for k, v in ma.items() if k not in TIMINGS} == {k: v for k, v in mb.items() if k not in TIMINGS}
        assert (task / "predictions.csv").read_bytes() == (other / "predictions.csv").read_bytes(), task
        ca, cb = (pd.read_csv(d / "curve.csv") for d in (task, other))
        seconds = [c for c in ca.columns if c.endswith("seconds")]
        pd.testing.assert_frame_equal(ca.drop(columns=seconds), cb.drop(columns=seconds))
    assert json.loads((a / "folds.json").read_text()) == json.loads((b / "folds.json").read_text())


@pytest.mark.parametrize("args", [
    # a torch head, two seeds, refit, hyperparameters and validation speakers that are not the defaults
    ["--head", "gate", "--fold", "1", "--seeds", "2", "--epochs", "2", "--lr", "3e-3", "--batch-size", "8",
     "--set", "dropout=0.1", "--refit", "--valid-speakers", "2"],
    # a closed-form head on two pooled streams (one recorded layer per stream), two folds
    ["--head", "logreg", "--fold", "1,3", "--seeds", "1", "--audio-stream", "ssl,mfcc", "--text", "gold",
     "--set", "with_text=true"]], ids=["gate", "logreg"])
def test_a_runs_config_json_reproduces_the_run(small_cache, tmp_path, args):
    first = invoke(small_cache, *args, "--device", "cpu", "--no-progress", "--out", tmp_path / "run")
    assert first.exit_code == 0, first.output
    again = invoke("--config", tmp_path / "run" / "config.json", "--out", tmp_path / "again", "--no-progress")
    assert again.exit_code == 0, again.output
    assert "replaying a recorded run with the same settings" in again.stderr
    assert_same_results(tmp_path / "run", tmp_path / "again")
    a, b = (json.loads((tmp_path / r / "config.json").read_text()) for r in ("run", "again"))
    assert {k: v for k, v in a.items() if k not in RECORDS} == {k: v for k, v in b.items() if k not in RECORDS}
    if args[1] == "gate":  # (one head is enough for the rest, which trains the run a third time)
        return
    # the replay's own record spells every setting out: its command alone redoes the run too
    words = shlex.split(b["command"])
    assert "--config" not in words
    words[words.index("--out") + 1] = str(tmp_path / "third")
    third = CliRunner().invoke(cli, words[1:] + ["--no-progress"], catch_exceptions=False)
    assert third.exit_code == 0, third.output
    assert_same_results(tmp_path / "run", tmp_path / "third")


def test_options_given_override_a_run_config_and_drop_what_contradicts_them(small_cache, tmp_path):
    """--text gold drops the recorded text stream; another --head drops the old head's settings."""
    made = invoke(small_cache, "--head", "gate", "--fold", "1", "--seeds", "1", "--epochs", "2", "--lr", "3e-3",
                  "--set", "dropout=0.1", "--device", "cpu", "--no-progress", "--out", tmp_path / "gate")
    assert made.exit_code == 0, made.output
    other = invoke("--config", tmp_path / "gate" / "config.json", "--head", "cmgi", "--text", "gold", "--epochs", "1",
                   "--out", tmp_path / "cmgi", "--no-progress")
    assert other.exit_code == 0, other.output
    assert "with these differences: " in other.stderr and 'head: stored "gate", asked "cmgi"' in other.stderr
    config = json.loads((tmp_path / "cmgi" / "config.json").read_text())
    from sercache.heads import get_head
    from sercache.training.train_config import TrainConfig

    assert config["head"] == "cmgi" and config["roles"]["text"]["stream"] == "text_gold"
    assert config["hyperparameters"] == get_head("cmgi").hyperparameters()  # gate's dropout=0.1 dropped
    assert config["train"] == {**vars(TrainConfig.for_head("cmgi", {})), "epochs": 1}  # cmgi's lr, not gate's
    assert config["fold_selection"] == "1" and config["protocol"] == "loso"  # the rest: from the file

    # a head without a text role drops the recorded text stream and source (they would be refused as ignored)
    probe = invoke("--config", tmp_path / "gate" / "config.json", "--head", "logreg", "--out", tmp_path / "logreg",
                   "--no-progress")
    assert probe.exit_code == 0, probe.output
    config = json.loads((tmp_path / "logreg" / "config.json").read_text())
    assert config["head"] == "logreg" and list(config["roles"]) == ["audio"] and config["text_source"] is None
    assert config["roles"]["audio"] == json.loads((tmp_path / "gate" / "config.json").read_text())["roles"]["audio"]


YAML = """\
# a hand-written file: option names (either spelling), set as a mapping, train: for settings without an option
cache: {cache}
head: linear
fold: 1
seeds: 1
lr: 2e-2          # YAML reads this as text: it is still the number 0.02
batch-size: 16
epochs: 4
set: {{dropout: 0.1, pooling: meanstd}}
train: {{schedule: step, step_size: 1, gamma: 0.5}}
device: cpu
no_progress: true
"""


def test_a_yaml_file_with_a_command_line_override(small_cache, tmp_path):
    path = tmp_path / "linear.yaml"
    path.write_text(YAML.format(cache=small_cache))
    result = invoke("--config", path, "--epochs", "2", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    train = config["train"]
    assert (train["epochs"], train["lr"], train["batch_size"]) == (2, 0.02, 16)  # --epochs beat the file's 4
    assert (train["schedule"], train["step_size"], train["gamma"]) == ("step", 1, 0.5)
    assert config["hyperparameters"]["dropout"] == 0.1 and config["fold_selection"] == "1"
    curve = pd.read_csv(tmp_path / "run" / "loso-1" / "seed0" / "curve.csv")
    assert curve[curve.phase == "select"].lr.tolist() == [0.02, 0.01]  # the file's schedule did run
    # the file sets what no option can (schedule): the recorded command names it, and replays the run
    words = shlex.split(config["command"])
    assert words[words.index("--config") + 1] == str(path.resolve()) and words[words.index("--epochs") + 1] == "2"
    words[words.index("--out") + 1] = str(tmp_path / "again")
    again = CliRunner().invoke(cli, words[1:], catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert_same_results(tmp_path / "run", tmp_path / "again")


def test_a_json_file_takes_the_same_keys(small_cache, tmp_path):
    path = tmp_path / "svm.json"
    path.write_text(json.dumps({"cache": str(small_cache), "head": "svm", "fold": "2", "seeds": 1,
                                "set": ["C=[1, 10]"], "device": "cpu", "no-progress": True,
                                "out": str(tmp_path / "run")}))
    result = invoke("--config", path)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["head"] == "svm" and config["hyperparameters"]["C"] == [1, 10] and config["fold_selection"] == "2"


@pytest.mark.parametrize(("text", "expect"), [
    ("cache: {cache}\nhead: linear\nlearning_rate: 0.1\n", "unknown key 'learning_rate'; valid keys: audio_stream, "),
    ("cache: {cache}\ntrain: {{lr_decay: 0.5}}\n", "unknown key 'train.lr_decay'; valid keys: optimizer, lr, "),
    ("cache: {cache}\ncreated: 2024-01-01\n", "unknown key 'created' (a record of a run's config.json"),
    ("cache: {cache}\nhead: linear\nepochs: 0\n", "epochs: 0 is not in the range 1<=x<="),
    ("cache: {cache}\noptimizer: lbfgs\n", "optimizer: 'lbfgs' is not one of 'adam', 'adamw', 'sgd'"),
    ("cache: {cache}\nlr: 1\nlr: 2\n", "key 'lr' is given twice"),
    ("cache: {cache}\nbatch_size: 4\nbatch-size: 8\n", "'batch-size' and 'batch_size' are the same option"),
    ("- head: linear\n", "expected a mapping of option names to values (lr: 3e-4), found a list"),
    ("cache: {cache}\nhead: [linear\n", "is not valid YAML"),
    ("head: linear\ncache: /nonexistent/cache\n", "cache: Directory '/nonexistent/cache' does not exist"),
])
def test_bad_files_are_refused_naming_the_key(small_cache, tmp_path, text, expect):
    path = tmp_path / "bad.yaml"
    path.write_text(text.format(cache=small_cache))
    result = invoke("--config", path, "--out", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert expect in result.output and str(path) in result.output
    assert not (tmp_path / "run").exists()


def test_unknown_keys_of_a_run_config_are_refused(small_cache, tmp_path):
    made = invoke(small_cache, "--head", "linear", "--fold", "1", "--seeds", "1", "--epochs", "1", "--device", "cpu",
                  "--no-progress", "--out", tmp_path / "run")
    assert made.exit_code == 0, made.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(config) <= RECORD_KEYS  # every key a run writes is one a replay understands
    (tmp_path / "edited.json").write_text(json.dumps({**config, "warmup": 3}))
    result = invoke("--config", tmp_path / "edited.json", "--out", tmp_path / "again")
    assert result.exit_code == 2 and "unknown key 'warmup' in this run's config.json; valid keys: cache" in result.output
    (tmp_path / "edited.json").write_text(json.dumps({**config, "train": {**config["train"], "warmup": 3}}))
    result = invoke("--config", tmp_path / "edited.json", "--out", tmp_path / "again")
    assert result.exit_code == 2 and "unknown training setting 'warmup'; valid ones: optimizer, lr" in result.output
    assert not (tmp_path / "again").exists()


def test_every_train_option_has_a_file_key():
    params = {p.name for p in cli.commands["train"].params} - {"config_file"}
    assert set(OPTION_KEYS.values()) == params
    for key, name in OPTION_KEYS.items():  # the key is the option's own long name
        param = next(p for p in cli.commands["train"].params if p.name == name)
        assert isinstance(param, click.Argument) or f"--{key.replace('_', '-')}" in param.opts, key


def test_load_train_file_maps_a_record_back_to_options(tmp_path):
    """Library level: the recorded protocol, layers and settings become the options that give them."""
    record = {"sercache_version": "0", "cache": "/c", "head": "linear", "hyperparameters": {"dropout": 0.1, "x": "1"},
              "train": {"lr": 0.5, "schedule": "step"}, "labels": {"preset": "iemocap4"}, "subset": "all",
              "split_seed": 3, "seeds": [0, 1], "fold_selection": "all", "text_source": None,
              "roles": {"audio": {"stream": "mfcc,ssl", "layers": [0, 2]}},
              "protocol": "random", "protocol_options": {"ratios": [0.7, 0.2, 0.1]}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(record))
    file = load_train_file(path)
    assert file.record and file.layers == {"audio": RecordedLayers((0, 2))} and file.train == {"schedule": "step"}
    o = file.options
    assert (o["protocol"], o["ratios"], o["seeds"], o["split_seed"], o["lr"]) == ("random", "0.7,0.2,0.1", 2, 3, 0.5)
    assert o["settings"] == ("dropout=0.1", 'x="1"') and o["audio_stream"] == "mfcc,ssl" and "layer" not in o
    assert "audio" not in file.overridden_by({"audio_stream": "ssl"}).layers
    assert "fold_file" not in file.overridden_by({"protocol": "loso"}).options


def test_the_readme_yaml_example_is_a_valid_config_file(tmp_path):
    import re

    readme = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    block = next(b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("# gate.yaml"))
    (tmp_path / "gate.yaml").write_text(block)
    file = load_train_file(tmp_path / "gate.yaml")
    assert file.options["head"] == "gate" and file.options["settings"] == ("dropout=0.1",)
    assert file.train == {"schedule": "exponential", "gamma": 0.9}
    params = {p.name: p for p in cli.commands["train"].params}
    ctx = click.Context(cli.commands["train"])
    for name, value in file.options.items():  # each value as the option takes it (cache: checked when it exists)
        if name != "cache_dir":
            params[name].type_cast_value(ctx, value)


def test_a_fold_file_run_replays_with_its_files_and_says_when_they_changed(small_cache, tmp_path):
    from sercache.store import open_cache

    utts = open_cache(small_cache).utterances
    folds = tmp_path / "folds.csv"
    pd.DataFrame({"utt_id": utts.utt_id, "fold": utts.session.map(lambda s: 1 + int(s) % 2)}).to_csv(folds, index=False)
    made = invoke(small_cache, "--head", "linear", "--folds", folds, "--seeds", "1", "--epochs", "1", "--device", "cpu",
                  "--no-progress", "--out", tmp_path / "run")
    assert made.exit_code == 0, made.output
    again = invoke("--config", tmp_path / "run" / "config.json", "--out", tmp_path / "again", "--no-progress")
    assert again.exit_code == 0 and "with the same settings" in again.stderr, again.output
    assert_same_results(tmp_path / "run", tmp_path / "again")
    folds.write_text(folds.read_text().replace(",1\n", ",2\n", 3))  # three utterances move to the other fold
    changed = invoke("--config", tmp_path / "run" / "config.json", "--out", tmp_path / "changed", "--no-progress")
    assert changed.exit_code == 0 and "with these differences: protocol_options.sha1: stored" in changed.stderr


@pytest.mark.parametrize("protocol,options,made_before", [
    ("loso", {}, False), ("loso", {}, True), ("lospk", {"valid": "fraction"}, False), ("session-holdout", {}, True),
    ("random", {}, True)])
def test_a_run_made_through_the_api_replays_into_its_own_directory(small_cache, tmp_path, protocol, options,
                                                                   made_before):
    """#23.9: the demo trains through the Python API; its config.json replays exactly, as a CLI-made run's does."""
    from sercache.training.run import TrainRequest, run_training

    run = tmp_path / "run"
    run_training(TrainRequest(cache=small_cache, head="linear", out=run, fold="1", protocol=protocol,
                              protocol_options=options, seeds=1, train={"epochs": 1}, device="cpu"),
                 progress=lambda message: None)
    if made_before:  # what the demo recorded until this fix: no defaults spelled out
        config = json.loads((run / "config.json").read_text())
        config["protocol_options"] = options
        (run / "config.json").write_text(json.dumps(config))
    again = invoke("--config", run / "config.json", "--out", run, "--no-progress")
    assert again.exit_code == 0, again.output
    assert "replaying a recorded run with the same settings" in again.stderr
    assert "1 fold/seed result(s) already done, 0 to train" in again.stderr


def test_a_replay_under_another_protocol_drops_the_files_options_of_the_old_one(small_cache, tmp_path):
    """--ratios belongs to random: replaying a random run's config.json with --protocol loso drops it, where
    it would now be refused as an option loso does not read; --session given with it is kept."""
    made = invoke(small_cache, "--head", "linear", "--audio-stream", "mfcc", "--protocol", "random", "--ratios",
                  "0.6,0.2,0.2", "--fold", "1", "--seeds", "1", "--epochs", "1", "--device", "cpu", "--no-progress",
                  "--out", tmp_path / "random")
    assert made.exit_code == 0, made.output
    loso = invoke("--config", tmp_path / "random" / "config.json", "--protocol", "loso", "--out", tmp_path / "loso",
                  "--no-progress")
    assert loso.exit_code == 0, loso.output
    assert json.loads((tmp_path / "loso" / "config.json").read_text())["protocol_options"] == {"valid_fraction": 0.2}
    held = invoke("--config", tmp_path / "random" / "config.json", "--protocol", "session-holdout", "--session", "3",
                  "--out", tmp_path / "held", "--no-progress")
    assert held.exit_code == 0, held.output
    assert json.loads((tmp_path / "held" / "config.json").read_text())["protocol_options"] == {"session": "3"}
