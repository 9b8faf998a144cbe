"""Extraction as shard tasks: a SLURM job array (via submitit), or local child processes (no submitit).

Task ``i`` of ``N`` runs exactly ``sercache extract ... --shard i/N`` (same code, same resume), so a
task that dies is simply submitted again. Everything about a submission lives in
``CACHE/.jobs/<id>/``: ``submission.json`` (the request as plain JSON), one ``shard-<i>.json``
marker per finished task, one ``progress-<i>.json`` per started task, and the logs (and, for SLURM,
submitit's scripts). submitit hands each SLURM task its arguments as a pickle in that folder;
sercache itself never unpickles anything there, and removes those pickles once their task has
ended (see :func:`drop_pickles`). Local tasks (:mod:`~sercache.extract.local_tasks`) read
``submission.json`` instead.
"""
from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sercache.cluster_engines import EngineError, SlurmSettings, make_executor
from sercache.extract.local_tasks import LocalPool
from sercache.extract.options import ExtractError, ExtractOptions
from sercache.extract.submissions import (
    JOBS_DIR,
    SUBMISSION,
    Submission,
    drop_pickles,
    options_to_json,
    run_shard_task,
)
from sercache.store.atomic import write_text_atomic

EXECUTORS = ("slurm", "local")


@dataclass
class ClusterOptions:
    """How to spread one extraction over tasks (``--executor``, ``--shards``, ``--slurm-*``, ``--devices``)."""

    executor: str | None = None            # default: local with ``devices``, else slurm
    shards: int | None = None              # default: one per device with ``devices``, else 1
    only: list[int] | None = None          # resubmit just these task indices (1-based)
    devices: list[str] | None = None       # local tasks, one at a time per device (``--devices cuda:0,cuda:1``)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    wait: bool = False

    def __post_init__(self) -> None:
        if self.executor is None:
            self.executor = "local" if self.devices else "slurm"
        if self.devices and self.executor != "local":
            raise ExtractError("--devices runs the shard tasks as local processes, one at a time per device; "
                               "it excludes --executor slurm (ask SLURM for GPUs with --slurm-gpus-per-task)")
        if self.shards is None:
            self.shards = len(self.devices) if self.devices else 1
        if self.executor not in EXECUTORS:
            raise ExtractError(f"--executor {self.executor!r}: use one of {', '.join(EXECUTORS)}")
        if self.shards < 1:
            raise ExtractError(f"--shards {self.shards}: must be at least 1")
        bad = [i for i in self.only or [] if not 1 <= i <= self.shards]
        if bad:
            raise ExtractError(f"--only-shards {bad[0]}: shards count from 1 to --shards {self.shards}")
        try:
            self.slurm.check()  # a bad --slurm-time is refused before submitting
        except EngineError as exc:
            raise ExtractError(str(exc)) from None
        if self.executor == "local":
            self.wait = True  # local tasks are children of this process: it stays to see them through

    @property
    def indices(self) -> list[int]:
        return sorted(set(self.only)) if self.only else list(range(1, self.shards + 1))


def check_before_submitting(opts: ExtractOptions) -> None:
    """What can be checked on the submitting host: corpus root, and every stream's extractor as the tasks
    will build it (model configs, layers, window modes, languages...; no weights loaded)."""
    from sercache.extract.manifests import CORPORA
    from sercache.extract.runner import build_extractors

    if opts.shard is not None:
        raise ExtractError("--shard and --shards/--devices exclude each other: --shards N submits every i/N itself")
    if opts.corpus not in CORPORA:
        raise ExtractError(f"--corpus {opts.corpus!r}: use one of {', '.join(CORPORA)}")
    if not Path(opts.root).is_dir():
        raise ExtractError(f"{opts.root}: the corpus root is not a directory")
    # the tasks' devices are not known here; precision only has to be a valid name for this check
    build_extractors(opts, "cpu", "fp32" if opts.precision == "auto" else opts.precision)


def submit_extract(opts: ExtractOptions, cluster: ClusterOptions) -> Submission:
    """Submit one task per shard index; returns at once (see :func:`wait_for` to follow them, and to run
    the waiting local tasks as device slots free up)."""
    check_before_submitting(opts)
    sub_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    folder = Path(opts.out).resolve() / JOBS_DIR / sub_id
    folder.mkdir(parents=True, exist_ok=True)
    options = options_to_json(opts)
    indices = cluster.indices
    record = {"id": sub_id, "executor": cluster.executor, "count": cluster.shards, "indices": indices,
              "command": opts.command, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "cluster": asdict(cluster), "options": options}
    pool, jobs = None, []
    if cluster.executor == "local":
        pool = LocalPool(folder, indices, cluster.devices)
        record |= {"job_ids": {str(i): str(i) for i in indices}, "logs": {str(i): v for i, v in pool.logs().items()}}
    else:
        jobs = _submit_slurm(folder, cluster, options)
        record |= {"job_ids": {str(i): j.job_id for i, j in zip(indices, jobs)},
                   "logs": {str(i): {"stdout": str(j.paths.stdout), "stderr": str(j.paths.stderr)}
                            for i, j in zip(indices, jobs)}}
    write_text_atomic(folder / SUBMISSION, json.dumps(record, indent=1))
    if pool is not None:
        pool.start_ready()  # after the record: local tasks read their request from it
    sub = Submission(
        id=sub_id, folder=folder, executor=cluster.executor, count=cluster.shards, indices=indices,
        job_ids={i: record["job_ids"][str(i)] for i in indices}, logs={i: record["logs"][str(i)] for i in indices},
        command=opts.command, created=record["created"])
    sub.jobs, sub.pool = list(jobs), pool
    return sub


def _submit_slurm(folder: Path, cluster: ClusterOptions, options: dict[str, Any]) -> list[Any]:
    indices = cluster.indices
    executor = make_executor(folder, cluster.executor, "sercache-extract", cluster.slurm)
    try:
        return executor.map_array(run_shard_task, [options] * len(indices), indices,
                                  [cluster.shards] * len(indices), [str(folder)] * len(indices))
    except Exception as exc:  # sbatch refused (partition, time, gres...): say it in sercache's words
        raise ExtractError(f"submitting {len(indices)} task(s) to {cluster.executor} failed: "
                           f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}. "
                           f"Submission files are in {folder}.") from exc


def wait_for(sub: Submission, progress: bool = True, poll: float = 0.5,
             on_change: Callable[[int, str], None] | None = None,
             say: Callable[[str], None] | None = None) -> dict[int, str]:
    """Follow a submission until every task has ended; returns {index: "done" | "failed"}.

    A task has ended when its marker is written, or (killed, timed out, cancelled) when the engine no
    longer lists it. Local tasks start here as device slots free up, and are stopped (never left
    running) if this is interrupted: Ctrl-C or SIGTERM; ``say`` tells the user. One bar shows the
    utterances of every task. Nothing here unpickles submitit's results.
    """
    from sercache.extract.local_tasks import sigterm_as_interrupt
    from sercache.extract.shard_status import task_states
    from sercache.extract.task_progress import TaskBar

    ended: dict[int, str] = {}
    bar = TaskBar(sub.folder, sub.indices, enabled=progress)
    try:
        with sigterm_as_interrupt():
            while len(ended) < len(sub.indices):
                states = task_states(sub)
                for i, state in states.items():
                    if i not in ended and state in ("done", "failed"):
                        ended[i] = state
                        if on_change:
                            on_change(i, state)
                if sub.pool is not None:
                    sub.pool.start_ready()  # a free device takes the next task
                bar.update(len(ended))
                if len(ended) < len(sub.indices):
                    time.sleep(poll)
    except BaseException:
        if sub.pool is not None:  # local tasks are this process's children: they stop with it
            sub.pool.stop(**({"say": say} if say else {}))
        raise
    finally:
        bar.close(len(ended))
    drop_pickles(sub, ended)
    return ended
