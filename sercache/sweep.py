"""``sercache sweep``: heads x layers, each a normal run directory, all folds x seeds in one pool.

``OUT/<head>-layer<L>/`` (``-all-layers`` for ``--layer all``, ``-layer-select`` for ``--layer select``) is
exactly what ``sercache train --head H --layer L --out ...`` makes (so
``report``, ``eval`` and a resumed ``train`` work on it); ``OUT/sweep.json`` records the grid and
``OUT/report.md``/``report.csv`` compare every configuration, with paired tests on identical folds.
The fold x seed tasks of all configurations go through one engine: joblib's loky processes, a
``dask.distributed`` scheduler, or a SLURM job array (submitit). Finished tasks are never redone,
so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sercache.cluster_engines import SlurmSettings, drop_pickles_once_gone, local_pool, make_executor, squeue_states
from sercache.heads import get_head
from sercache.store.atomic import write_text_atomic
from sercache.store.lock import ExclusiveLock
from sercache.training import run_layout
from sercache.training.roles import check_roles_named, named_role_options
from sercache.training.run import (
    OPTIMISER_SETTINGS,
    RunError,
    TrainRequest,
    head_roles,
    plan_run,
    prepare_run_dir,
    refuse_optimiser_settings,
    resolve_device,
)
from sercache.training.run_config import RunConfig
from sercache.training.run_layout import FAILED, METRICS, is_done, task_dir
from sercache.training.task import describe_result, result_warnings, train_task

BACKENDS = ("loky", "dask", "slurm")


@dataclass
class SweepRequest:
    """What ``sercache sweep`` takes; ``base`` holds every other ``train`` setting, shared by all configurations."""

    cache: Path
    heads: list[str]
    out: Path
    layers: list[int | str | None] = field(default_factory=lambda: [None])  # str: "all" or "select"
    seeds: int | None = None         # None: each head's default (3, or 1 for svm and logreg)
    backend: str = "loky"
    scheduler: str | None = None     # dask: a scheduler address; None starts nothing and is refused
    jobs: int = 1                    # loky: tasks at once
    base: TrainRequest | None = None
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    command: str = ""


#: --layers words besides layer numbers: every stored layer in one configuration, or a layer chosen per fold
WHOLE_STREAM = ("all", "select")


def sweep_layers(text: str) -> list[int | str]:
    """``--layers 6,12,all`` -> [6, 12, "all"]: one configuration each."""
    layers: list[int | str] = []
    for word in (w.strip() for w in text.split(",")):
        if word in WHOLE_STREAM:
            layers.append(word)
        elif word.isdigit():
            layers.append(int(word))
        else:
            raise RunError(f"--layers {text!r}: {word!r} is not a layer number, 'all' or 'select'; e.g. 12,18,24,all")
        if layers.count(layers[-1]) > 1:
            raise RunError(f"--layers {text!r}: {word!r} is given twice")
    return layers


def configuration_name(head: str, layer: int | str | None) -> str:
    """The run folder of one configuration: ``gate``, ``gate-layer12``, ``gate-all-layers``, ``logreg-layer-select``."""
    if layer is None:
        return head
    return {"all": f"{head}-all-layers", "select": f"{head}-layer-select"}.get(str(layer), f"{head}-layer{layer}")


def expand(req: SweepRequest) -> list[TrainRequest]:
    """One TrainRequest per head x layer (a head that reads every stored layer, wsum, or no audio gets one), each
    with the stream options of the roles it reads."""
    if req.backend not in BACKENDS:
        raise RunError(f"--backend {req.backend!r}: use one of {', '.join(BACKENDS)}")
    if req.backend == "dask" and not req.scheduler:
        raise RunError("--backend dask needs --scheduler ADDRESS (e.g. tcp://10.0.0.5:8786) of a running "
                       "dask.distributed scheduler")
    if not req.heads:
        raise RunError("--heads: give at least one head, e.g. gate,cmgi")
    base = req.base or TrainRequest(cache=req.cache, head=req.heads[0])
    reads = {head: head_roles(head, base.hyperparameters) for head in req.heads}
    # a stream option applies to the heads that read its role; one that no head reads would change nothing
    check_roles_named(" or ".join(req.heads), sorted({r for roles in reads.values() for r in roles}),
                      named_role_options(base.streams, base.layers, base.text))
    if all(get_head(head).closed_form for head in req.heads):
        refuse_optimiser_settings(" and ".join(req.heads), get_head(req.heads[0]), base.train)
    out = []
    for head in req.heads:
        # one configuration for a head that weights every layer itself (wsum) or reads no audio role (apcnn)
        one = "audio" in get_head(head).multi_layer_roles or "audio" not in reads[head]
        streams = {r: s for r, s in base.streams.items() if r in reads[head]}
        layers = {r: v for r, v in base.layers.items() if r in reads[head]}
        text = base.text if "text" in reads[head] else None
        train = ({k: v for k, v in base.train.items() if k not in OPTIMISER_SETTINGS} if get_head(head).closed_form
                 else base.train)  # svm and logreg have no optimiser: --epochs, --lr... are for the other heads
        for layer in ([None] if one else req.layers):
            name = configuration_name(head, layer)
            out.append(replace(base, cache=req.cache, head=head, out=Path(req.out) / name, seeds=req.seeds,
                               streams=streams, layers={**layers, "audio": layer}, text=text, train=train, jobs=req.jobs,
                               command=req.command))
    return out


@dataclass
class Task:
    run: Path
    fold: dict[str, Any]
    seed: int
    config: RunConfig


def run_sweep(req: SweepRequest, progress: Callable[[str], None] = print) -> tuple[list[Path], list[dict[str, Any]]]:
    """Plan every configuration (all checked before any training), train what is not done, report."""
    from sercache.features.streams import stream_checks
    from sercache.runs.report import make_report
    from sercache.store.verify import verify_cache

    requests = expand(req)
    plans = [plan_run(r) for r in requests]  # every configuration is checked before anything trains
    for _, _, cache in plans:
        cache.close()
    streams = sorted({n for config, _, _ in plans for n in config.streams})
    problems = verify_cache(req.cache, streams, checksums=True, values=True, checks=stream_checks())
    if problems:
        raise RunError(f"{req.cache} fails verification: {problems[0]} (and {len(problems) - 1} more); "
                       "run `sercache cache verify` and repair it first")
    device = resolve_device(requests[0].device)  # refused before the sweep writes anything
    out = Path(req.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / run_layout.SWEEP_FILE, json.dumps(
        {"cache": str(Path(req.cache).resolve()), "heads": req.heads, "layers": req.layers,
         "seeds": {r.out.name: len(c.seeds) for r, (c, _, _) in zip(requests, plans)},
         "backend": req.backend, "runs": [r.out.name for r in requests], "command": req.command}, indent=1))
    with contextlib.ExitStack() as locks:
        tasks = []
        for r, (config, folds, _) in zip(requests, plans):
            locks.enter_context(ExclusiveLock(run_layout.lock_path(r.out), f"{r.out} is being trained into by another "
                                              "`sercache train` or `sweep` ({holder}); wait for it to finish."))
            config = prepare_run_dir(r.out, config, folds)
            tasks += [Task(r.out, asdict(f), s, config) for f in folds for s in config.seeds
                      if not is_done(task_dir(r.out, f.name, s))]
        total = sum(len(f) * len(c.seeds) for c, f, _ in plans)
        progress(f"{out}: {len(requests)} configuration(s), {total} fold/seed task(s), {total - len(tasks)} already "
                 f"done, {len(tasks)} to train on {req.backend}")
        finished = []
        for task, res in _execute(tasks, req, device, out):
            finished.append((task, res))
            progress(f"{task.run.name}: {describe_result(task.config, res)}")
    for r, (config, _, _) in zip(requests, plans):
        for warning in result_warnings([res for t, res in finished if t.run == r.out], len(config.labels.classes)):
            progress(f"{r.out.name}: {warning}")
    runs = [r.out for r in requests]
    done = [r for r in runs if run_layout.has_finished_task(r)]
    if done:
        text = make_report(done)
        write_text_atomic(out / run_layout.REPORT_MD, text)
        write_text_atomic(out / run_layout.REPORT_CSV, make_report(done, "csv"))
    return runs, [res for _, res in finished]


def _execute(tasks: list[Task], req: SweepRequest, device: str, out: Path) -> Iterator[tuple[Task, dict[str, Any]]]:
    if not tasks:
        return
    if req.backend == "slurm":
        yield from _on_slurm(tasks, req, device, out)
        return
    from joblib import Parallel, delayed, parallel_config

    threads = max(1, (os.cpu_count() or 1) // max(1, req.jobs))
    parent = os.getpid() if req.backend == "loky" else 0  # dask workers are not our children
    calls = [delayed(train_task)(str(t.run), t.fold, t.seed, t.config, device,
                                 int(t.config.threads_per_task or threads), None, parent) for t in tasks]
    if req.backend == "loky":
        results = local_pool(max(1, min(req.jobs, len(tasks))), return_as="generator")(calls)
        yield from zip(tasks, results)
        return
    from dask.distributed import Client  # noqa: F401 - the dask backend needs a client in this context

    with Client(req.scheduler) as client, parallel_config(backend="dask"):
        n = max(1, sum(client.nthreads().values()))
        yield from zip(tasks, Parallel(n_jobs=n, return_as="generator")(calls))


def _on_slurm(tasks: list[Task], req: SweepRequest, device: str, out: Path) -> Iterator[tuple[Task, dict[str, Any]]]:
    """One array task per fold x seed; results are read from the run directories, never from pickles."""
    folder = out / run_layout.JOBS_DIR / time.strftime("%Y%m%d-%H%M%S")
    executor = make_executor(folder, "slurm", "sercache-sweep", req.slurm)
    threads = req.slurm.cpus_per_task or 1
    jobs = executor.map_array(train_task, [str(t.run) for t in tasks], [t.fold for t in tasks],
                              [t.seed for t in tasks], [t.config for t in tasks], [device] * len(tasks),
                              [threads] * len(tasks), [None] * len(tasks), [0] * len(tasks))
    pending = dict(zip([j.job_id for j in jobs], tasks))
    array_id = jobs[0].job_id.split("_")[0]
    while pending:
        listed = squeue_states(array_id)
        for job_id, t in list(pending.items()):
            d = task_dir(t.run, t.fold["name"], t.seed)
            where = {"fold": t.fold["name"], "seed": t.seed}
            if is_done(d):
                metrics = json.loads((d / METRICS).read_text())
                res = {**where, "ok": True, "seconds": metrics.get("train_seconds", 0.0), **metrics}
            elif (d / FAILED).exists() or job_id not in listed:
                error = (d / FAILED).read_text() if (d / FAILED).exists() else \
                    f"SLURM task {job_id} ended without a result (cancelled, killed, or out of time/memory)"
                res = {**where, "ok": False, "error": error}
            else:
                continue
            del pending[job_id]
            yield t, res
        if pending:
            time.sleep(1.0)
    drop_pickles_once_gone(folder, [j.job_id for j in jobs], array_id)  # a run holds no pickle once work is over
