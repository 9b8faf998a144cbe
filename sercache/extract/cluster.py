"""Extraction as shard tasks on a cluster engine: a SLURM job array or local processes, via submitit.

Task ``i`` of ``N`` runs exactly ``sercache extract ... --shard i/N`` (same code, same resume), so a
task that dies is simply submitted again. Everything about a submission lives in
``CACHE/.jobs/<id>/``: ``submission.json`` (the request as plain JSON), one ``shard-<i>.json``
marker per finished task, and submitit's scripts and logs. submitit hands each task its arguments
as a pickle in that folder; sercache itself never unpickles anything there, and removes those
pickles once their task has ended (see :func:`drop_pickles`).
"""
from __future__ import annotations

import json
import secrets
import shlex
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sercache.engines import EngineError, SlurmSettings, make_executor
from sercache.engines import drop_pickles as drop_engine_pickles
from sercache.extract.options import ExtractError, ExtractOptions
from sercache.features.streams import all_options
from sercache.store.atomic import write_text_atomic

JOBS_DIR = ".jobs"
SUBMISSION = "submission.json"
EXECUTORS = ("slurm", "local")


@dataclass
class ClusterOptions:
    """How to spread one extraction over tasks (``--executor``, ``--shards``, ``--slurm-*``, ``--devices``)."""

    executor: str = "slurm"
    shards: int = 1
    only: list[int] | None = None          # resubmit just these task indices (1-based)
    devices: list[str] | None = None       # one local task per device (``--devices cuda:0,cuda:1``)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    wait: bool = False

    def __post_init__(self) -> None:
        if self.devices:
            self.executor, self.shards, self.wait = "local", len(self.devices), True
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

    opts = options_from_json({**options, "shard": [index, count], "progress": False,
                              **({"device": device} if device else {})})
    start = time.time()
    try:
        report = run_extract(opts)
    except BaseException as exc:
        tail = "".join(traceback.format_exception(exc)).strip().splitlines()[-12:]
        write_text_atomic(shard_marker(Path(folder), index), json.dumps(
            {"state": "failed", "index": index, "count": count, "error": f"{type(exc).__name__}: {exc}",
             "traceback": tail, "seconds": time.time() - start}, indent=1))
        raise
    summary = {"state": "done", "index": index, "count": count, "stored": report.stored, "failed": report.failed,
               "seconds": time.time() - start, "device": opts.device}
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


def check_before_submitting(opts: ExtractOptions) -> None:
    """What can be checked on the submitting host: corpus root, models and layers (no weights loaded)."""
    from sercache.extract.corpora import CORPORA
    from sercache.features.models import check_asr_model, check_audio_encoder, check_text_encoder, resolve_layers

    if opts.shard is not None:
        raise ExtractError("--shard and --shards/--devices exclude each other: --shards N submits every i/N itself")
    if opts.corpus not in CORPORA:
        raise ExtractError(f"--corpus {opts.corpus!r}: use one of {', '.join(CORPORA)}")
    if not Path(opts.root).is_dir():
        raise ExtractError(f"{opts.root}: the corpus root is not a directory")
    if "ssl" in opts.streams:
        config = check_audio_encoder(opts.ssl_model)
        resolve_layers(opts.layers, config.num_hidden_layers, opts.ssl_model)
    if "asr" in opts.streams or "text_asr" in opts.streams:
        check_asr_model(opts.asr_model, opts.asr_language)  # CTC or Whisper, and Whisper's language
    if any(k.startswith("text_") for k in opts.streams):
        config = check_text_encoder(opts.text_model)
        resolve_layers(opts.text_layers, config.num_hidden_layers, opts.text_model, "--text-layers")


def _executor(folder: Path, cluster: ClusterOptions) -> Any:
    return make_executor(folder, cluster.executor, "sercache-extract", cluster.slurm)


def submit_extract(opts: ExtractOptions, cluster: ClusterOptions) -> Submission:
    """Submit one task per shard index; returns at once (see :func:`wait_for` to follow them)."""
    check_before_submitting(opts)
    sub_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    folder = Path(opts.out).resolve() / JOBS_DIR / sub_id
    folder.mkdir(parents=True, exist_ok=True)
    options = options_to_json(opts)
    indices = cluster.indices
    devices = [cluster.devices[i - 1] if cluster.devices else None for i in indices]
    executor = _executor(folder, cluster)
    try:
        jobs = executor.map_array(run_shard_task, [options] * len(indices), indices,
                                  [cluster.shards] * len(indices), [str(folder)] * len(indices), devices)
    except Exception as exc:  # sbatch refused (partition, time, gres...): say it in sercache's words
        raise ExtractError(f"submitting {len(indices)} task(s) to {cluster.executor} failed: "
                           f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__}. "
                           f"Submission files are in {folder}.") from exc
    record = {"id": sub_id, "executor": cluster.executor, "count": cluster.shards, "indices": indices,
              "job_ids": {str(i): j.job_id for i, j in zip(indices, jobs)},
              "logs": {str(i): {"stdout": str(j.paths.stdout), "stderr": str(j.paths.stderr)}
                       for i, j in zip(indices, jobs)},
              "command": opts.command, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "cluster": asdict(cluster), "options": options}
    write_text_atomic(folder / SUBMISSION, json.dumps(record, indent=1))
    sub = Submission(
        id=sub_id, folder=folder, executor=cluster.executor, count=cluster.shards, indices=indices,
        job_ids={i: j.job_id for i, j in zip(indices, jobs)}, logs={i: record["logs"][str(i)] for i in indices},
        command=opts.command, created=record["created"])
    sub.jobs = list(jobs)
    return sub


def wait_for(sub: Submission, progress: bool = True, poll: float = 1.0,
             on_change: Callable[[int, str], None] | None = None) -> dict[int, str]:
    """Follow a submission until every task has ended; returns {index: "done" | "failed"}.

    A task has ended when its marker is written, or (killed, timed out, cancelled) when the engine no
    longer lists it. Nothing here unpickles submitit's results.
    """
    from tqdm.auto import tqdm

    from sercache.extract.shard_status import task_states

    ended: dict[int, str] = {}
    bar = tqdm(total=len(sub.indices), desc=f"shards ({sub.executor} {sub.array_id})", unit="shard",
               disable=not progress)
    while len(ended) < len(sub.indices):
        states = task_states(sub)
        for i, state in states.items():
            if i not in ended and state in ("done", "failed"):
                ended[i] = state
                bar.update(1)
                if on_change:
                    on_change(i, state)
        if len(ended) < len(sub.indices):
            time.sleep(poll)
    bar.close()
    drop_pickles(sub, ended)
    return ended


def drop_pickles(sub: Submission, ended: dict[int, str]) -> None:
    """Remove submitit's pickles of tasks that have ended: a cache should hold no pickle once work is over."""
    drop_engine_pickles(sub.folder, [sub.job_ids[i] for i in ended])  # a task's own pickles: <job id>_*.pkl


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
