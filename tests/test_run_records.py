"""A damaged or crafted run directory is refused with the file named, never a traceback or a read outside it."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from tests.conftest import trained_linear_probe


@pytest.fixture(scope="module")
def trained_run(signal_cache, tmp_path_factory) -> Path:
    """One fold of a linear probe on the planted-signal cache (read-only: tests copy it)."""
    return trained_linear_probe(signal_cache, tmp_path_factory.mktemp("records") / "run", "--seeds", "1",
                                "--epochs", "3")


def invoke(*args: str):  # noqa: ANN201 - click Result
    return CliRunner().invoke(cli, list(args))


def test_truncated_folds_json_is_named_and_the_fix_given(run_copy, signal_cache):
    folds = run_copy / "folds.json"
    folds.write_bytes(folds.read_bytes()[: len(folds.read_bytes()) // 2])  # a full disk cut it
    for result in (invoke("report", str(run_copy)),
                   invoke("train", str(signal_cache), "--head", "linear", "--audio-stream", "mfcc", "--fold", "1",
                          "--seeds", "1", "--epochs", "3", "--out", str(run_copy), "--device", "cpu")):
        assert result.exit_code == 2, result.output
        assert str(folds) in result.output and "damaged" in result.output and "Traceback" not in result.output


def test_truncated_config_json_is_named(run_copy):
    config = run_copy / "config.json"
    config.write_text(config.read_text()[:100])
    result = invoke("report", str(run_copy))
    assert result.exit_code == 2 and str(config) in result.output and "damaged" in result.output


def test_config_without_encoders_is_refused_by_name(run_copy):
    config = run_copy / "config.json"
    data = json.loads(config.read_text())
    del data["encoders"]
    config.write_text(json.dumps(data))
    for command in ("report", "eval"):
        result = invoke(command, str(run_copy))
        assert result.exit_code == 2, result.output
        assert "lacks encoders" in result.output and str(config) in result.output


@pytest.mark.parametrize("name", ["../../outside", "/tmp/abs", ".hidden", "a/b"])
def test_fold_names_that_leave_the_run_are_refused(run_copy, name):
    folds_path = run_copy / "folds.json"
    folds = json.loads(folds_path.read_text())
    folds[0]["name"] = name
    folds_path.write_text(json.dumps(folds))
    for command in ("report", "eval"):
        result = invoke(command, str(run_copy))
        assert result.exit_code == 2, result.output
        assert repr(name) in result.output and "fold 0" in result.output


class _Payload:
    """Unpickling this would create a file: proof that the checkpoint's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_in_a_checkpoint_is_refused_and_never_runs(run_copy, tmp_path):
    marker = tmp_path / "payload-ran"
    checkpoint = next(run_copy.glob("*/seed0/checkpoint.pt"))
    checkpoint.write_bytes(pickle.dumps({"state": _Payload(marker)}, protocol=2))
    result = invoke("eval", str(run_copy))
    assert result.exit_code == 2, result.output
    assert str(checkpoint) in result.output and "refused for safety" in result.output
    assert "weights_only=False" not in result.output and "Traceback" not in result.output
    assert not marker.exists()
