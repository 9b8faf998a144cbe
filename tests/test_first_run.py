"""A newcomer's first extract and train (issue 21): an immediate line, the corpus layout checked before any
model and named when ROOT does not follow it, and Ctrl-C that says what is kept and how to resume."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.corpora import corpora
from tests.conftest import extract_args

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def interrupt_when(command: list[str], ready: Callable[[], bool], err: Path) -> subprocess.Popen:
    """Start ``sercache COMMAND``, send it SIGINT (Ctrl-C) once ``ready()`` is true, wait for it to end."""
    with open(err, "w") as stream:
        # SIGINT back to its default in the child: a test run in the background would pass it on ignored
        proc = subprocess.Popen([sys.executable, "-m", "sercache", *command], stdout=subprocess.DEVNULL,
                                stderr=stream, env=ENV, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        while not ready():  # the event, polled
            assert proc.poll() is None, err.read_text()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc


def test_ctrl_c_in_extract_says_what_is_kept_and_the_resumed_bar_counts_it(small_corpus, models, tmp_path):
    out = tmp_path / "cache"
    command = extract_args(small_corpus, out, models, "--session", "1", "--flush-seconds", "0", streams="ssl")
    command.remove("--no-progress")
    proc = interrupt_when(command, lambda: bool(list(out.glob("*/.staging/*/seg-*.h5"))), tmp_path / "first.err")
    said = (tmp_path / "first.err").read_text()
    assert proc.returncode == 130, said
    assert "Aborted!" not in said and "rerun the same command to resume" in said, said
    kept = int(re.search(r"^kept (\d+) utterances of stream ssl", said, re.M).group(1))
    assert 0 < kept < 16, said
    again = subprocess.run([sys.executable, "-m", "sercache", *command], capture_output=True, text=True, env=ENV)
    assert again.returncode == 0, again.stderr
    bars = [b for b in again.stderr.replace("\r", "\n").splitlines() if b.startswith("Session1/ssl:")]
    assert re.search(rf"\b{kept}/16\b", bars[0]), bars  # the bar starts at what is stored, not at 0/(16 - kept)
    assert re.search(r"\b16/16\b", bars[-1]), bars


def test_ctrl_c_in_train_says_how_many_tasks_are_kept_and_the_same_command_resumes(small_cache, tmp_path):
    run = tmp_path / "run"
    command = ["train", str(small_cache), "--head", "mlp", "--audio-stream", "mfcc", "--fold", "1", "--seeds", "3",
               "--epochs", "40", "--patience", "40", "--batch-size", "8", "--device", "cpu", "--no-progress",
               "--out", str(run)]
    proc = interrupt_when(command, lambda: (run / "loso-1" / "seed0" / "DONE").exists(), tmp_path / "train.err")
    said = (tmp_path / "train.err").read_text()
    assert proc.returncode == 130, said
    done = len(list(run.glob("*/seed*/DONE")))
    assert f"interrupted. kept {done} of 3 fold/seed tasks in {run}" in said and "Aborted!" not in said, said
    assert "rerun the same command to resume" in said
    again = CliRunner().invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert f"{done} fold/seed result(s) already done, {3 - done} to train" in again.output


def test_extract_says_at_once_what_it_reads_and_checks_the_layout_before_any_model(tmp_path, monkeypatch):
    import sercache.extract.runner as runner

    def no_models(*args: object) -> None:
        raise AssertionError("models were built before the corpus layout was checked")

    monkeypatch.setattr(runner, "build_extractors", no_models)
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("take1.wav", "take2.wav"):
        (flat / name).write_bytes(b"")
    result = CliRunner().invoke(cli, ["extract", str(flat), "--corpus", "emodb", "--out", str(tmp_path / "c"),
                                      "--streams", "ssl", "--ssl-model", str(tmp_path / "no-such-model")])
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[0] == f"extract: reading {flat} as emodb (streams ssl) into {tmp_path / 'c'}"
    assert (f"no utterances to extract from {flat}" in result.output
            and "--corpus emodb expects ROOT/wav/03a01Fa.wav" in result.output
            and "2 file(s) there do not follow it" in result.output), result.output


@pytest.mark.parametrize("corpus", sorted(corpora()))
def test_a_root_without_the_corpus_layout_is_told_the_layout(corpus, tmp_path, monkeypatch):
    """Generic: the hint is each registered corpus's declared ``layout``."""
    import sercache.extract.runner as runner

    monkeypatch.setattr(runner, "build_extractors", lambda *a: pytest.fail("models before the layout"))
    layout = corpora()[corpus].layout
    assert layout, f"corpus {corpus} declares no layout (register_corpus(..., layout=...))"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = CliRunner().invoke(cli, ["extract", str(empty), "--corpus", corpus, "--out", str(tmp_path / "c"),
                                      "--streams", "mfcc"])
    assert result.exit_code == 2 and f"--corpus {corpus} expects" in result.output, result.output
    assert layout.split(" ")[0] in result.output, result.output


def test_predict_names_every_missing_model_folder_before_loading_any(small_corpus, models, tmp_path, monkeypatch):
    import shutil

    import sercache.runs.predict as predict
    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract
    from sercache.training.run import TrainRequest, run_training

    ssl, text = Path(shutil.copytree(models["ssl"], tmp_path / "hubert")), Path(shutil.copytree(models["text"],
                                                                                                 tmp_path / "bert"))
    cache = tmp_path / "cache"
    run_extract(ExtractOptions(root=small_corpus, corpus="iemocap", out=cache, streams=("ssl", "text_gold"),
                               ssl_model=str(ssl), text_model=str(text), sessions=["1", "2", "3"], device="cpu",
                               progress=False))
    run, _ = run_training(TrainRequest(cache=cache, head="gate", out=tmp_path / "run", fold="1", text="gold",
                                       device="cpu", train={"epochs": 1}), progress=lambda m: None)
    ssl.rename(tmp_path / "hubert-moved")
    text.rename(tmp_path / "bert-moved")
    monkeypatch.setattr(predict, "extractor_for", lambda *a, **k: pytest.fail("a model was loaded first"))
    wav = next(small_corpus.rglob("*.wav"))
    result = CliRunner().invoke(cli, ["predict", str(run), str(wav), "--device", "cpu", "--no-progress",
                                      "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 2, result.output
    assert "2 model folders the run needs are missing (nothing was loaded)" in result.output, result.output
    assert str(ssl) in result.output and str(text) in result.output and "--model ssl=FOLDER" in result.output


def test_no_progress_means_no_bars_from_transformers_either(small_corpus, models, tmp_path, capfd):
    """run_extract(progress=False), as a script or notebook calls it, shows no "Loading weights" bar from
    transformers either (the CLI silenced it, the Python API did not), and leaves transformers' setting as it was."""
    from transformers.utils import logging as hf_logging

    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract

    hf_logging.enable_progress_bar()  # as in a fresh notebook (a CLI test in this process may have turned it off)
    for progress in (False, True):
        run_extract(ExtractOptions(root=small_corpus, corpus="iemocap", out=tmp_path / f"cache-{progress}",
                                   streams=("ssl",), ssl_model=str(models["ssl"]), sessions=["1"], device="cpu",
                                   progress=progress))
        err = capfd.readouterr().err
        assert ("Loading weights" in err) == progress, err[-2000:]
        assert hf_logging.is_progress_bar_enabled()
