"""One `sercache train` per run directory, and its workers never outlive it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.store.lock import ExclusiveLock
from sercache.training.run import RUN_LOCK

REPO = Path(__file__).resolve().parents[1]


def test_a_second_train_into_a_held_run_directory_refuses_at_once(signal_cache, tmp_path):
    run = tmp_path / "run"
    with ExclusiveLock(run / RUN_LOCK, "held by the test ({holder})"):
        result = CliRunner().invoke(cli, ["train", str(signal_cache), "--head", "linear", "--audio-stream", "mfcc",
                                          "--fold", "1", "--seeds", "1", "--out", str(run), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "is being trained into by another `sercache train` (pid" in result.output
    assert not (run / "config.json").exists() and not list(run.glob("*/seed*"))  # refused before any work


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def is_worker(pid: int) -> bool:
    try:
        return b"loky" in Path(f"/proc/{pid}/cmdline").read_bytes() and b"resource_tracker" not in Path(
            f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_train_is_killed(signal_cache, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sercache", "train", str(signal_cache), "--head", "gate", "--jobs", "2", "--seeds", "3",
         "--epochs", "200", "--patience", "200", "--progress-every", "0", "--out", str(run), "--device", "cpu"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    workers: list[int] = []
    try:
        for line in proc.stderr:  # event: a worker is inside a fold's epochs
            if "epoch" in line:
                break
        workers = [p for p in children(proc.pid) if is_worker(p)]
        assert workers, "no joblib worker found under the train process"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 300  # a liveness bound, not a speed threshold: they exit within a second
        while any(alive(p) for p in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(p) for p in workers), "workers went on training after their parent was killed"
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in workers:
            if alive(p):
                os.kill(p, signal.SIGKILL)


@pytest.mark.slow
def test_a_resume_with_fewer_tasks_left_gives_identical_numbers(signal_cache, tmp_path):
    import shutil

    run = tmp_path / "run"
    args = ["train", str(signal_cache), "--head", "gate", "--fold", "1,2", "--seeds", "1", "--jobs", "2",
            "--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--out", str(run),
            "--device", "cpu", "--no-progress"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    before = (run / "loso-2" / "seed0" / "predictions.csv").read_text()
    shutil.rmtree(run / "loso-2" / "seed0")  # as if killed before this task finished
    resumed = CliRunner().invoke(cli, args)  # one task left: it must still get the run's thread count
    assert resumed.exit_code == 0 and "1 fold/seed result(s) already done, 1 to train" in resumed.output
    assert (run / "loso-2" / "seed0" / "predictions.csv").read_text() == before
