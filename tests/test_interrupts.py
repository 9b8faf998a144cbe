"""A Ctrl-C that lands inside a finaliser or weakref callback is printed as "Exception ignored" and dropped by
Python; extract and train must still stop at their next safe point, keep what is finished, and say how to resume
(CI once saw an extract run on to the end after such a Ctrl-C)."""
from __future__ import annotations

import signal
import weakref

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.interrupts import remembered_interrupts, stop_if_interrupted
from tests.conftest import extract_args

# the swallowed Ctrl-C is printed by Python as "Exception ignored": that is the case under test
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def ctrl_c_raises():
    """SIGINT handled as in a terminal, also when the suite runs in the background (nohup, &: SIGINT ignored,
    which sercache keeps ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


class _Garbage:
    pass


def swallowed_ctrl_c() -> None:
    """Press Ctrl-C while a weakref callback runs: Python prints "Exception ignored" and goes on."""
    thing = _Garbage()
    ref = weakref.ref(thing, lambda _: signal.raise_signal(signal.SIGINT))
    del thing
    assert ref() is None


def test_a_swallowed_ctrl_c_is_remembered_until_the_next_safe_point():
    with remembered_interrupts():
        swallowed_ctrl_c()  # nothing raised here: this is the Python behaviour the module exists for
        with pytest.raises(KeyboardInterrupt):
            stop_if_interrupted()
        stop_if_interrupted()  # once only: the next check passes


def test_an_ignored_sigint_stays_ignored():  # nohup sercache extract ... &
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with remembered_interrupts():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        signal.raise_signal(signal.SIGINT)
        stop_if_interrupted()


def test_outside_the_block_sigint_is_handled_as_before():
    before = signal.getsignal(signal.SIGINT)
    with remembered_interrupts():
        assert signal.getsignal(signal.SIGINT) is not before
    assert signal.getsignal(signal.SIGINT) is before
    stop_if_interrupted()  # nothing pending


def test_extract_stops_after_a_swallowed_ctrl_c_keeps_the_finished_batches_and_resumes(small_corpus, models,
                                                                                       tmp_path, monkeypatch):
    from sercache.extract.stream_job import StreamJob

    store, calls = StreamJob._store, []

    def store_then_ctrl_c(self, items):  # noqa: ANN001, ANN202
        store(self, items)
        calls.append(len(items))
        if len(calls) == 3:
            swallowed_ctrl_c()

    monkeypatch.setattr(StreamJob, "_store", store_then_ctrl_c)
    out = tmp_path / "cache"
    command = extract_args(small_corpus, out, models, "--session", "1", "--flush-seconds", "0", streams="mfcc")
    first = CliRunner().invoke(cli, command)
    assert first.exit_code == 130, first.output
    assert len(calls) == 3, calls  # stopped at the batch after the Ctrl-C, not at the end of the stream
    assert "kept 3 utterances of stream mfcc" in first.output and "rerun the same command" in first.output
    assert not (out / "Session1" / "mfcc.h5").exists()  # not finalised as if complete
    monkeypatch.setattr(StreamJob, "_store", store)
    again = CliRunner().invoke(cli, command)
    assert again.exit_code == 0, again.output
    assert (out / "Session1" / "mfcc.h5").exists()


def test_train_stops_after_a_swallowed_ctrl_c_and_says_what_is_kept(small_cache, tmp_path, monkeypatch):
    import sercache.training.epochs as epochs

    real, seen = epochs.bucket_batches, []

    def batches_then_ctrl_c(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(1)
        if len(seen) == 2:  # during the second epoch of the first task
            swallowed_ctrl_c()
        return real(*args, **kwargs)

    monkeypatch.setattr(epochs, "bucket_batches", batches_then_ctrl_c)
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(small_cache), "--head", "mlp", "--audio-stream", "mfcc",
                                      "--fold", "1", "--seeds", "2", "--epochs", "5", "--patience", "5",
                                      "--device", "cpu", "--jobs", "1", "--no-progress", "--out", str(run)])
    assert result.exit_code == 130, result.output
    assert len(seen) == 2, seen  # no further epoch began
    assert "interrupted. kept 0 of 2 fold/seed tasks" in result.output, result.output
    assert not list(run.glob("*/seed*/DONE"))
