"""The CLI side of scale-out: ``extract --executor/--shards/--devices/--slurm-*`` and ``cache status``.

Kept out of cli.py so that the extract command's own body stays about extraction.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sercache.cli.common import FiniteFloat
from sercache.cli.folds import protocol_choice_options, protocol_setting_options
from sercache.cli.help import examples
from sercache.training.precision import PRECISIONS

CLUSTER_OPTION_NAMES = ["executor", "shards", "only_shards", "devices", "wait", "slurm_partition",
                        "slurm_gpus_per_task", "slurm_cpus_per_task", "slurm_mem_gb", "slurm_time",
                        "slurm_array_parallelism", "slurm_setup"]

_OPTIONS = [
    click.option("--executor", type=click.Choice(["slurm", "local"]), default=None,
                 help="Run --shards tasks as a SLURM job array (needs pip install 'sercache[cluster]'), or as local "
                      "processes that this command follows to the end (Ctrl-C stops them, keeping finished batches)."),
    click.option("--shards", type=int, default=None,
                 help="How many tasks to split the corpus into (task i runs --shard i/N). Needs --executor or "
                      "--devices."),
    click.option("--only-shards", default=None,
                 help="Submit only these tasks, e.g. 2,5 (what `sercache cache status` prints for a resubmission)."),
    click.option("--devices", default=None,
                 help="Run the tasks as local processes, one at a time per device, e.g. cuda:0,cuda:1 (or cpu,cpu); "
                      "without --shards, one task per device. Implies --executor local."),
    click.option("--wait", is_flag=True, help="Stay until every task has ended, with a progress bar (local: always)."),
    click.option("--slurm-partition", default=None, help="SLURM partition (default: the cluster's default)."),
    click.option("--slurm-gpus-per-task", type=int, default=0, help="GPUs per task (0: none requested)."),
    click.option("--slurm-cpus-per-task", type=int, default=None, help="CPUs per task (default: the cluster's)."),
    click.option("--slurm-mem-gb", type=float, default=None, help="Memory per task in GB (default: the cluster's)."),
    click.option("--slurm-time", default="4:00:00", help="Time limit per task, HH:MM:SS or D-HH:MM:SS."),
    click.option("--slurm-array-parallelism", type=int, default=16, help="At most this many tasks run at once."),
    click.option("--slurm-setup", multiple=True,
                 help="A shell line run before each task, e.g. \"module load cuda\" (repeatable)."),
]


def cluster_options(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


def cluster_request(values: dict[str, Any]) -> Any:
    """The ClusterOptions the user asked for, or None for a plain in-process extraction."""
    from sercache.extract.cluster import ClusterOptions
    from sercache.extract.options import ExtractError

    devices = [d.strip() for d in (values["devices"] or "").split(",") if d.strip()] or None
    if values["devices"] is not None and not devices:
        raise ExtractError(f"--devices {values['devices']!r}: give devices, e.g. cuda:0,cuda:1 or cpu,cpu")
    if not devices and values["executor"] is None:  # (devices: local tasks; ClusterOptions refuses slurm)
        used = [k for k in ("shards", "only_shards") if values[k]]
        if used:
            raise ExtractError(f"--{used[0].replace('_', '-')} needs --executor slurm, --executor local or --devices")
        return None
    if not devices and not values["shards"]:
        raise ExtractError("--executor needs --shards N: how many tasks to split the corpus into")
    try:
        only = [int(x) for x in values["only_shards"].split(",")] if values["only_shards"] else None
    except ValueError:
        raise ExtractError(f"--only-shards {values['only_shards']!r}: give task numbers, e.g. 2,5") from None
    return ClusterOptions(executor=values["executor"], shards=values["shards"], only=only, devices=devices,
                          wait=values["wait"], slurm=slurm_settings(values))


def slurm_settings(values: dict[str, Any]) -> Any:
    from sercache.cluster_engines import SlurmSettings

    return SlurmSettings(partition=values["slurm_partition"], gpus_per_task=values["slurm_gpus_per_task"],
                         cpus_per_task=values["slurm_cpus_per_task"], mem_gb=values["slurm_mem_gb"],
                         time=values["slurm_time"], array_parallelism=values["slurm_array_parallelism"],
                         setup=list(values["slurm_setup"]))


def run_on_cluster(opts: Any, cluster: Any, progress: bool) -> None:
    """Submit, say where it went, and (``--wait``) follow it to the end; exit 1 if any task failed.

    Ctrl-C (or SIGTERM) while following: local tasks are stopped, SLURM ones keep running; either
    way it says what the cache holds and how to go on, and exits 130.
    """
    from sercache.extract.cluster import submit_extract, wait_for
    from sercache.extract.shard_status import cache_status, format_status

    say_resuming(opts)
    sub = None
    try:
        sub = submit_extract(opts, cluster)
        what = f"SLURM job array {sub.array_id}" if sub.executor == "slurm" else "local processes"
        where = f" on {','.join(cluster.devices)}" if cluster.devices else ""
        click.echo(f"submitted {len(sub.indices)} shard task(s) of {sub.count} as {what}{where}; logs in {sub.folder}")
        if not cluster.wait:
            click.echo(f"follow them with `sercache cache status {opts.out}` (or rerun with --wait)")
            return
        ended = wait_for(sub, progress=progress, say=lambda m: click.echo(m, err=True),
                         on_change=lambda i, state: None if progress else click.echo(f"shard {i}/{sub.count}: {state}"))
    except KeyboardInterrupt:
        if sub is not None and sub.executor == "slurm":
            click.echo(f"\nstopped following; the SLURM tasks keep running: `sercache cache status {opts.out}` "
                       f"follows them, `scancel {sub.array_id}` cancels them", err=True)
            sys.exit(130)
        interrupted(opts)
    click.echo(format_status(cache_status(opts.out)))
    if any(state != "done" for state in ended.values()):
        sys.exit(1)


def _kept(opts: Any) -> list[Any]:
    """What the cache holds of the requested streams (finished and staged), those it holds any of."""
    from sercache.store.staging import stream_progress

    kept = stream_progress(opts.out, [opts.name_of(k) for k in opts.streams])
    return [p for p in kept.values() if p.kept]


def _describe(p: Any) -> str:
    parts = [f"{p.stored} in {len(p.finished_shards)} finished shard(s)"] if p.finished_shards else []
    parts += [f"{p.staged} staged in {len(p.staged_shards)} unfinished shard(s)"] if p.staged else []
    return f"{p.kept} utterances of stream {p.stream} ({', '.join(parts)})"


def say_resuming(opts: Any) -> None:
    """Before any work: what an earlier run left in the cache, which is not extracted again."""
    kept = _kept(opts)
    if kept:
        click.echo("resuming: the cache already holds " + "; ".join(_describe(p) for p in kept), err=True)


def interrupted(opts: Any) -> None:
    """After Ctrl-C: what the cache holds now, and the command that resumes; exit 130."""
    kept = _kept(opts)
    lines = ["", "interrupted."]
    lines += [f"kept {_describe(p)}" for p in kept] or ["nothing was stored yet."]
    lines += ["rerun the same command to resume (what is kept is not extracted again):", f"  {opts.command}"]
    click.echo("\n".join(lines), err=True)
    sys.exit(130)


@click.command("status", epilog=examples("sercache cache status cache/msp-podcast"))
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def cache_status_command(path: Path) -> None:
    """Every submitted shard task: done, running (lock holder), failed (last log lines) or not started.

    Prints the one command that resubmits exactly the failed and missing shards; they resume from
    what they had stored. Exit status 1 while any shard is failed or not started.
    """
    from sercache.extract.shard_status import cache_status, format_status

    status = cache_status(path)
    click.echo(format_status(status))
    if status.unfinished:
        sys.exit(1)


@click.command("sweep", epilog=examples(
    "sercache sweep cache/iemocap --heads gate,cmgi,wsum --layers 12,18,24 --seeds 3 --out sweeps/layers",
    "sercache sweep cache/iemocap --heads gate,cmgi --out sweeps/S --backend dask --scheduler tcp://10.0.0.5:8786",
    "sercache sweep cache/iemocap --heads gate --layers 6,12,18,24 --out sweeps/S --backend slurm --slurm-gpus-per-task 1",
    "sercache sweep cache/ravdess --heads logreg,svm --folds EmoBox/data/ravdess --out sweeps/ravdess"))
@click.argument("cache_dir", metavar="CACHE", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--heads", required=True, help="Comma-separated heads, e.g. gate,cmgi,wsum (see `sercache heads`).")
@click.option("--layers", default=None,
              help="Comma-separated audio layers, one configuration each, e.g. 12,18,24 (default: the stream's "
                   "last); 'all' is one more reading every stored layer (a learned mix, or pooled statistics of "
                   "each), 'select' one choosing a layer per fold on validation (pooled heads). Heads that weigh "
                   "every stored layer themselves (wsum) get one configuration.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Sweep directory: one run per configuration.")
@click.option("--seeds", type=click.IntRange(min=1), default=None,
              help="Seeds per fold (0..N-1). Default: 3, or 1 for deterministic heads (svm, logreg).")
@click.option("--backend", type=click.Choice(["loky", "dask", "slurm"]), default="loky",
              help="Where the fold x seed tasks run: local processes, a dask.distributed scheduler, or a SLURM array.")
@click.option("--scheduler", default=None, help="dask scheduler address for --backend dask, e.g. tcp://host:8786.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, help="Tasks at once for --backend loky.")
@click.option("--fold", default="all", help="Folds: all, 1-based numbers (1,2) or names.")
@protocol_choice_options()
@protocol_setting_options()
@click.option("--split-seed", type=click.IntRange(0, 2**32 - 1), default=0,
              help="Seed of the fold protocol (random splits, fractions).")
@click.option("--labels", "label_preset", default=None, help="Label preset (default per corpus).")
@click.option("--audio-stream", default=None, help="Stream for the audio role (default ssl).")
@click.option("--text", type=click.Choice(["asr", "gold"]), default=None,
              help="Transcripts for the heads that read text (default: what the cache has, asr first).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Maximum epochs (default: each head's).")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=None, help="Learning rate (default: each head's).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Batch size (default: each head's).")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Epochs without a better validation UA before stopping (default: each head's).")
@click.option("--precision", default=None, type=click.Choice(PRECISIONS),
              help="Autocast precision of every task's forward passes (as train's).  [default: fp32]")
@click.option("--device", default="auto", help="cpu, cuda or auto (for every task).")
@click.option("--slurm-partition", default=None, help="SLURM partition for --backend slurm.")
@click.option("--slurm-gpus-per-task", type=int, default=0, help="GPUs per task for --backend slurm.")
@click.option("--slurm-cpus-per-task", type=int, default=None, help="CPUs per task for --backend slurm.")
@click.option("--slurm-mem-gb", type=float, default=None, help="Memory per task in GB for --backend slurm.")
@click.option("--slurm-time", default="4:00:00", help="Time limit per task for --backend slurm.")
@click.option("--slurm-array-parallelism", type=int, default=16, help="At most this many SLURM tasks at once.")
@click.option("--slurm-setup", multiple=True, help="A shell line run before each SLURM task (repeatable).")
def sweep_command(cache_dir: Path, heads: str, layers: str | None, out: Path, seeds: int | None, backend: str,
                  scheduler: str | None, jobs: int, fold: str, split_seed: int, label_preset: str | None,
                  audio_stream: str | None, text: str | None, epochs: int | None, lr: float | None, batch_size: int | None,
                  patience: int | None, precision: str | None, device: str, **more: Any) -> None:
    """Train every head x layer configuration on CACHE and write one combined report.

    Each configuration is a normal run directory under OUT; all their folds x seeds go through one
    engine. The folds are chosen as `sercache train` chooses them (--protocol, --folds and the
    validation options are the same). Rerun the same command to resume an interrupted sweep.
    """
    from sercache.cli.common import replayable_command
    from sercache.splits.registry import refuse_unused_fraction, route
    from sercache.sweep import SweepRequest, run_sweep, sweep_layers
    from sercache.training.run import TrainRequest

    layer_list = sweep_layers(layers) if layers else [None]
    head_list = [h.strip() for h in heads.split(",") if h.strip()]
    slurm = {k: more.pop(k) for k in list(more) if k.startswith("slurm_")}
    refuse_unused_fraction(more)
    protocol, protocol_options = route(more)  # the rest: the protocol options, as train reads them
    base = TrainRequest(cache=cache_dir, head=head_list[0] if head_list else "", fold=fold, protocol=protocol,
                        protocol_options=protocol_options, folds=more["fold_file"], split_seed=split_seed,
                        labels=label_preset, streams={"audio": audio_stream} if audio_stream else {}, text=text,
                        device=device,
                        train={"epochs": epochs, "lr": lr, "batch_size": batch_size, "patience": patience,
                               "precision": precision},
                        progress_every=None)
    req = SweepRequest(cache=cache_dir, heads=head_list, out=out, layers=layer_list, seeds=seeds, backend=backend,
                       scheduler=scheduler, jobs=jobs, base=base, slurm=slurm_settings(slurm),
                       command=replayable_command(click.get_current_context()))
    req.slurm.check()
    runs, results = run_sweep(req, progress=lambda m: click.echo(m, err=True))
    failed = [r for r in results if not r["ok"]]
    click.echo(f"sweep: {out}  ({len(runs)} configuration(s); {len(results) - len(failed)} fold/seed trained, "
               f"{len(failed)} failed); combined report: {out / 'report.md'}")
    if failed:
        sys.exit(1)
