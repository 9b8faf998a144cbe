"""Cluster engines shared by extraction and sweeps: submitit executors, SLURM times, ``squeue``; and local
worker processes that die with their parent.

A leaf module: it knows SLURM, submitit and process pools, nothing about caches or heads.
"""
from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sercache.errors import SercacheError

#: ``squeue`` states -> what sercache calls them (anything else: the task has left the queue).
SQUEUE_STATES = {"PENDING": "queued", "CONFIGURING": "queued", "REQUEUED": "queued", "RUNNING": "running",
                 "COMPLETING": "running", "SUSPENDED": "running"}


class EngineError(SercacheError, ValueError):
    """A cluster request that cannot be submitted (named option and the fix)."""


@dataclass
class SlurmSettings:
    """``--slurm-*``: what each task asks the cluster for (None: the cluster's default)."""

    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    time: str = "4:00:00"
    array_parallelism: int = 16
    setup: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.array_parallelism < 1:
            raise EngineError(f"--slurm-array-parallelism {self.array_parallelism}: must be at least 1")
        time_minutes(self.time)


def time_minutes(spec: str) -> int:
    """SLURM time ``[D-]HH:MM:SS``, ``HH:MM`` or minutes -> minutes (rounded up)."""
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(spec).strip())
    if not m:
        raise EngineError(f"--slurm-time {spec!r}: use HH:MM:SS, D-HH:MM:SS or minutes, e.g. 4:00:00")
    days, a, b, c = (int(g) if g else None for g in m.groups())
    if b is None:  # plain minutes
        minutes = a
    elif c is None:  # HH:MM
        minutes = a * 60 + b
    else:
        minutes = a * 60 + b + (c > 0)
    return minutes + (days or 0) * 24 * 60


def make_executor(folder: Path, engine: str, name: str, slurm: SlurmSettings) -> Any:
    """A submitit executor writing its scripts and logs into ``folder`` (``engine``: slurm | local)."""
    try:
        import submitit
    except ImportError:
        raise EngineError("cluster engines need submitit: pip install 'sercache[cluster]'") from None
    executor = submitit.AutoExecutor(folder=folder, cluster=engine)
    params: dict[str, Any] = {"name": name, "timeout_min": time_minutes(slurm.time)}
    if slurm.cpus_per_task:
        params["cpus_per_task"] = slurm.cpus_per_task
    if slurm.mem_gb:
        params["mem_gb"] = slurm.mem_gb
    if engine == "slurm":
        params["slurm_array_parallelism"] = slurm.array_parallelism
        if slurm.partition:
            params["slurm_partition"] = slurm.partition
        if slurm.gpus_per_task:
            params["slurm_gpus_per_task"] = slurm.gpus_per_task
        if slurm.setup:
            params["slurm_setup"] = list(slurm.setup)
    executor.update_parameters(**params)
    return executor


def squeue_states(array_id: str) -> dict[str, str]:
    """``{"123_0": "RUNNING", ...}`` for the tasks SLURM still lists ({} once it has forgotten the job)."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array_id, "-o", "%i %T"], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return dict(line.split()[:2] for line in out.stdout.splitlines() if len(line.split()) >= 2)


def drop_pickles(folder: Path, job_ids: list[str] | None = None) -> None:
    """Remove submitit's pickles (of these jobs, or all): a cache or run holds no pickle once work is over."""
    for p in Path(folder).glob("*.pkl"):
        if job_ids is None or any(p.name.startswith(f"{j}_") for j in job_ids):
            p.unlink(missing_ok=True)


def drop_pickles_once_gone(folder: Path, job_ids: list[str], array_id: str, poll: float = 1.0) -> None:
    """Drop these SLURM tasks' pickles once SLURM no longer lists them (waits until then).

    A task writes its results first; submitit writes ``<job id>_result.pkl`` after, just before the task's
    process exits. Dropping when the results appear left that pickle behind (seen in CI).
    """
    waiting = list(job_ids)
    while waiting:
        listed = squeue_states(array_id)  # {} when squeue cannot answer: nothing left to wait for
        drop_pickles(folder, [j for j in waiting if j not in listed])
        waiting = [j for j in waiting if j in listed]
        if waiting:
            time.sleep(poll)


PR_SET_PDEATHSIG = 1  # linux/prctl.h
_WATCHED: set[int] = set()


def signal_on_parent_death(signum: int) -> bool:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux); False where it cannot.

    Linux ties the signal to the parent *thread* that started this process: a joblib/loky pool starts its
    workers from the thread that submits (or from its manager thread, which lives as long as the pool), so a
    pool first used from a short-lived thread loses its workers with that thread (joblib makes a new pool next time).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a worker process of ``parent``: go the instant ``parent`` is gone (the initializer of train's loky pool).

    A killed parent (SIGKILL, the OOM killer) does not take its workers with it: a worker would go on training
    into a run nobody is watching, and an idle one waits for loky's idle timeout (300 s). On Linux the kernel
    SIGKILLs the worker together with its parent, whatever the worker is doing: importing torch (a poll started
    by the first task let such workers live on for 30 s on a loaded machine), idle, or inside a call that holds
    the GIL. Elsewhere a thread checks every ``every`` seconds. Finished records are written by rename, so
    exiting at any moment leaves each task done or to redo.
    """
    if parent in _WATCHED:
        return
    _WATCHED.add(parent)
    if signal_on_parent_death(signal.SIGKILL):
        if os.getppid() != parent:  # it died before the prctl: no signal will come
            os._exit(3)
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(3)

    threading.Thread(target=watch, name="sercache-parent-watch", daemon=True).start()


def local_pool(jobs: int, return_as: str = "generator_unordered") -> Any:
    """joblib's loky pool of ``jobs`` worker processes that die with this one (see :func:`exit_with_parent`).

    ``train`` and ``sweep`` both start it here, with the same size and initializer, so that a later call in
    the same process reuses the workers an earlier one started (joblib keeps one reusable executor).
    """
    from joblib import Parallel

    return Parallel(n_jobs=jobs, return_as=return_as, initializer=exit_with_parent, initargs=(os.getpid(),))
