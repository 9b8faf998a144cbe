"""``sercache extract``: run frozen encoders over a corpus into a cache."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from sercache.cli.cluster import (
    CLUSTER_OPTION_NAMES,
    cluster_options,
    cluster_request,
    interrupted,
    run_on_cluster,
    say_resuming,
)
from sercache.cli.common import CONTEXT, LazyChoice, replayable_command, stopped_before_work
from sercache.cli.help import Sectioned, examples
from sercache.features.streams import all_options, default_streams, stream_kinds

#: Stream options with a flag (``--ssl-model``, ``--layers``...), declared by the stream registry.
STREAM_FLAGS = [o for o in all_options().values() if o.flag]


def stream_options(command: Any) -> Any:
    """The registry's per-stream options, as click options of ``extract``."""
    for o in reversed(STREAM_FLAGS):
        command = click.option(o.flag, o.dest, default=o.default, type=o.type, help=o.help)(command)
    return command


def streams_help() -> str:
    return ("Comma list, run in this order (each over every shard; a stream that reads another, text_asr, runs "
            "after it), from: " + "; ".join(f"{k.name} ({k.help})" for k in stream_kinds().values()) + ".")


def corpus_names() -> list[str]:
    from sercache.corpora import corpora  # the registry: one file per corpus in sercache/corpora/

    return sorted(corpora())


@click.command(context_settings=CONTEXT, cls=Sectioned, sections=[
    ("Corpus", ["corpus", "out", "sessions", "shard"]),
    ("Streams and models", ["streams", *(o.dest for o in STREAM_FLAGS), "stream_names", "dtype"]),
    ("Compute", ["device", "precision", "batch_seconds", "chunk_seconds", "chunk_overlap"]),
    ("Resuming and problems", ["overwrite", "strict", "flush_seconds", "no_progress"]),
    ("Cluster", CLUSTER_OPTION_NAMES)],
    epilog=examples(
        "sercache extract /data/IEMOCAP_full_release --corpus iemocap --out cache/iemocap --session 1",
        "sercache extract /data/emodb --corpus emodb --out cache/emodb --streams mfcc,logmel,egemaps,compare",
        "sercache extract /data/IEMOCAP_full_release --corpus iemocap --out cache/iemocap --streams ssl \\",
        "    --layers all --ssl-model /models/wavlm-large --stream-name ssl=wavlm_large",
        "sercache extract /data/MSP-PODCAST-Publish-1.12 --corpus msp-podcast --out cache/msp --executor slurm \\",
        "    --shards 64 --slurm-gpus-per-task 1 --slurm-time 4:00:00 --slurm-setup \"module load cuda\""))
@click.argument("root", type=click.Path(exists=True, path_type=Path))
@click.option("--corpus", required=True, type=LazyChoice(corpus_names),
              help="Corpus layout of ROOT (csv: ROOT is a manifest .csv).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Cache directory (created if needed).")
@click.option("--session", "sessions", multiple=True, help="Only these sessions (repeat, or 1,3). Default: all.")
@click.option("--streams", default=",".join(default_streams()), help=streams_help())
@stream_options
@click.option("--device", default="auto", help="cpu, cuda, cuda:N or auto.")
@click.option("--precision", default="auto", type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
              help="Compute precision (auto: fp16 on GPU, fp32 on CPU).")
@click.option("--dtype", default="float16", type=click.Choice(["float16", "float32"]), help="Storage dtype of model features.")
@click.option("--batch-seconds", type=float, default=None,
              help="Padded audio seconds per batch. Default per device: 0 (one utterance) on CPU, 200 on GPU.")
@click.option("--chunk-seconds", type=float, default=30.0, help="Utterances longer than this are encoded in chunks.")
@click.option("--chunk-overlap", type=float, default=5.0, help="Seconds of overlap between chunks.")
@click.option("--shard", default=None, help="i/N: extract only a deterministic 1/N slice (for job arrays).")
@click.option("--stream-name", "stream_names", multiple=True, help="KIND=NAME, e.g. ssl=wavlm_large (repeatable).")
@click.option("--overwrite", is_flag=True, help="Re-extract streams whose stored settings differ (or rebuild them).")
@click.option("--strict", is_flag=True, help="Stop at the first failing utterance, and exit non-zero on any error.")
@click.option("--flush-seconds", type=float, default=30.0,
              help="Checkpoint finished batches to disk at least this often (an interruption loses at most this).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@cluster_options
def extract(root: Path, corpus: str, out: Path, sessions: tuple[str, ...], streams: str, device: str,
            precision: str, dtype: str, batch_seconds: float | None, chunk_seconds: float, chunk_overlap: float,
            shard: str | None, stream_names: tuple[str, ...], overwrite: bool, strict: bool,
            flush_seconds: float, no_progress: bool, **more: Any) -> None:
    """Run frozen encoders over a corpus once and store their outputs in the cache OUT.

    Rerunning the same command after an interruption (Ctrl-C keeps every finished batch) resumes
    where it stopped; rerunning it after success does nothing. `sercache -v extract` logs what
    happens (models loaded, each stream's timing, skipped utterances), -vv each batch. Problems
    (unreadable audio, bad label lines...) are recorded in the cache and shown by `sercache cache
    info`. Exit status: 0 when anything was stored; 1 when nothing could be extracted, or --strict
    met a failing utterance; 2 for a bad request (unknown option value, missing model, cache
    settings that differ without --overwrite); 130 when interrupted.
    """
    # Said at once: importing torch and reading the corpus take seconds before anything else is shown.
    click.echo(f"extract: reading {root} as {corpus} (streams {streams}) into {out}", err=True)
    try:
        from sercache.extract.runner import run_extract
        from sercache.interrupts import remembered_interrupts
    except KeyboardInterrupt:
        stopped_before_work()
    from sercache.extract.options import (
        ExtractOptions,
        parse_sessions,
        parse_shard,
        parse_stream_names,
    )

    stream_values = {o.dest: more.pop(o.dest) for o in STREAM_FLAGS}
    cluster = more
    opts: ExtractOptions | None = None
    try:
        opts = ExtractOptions(
            root=root, corpus=corpus, out=out, sessions=parse_sessions(list(sessions)),
            streams=tuple(s.strip() for s in streams.split(",") if s.strip()),
            stream_names=parse_stream_names(list(stream_names)), device=device, precision=precision,
            dtype=dtype, batch_seconds=batch_seconds, chunk_seconds=chunk_seconds, chunk_overlap=chunk_overlap,
            shard=parse_shard(shard), **stream_values, overwrite=overwrite, strict=strict, progress=not no_progress,
            flush_seconds=flush_seconds,
            command=replayable_command(click.get_current_context()))
        for warning in opts.unused_options():
            click.echo(f"warning: {warning}", err=True)
        scale_out = cluster_request(cluster)
        if scale_out is not None:
            return run_on_cluster(opts, scale_out, progress=not no_progress)
        say_resuming(opts)
        with remembered_interrupts():
            report = run_extract(opts)
    except KeyboardInterrupt:  # finished batches were flushed on the way out
        interrupted(opts) if opts is not None else stopped_before_work()
    # errors: printed by the sercache group (cli/common.py); StrictStop (bad data, not a bad request) exits 1
    table = report.table()
    if len(table):
        table["seconds"] = table.seconds.map(lambda s: f"{s:.1f}")
        table["audio_seconds"] = table.audio_seconds.map(lambda s: f"{s:.1f}")
        click.echo(table.to_string(index=False))
    click.echo(f"cache: {out}  ({report.stored} utterance-streams stored, {report.failed} failed, "
               f"{report.manifest_problems} manifest problems; see `sercache cache info {out}`)")
    if report.stored == 0:
        click.echo("error: nothing could be extracted", err=True)
        sys.exit(1)
    if strict and (report.failed or report.manifest_errors):
        click.echo(f"--strict: {report.failed} utterance-stream(s) failed and {report.manifest_errors} manifest "
                   "error(s); see `sercache cache info`", err=True)
        sys.exit(1)
