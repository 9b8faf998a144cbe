"""One `sercache train` per run directory, and its workers never outlive it."""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
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


def is_worker(pid: int) -> bool:
    try:
        return b"loky" in Path(f"/proc/{pid}/cmdline").read_bytes() and b"resource_tracker" not in Path(
            f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
#: Only against a hang: the workers die with train, well before this.
HANG_GUARD = 120


def kill_if_alive(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def adopting_orphans() -> Iterator[None]:
    """This process adopts its orphaned descendants (Linux), so that ``os.waitpid`` can wait for them."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    assert prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0, os.strerror(ctypes.get_errno())
    try:
        yield
    finally:
        prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal and /proc are Linux's")
def test_workers_die_with_train_when_it_is_killed(signal_cache, tmp_path):
    """The kernel SIGKILLs train's workers with it (no poll: loky's own took 30 s and more on a loaded machine).

    Event-based: this process adopts the orphans, so ``waitpid`` blocks until each worker has gone and says how.
    Killed by SIGKILL is the parent-death signal; a worker that noticed by polling would exit with a status.
    Then the resource trackers, left without clients, remove the semaphores and folders of the run's pool.
    """
    run = tmp_path / "run"
    ours = set(children(os.getpid()))
    guard_fired = threading.Event()
    orphans: set[int] = set()
    with adopting_orphans():
        proc = subprocess.Popen(
            [sys.executable, "-m", "sercache", "train", str(signal_cache), "--head", "gate", "--jobs", "2",
             "--seeds", "3", "--epochs", "200", "--patience", "200", "--progress-every", "0", "--out", str(run),
             "--device", "cpu"], stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        try:
            training = set()
            for line in proc.stderr:  # event: both workers are inside a fold's epochs (past their initializer)
                if ": epoch " in line:
                    training.add(line.split(": epoch ")[0])
                if len(training) == 2:
                    break
            workers = [p for p in children(proc.pid) if is_worker(p)]
            assert len(workers) == 2, f"expected 2 joblib workers under the train process, found {workers}"
            proc.kill()
            proc.wait()
            orphans = set(children(os.getpid())) - ours - {proc.pid}  # the workers and the resource trackers
            assert set(workers) <= orphans

            def give_up() -> None:  # only against a hang: kill what is left, and the test fails
                guard_fired.set()
                for p in orphans:
                    kill_if_alive(p)

            guard = threading.Timer(HANG_GUARD, give_up)
            guard.start()
            try:
                statuses = {p: os.waitpid(p, 0)[1] for p in sorted(orphans)}
            finally:
                guard.cancel()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for p in orphans:
                kill_if_alive(p)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(p, 0)
    assert not guard_fired.is_set(), f"workers or trackers still there {HANG_GUARD} s after train was killed"
    for p in workers:
        assert os.WIFSIGNALED(statuses[p]) and os.WTERMSIG(statuses[p]) == signal.SIGKILL, (
            f"worker {p} was not killed with its parent (wait status {statuses[p]:#x}): it noticed by itself")
    shm = Path("/dev/shm")
    if shm.is_dir():  # loky's named semaphores and joblib's memmapping folders, named after their creator
        left = [f.name for f in shm.iterdir() if f"loky-{proc.pid}-" in f.name or f"folder_{proc.pid}_" in f.name]
        assert not left, f"left behind in /dev/shm by the killed run's pool: {left}"


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
