"""A submission's record in ``CACHE/.jobs/<id>/`` and one shard task's run on its node.

Below :mod:`cluster` (which submits and follows tasks), :mod:`shard_status` (which reads their state)
and :mod:`local_tasks` (which runs one as a child process): all three read this, none of them is read here.
"""
from __future__ import annotations

import json
import shlex
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sercache.cluster_engines import drop_pickles as drop_engine_pickles
from sercache.cluster_engines import drop_pickles_once_gone, squeue_states
from sercache.extract.options import ExtractOptions
from sercache.features.streams import all_options
from sercache.store.atomic import write_text_atomic

JOBS_DIR = ".jobs"
SUBMISSION = "submission.json"


def options_to_json(opts: ExtractOptions) -> dict[str, Any]:
    out = asdict(opts)
    out["root"], out["out"] = str(Path(opts.root).resolve()), str(Path(opts.out).resolve())
    out["streams"] = list(opts.streams)
    return out


def options_from_json(data: dict[str, Any]) -> ExtractOptions:
    known = {f.name for f in fields(ExtractOptions)} | set(all_options())  # stream options, flat or in "options"
    values = {k: v for k, v in data.items() if k in known}
    values["streams"] = tuple(values.get("streams", ()))
    if values.get("shard") is not None:
        values["shard"] = tuple(values["shard"])
    return ExtractOptions(**values)


def shard_marker(folder: Path, index: int) -> Path:
    return Path(folder) / f"shard-{index}.json"


def run_shard_task(options: dict[str, Any], index: int, count: int, folder: str,
                   device: str | None = None) -> dict[str, Any]:
    """One task, on the node: ``sercache extract ... --shard index/count``; leaves a JSON marker either way."""
    from sercache.extract.runner import run_extract
    from sercache.extract.task_progress import ProgressFile

    opts = options_from_json({**options, "shard": [index, count], "progress": False,
                              **({"device": device} if device else {})})
    start = time.time()
    progress = ProgressFile(Path(folder), index)
    try:
        report = run_extract(opts, on_progress=progress)
    except BaseException as exc:
        tail = "".join(traceback.format_exception(exc)).strip().splitlines()[-12:]
        error = ("interrupted (SIGINT/SIGTERM); its finished batches are kept" if isinstance(exc, KeyboardInterrupt)
                 else f"{type(exc).__name__}: {exc}")
        write_text_atomic(shard_marker(Path(folder), index), json.dumps(
            {"state": "failed", "index": index, "count": count, "error": error, "traceback": tail,
             "started": start, "ended": time.time(), "seconds": time.time() - start}, indent=1))
        raise
    finally:
        progress.write()
    summary = {"state": "done", "index": index, "count": count, "stored": report.stored, "failed": report.failed,
               "started": start, "ended": time.time(), "seconds": time.time() - start, "device": opts.device}
    write_text_atomic(shard_marker(Path(folder), index), json.dumps(summary, indent=1))
    return summary


@dataclass
class Submission:
    """What was submitted: read back from ``CACHE/.jobs/<id>/submission.json``."""

    id: str
    folder: Path
    executor: str
    count: int
    indices: list[int]
    job_ids: dict[int, str]
    logs: dict[int, dict[str, str]]
    command: str
    created: str
    jobs: list[Any] = field(default_factory=list, repr=False)  # live submitit jobs (this process only)
    pool: Any = field(default=None, repr=False)  # the LocalPool of local tasks (this process only)

    @property
    def array_id(self) -> str:
        first = next(iter(self.job_ids.values()), "")
        return first.split("_")[0]


def read_submissions(cache: Path) -> list[Submission]:
    """Every submission recorded in the cache, oldest first."""
    out = []
    for path in sorted((Path(cache) / JOBS_DIR).glob(f"*/{SUBMISSION}")):
        d = json.loads(path.read_text())
        out.append(Submission(id=d["id"], folder=path.parent, executor=d["executor"], count=d["count"],
                              indices=d["indices"], job_ids={int(k): v for k, v in d["job_ids"].items()},
                              logs={int(k): v for k, v in d["logs"].items()}, command=d["command"],
                              created=d["created"]))
    return sorted(out, key=lambda s: (s.created, s.id))


def drop_pickles(sub: Submission, ended: dict[int, str], wait: bool = True) -> None:
    """Remove submitit's pickles of tasks that have ended: a cache should hold no pickle once work is over.

    A SLURM task's result pickle comes after its marker, as its process exits: with ``wait`` this waits until
    SLURM no longer lists the tasks; without, it leaves the pickles of tasks still listed for a later call.
    """
    ids = [sub.job_ids[i] for i in ended]  # a task's own pickles: <job id>_*.pkl
    if sub.executor != "slurm":
        drop_engine_pickles(sub.folder, ids)
    elif wait:
        drop_pickles_once_gone(sub.folder, ids, sub.array_id)
    else:
        listed = squeue_states(sub.array_id)
        drop_engine_pickles(sub.folder, [j for j in ids if j not in listed])


def resubmit_command(command: str, indices: list[int]) -> str:
    """The recorded ``sercache extract ... --shards N`` with ``--only-shards`` set to ``indices``."""
    words = shlex.split(command)
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w == "--only-shards":
            skip = True
            continue
        if w.startswith("--only-shards="):
            continue
        out.append(w)
    return shlex.join(out + ["--only-shards", ",".join(map(str, indices))])
