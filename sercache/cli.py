"""The ``sercache`` command line: parse options, call one library function, print results.

Heavy modules (torch, transformers) are imported inside commands, so ``--help`` is instant.
Results go to stdout; progress bars and logs go to stderr.
"""
from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import click

CONTEXT = dict(show_default=True, help_option_names=["-h", "--help"], max_content_width=100)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "urllib3", "filelock", "h5py", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _fail(exc: Exception) -> None:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="sercache")
@click.option("-v", "--verbose", count=True, help="-v for progress logs, -vv for debug logs.")
def cli(verbose: int) -> None:
    """sercache: extract frozen encoder features once, then train SER fusion heads from the cache."""
    _setup_logging(verbose)


# --------------------------------------------------------------------------------------- extract
@cli.command(context_settings=CONTEXT)
@click.argument("root", type=click.Path(exists=True, path_type=Path))
@click.option("--corpus", required=True, type=click.Choice(["iemocap", "ravdess", "emodb", "cremad", "csv"]),
              help="Corpus layout of ROOT (csv: ROOT is a manifest .csv).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Cache directory (created if needed).")
@click.option("--session", "sessions", multiple=True, help="Only these sessions (repeat, or 1,3). Default: all.")
@click.option("--streams", default="ssl,asr,text_asr,text_gold,mfcc",
              help="Comma list from: ssl, asr, text_asr, text_gold, mfcc, logmel.")
@click.option("--ssl-model", default="facebook/hubert-large-ls960-ft", help="HF id or local folder of the speech encoder.")
@click.option("--asr-model", default="facebook/wav2vec2-large-960h", help="HF id or local folder of a CTC ASR model.")
@click.option("--text-model", default="bert-base-uncased", help="HF id or local folder of a BERT-style text encoder.")
@click.option("--layers", default=None, help="SSL layers to store frame by frame: 24 | 6,12,24 | all. Default: last. "
              "Mean/std pooled statistics are stored for every layer regardless.")
@click.option("--text-layers", default=None, help="Text-encoder layers to store. Default: last.")
@click.option("--device", default="auto", help="cpu, cuda, cuda:N or auto.")
@click.option("--precision", default="auto", type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
              help="Compute precision (auto: fp16 on GPU, fp32 on CPU).")
@click.option("--dtype", default="float16", type=click.Choice(["float16", "float32"]), help="Storage dtype of model features.")
@click.option("--batch-seconds", type=float, default=None,
              help="Padded audio seconds per batch. Default per device: 0 (one utterance) on CPU, 200 on GPU.")
@click.option("--chunk-seconds", type=float, default=30.0, help="Utterances longer than this are encoded in chunks.")
@click.option("--chunk-overlap", type=float, default=5.0, help="Seconds of overlap between chunks.")
@click.option("--mfcc-coefficients", "n_mfcc", type=int, default=26, help="MFCC coefficients (GLAM uses 26).")
@click.option("--shard", default=None, help="i/N: extract only a deterministic 1/N slice (for job arrays).")
@click.option("--stream-name", "stream_names", multiple=True, help="KIND=NAME, e.g. ssl=wavlm_large (repeatable).")
@click.option("--overwrite", is_flag=True, help="Re-extract streams whose stored settings differ (or rebuild them).")
@click.option("--strict", is_flag=True, help="Stop at the first failing utterance, and exit non-zero on any error.")
@click.option("--flush-seconds", type=float, default=30.0,
              help="Checkpoint finished batches to disk at least this often (an interruption loses at most this).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def extract(root: Path, corpus: str, out: Path, sessions: tuple[str, ...], streams: str, ssl_model: str,
            asr_model: str, text_model: str, layers: str | None, text_layers: str | None, device: str,
            precision: str, dtype: str, batch_seconds: float | None, chunk_seconds: float, chunk_overlap: float,
            n_mfcc: int, shard: str | None, stream_names: tuple[str, ...], overwrite: bool, strict: bool,
            flush_seconds: float, no_progress: bool) -> None:
    """Run frozen encoders over a corpus once and store their outputs in the cache OUT.

    Rerunning the same command after an interruption resumes where it stopped; rerunning it
    after success does nothing. Problems (unreadable audio, bad label lines...) are recorded
    in the cache and shown by `sercache cache info`; the exit status is non-zero only with
    --strict, or when nothing could be extracted.
    """
    from sercache.extract.options import (ExtractError, ExtractOptions, parse_sessions, parse_shard,
                                          parse_stream_names)
    from sercache.extract.runner import run_extract
    from sercache.features.models import ModelError
    from sercache.store.errors import CacheError

    try:
        opts = ExtractOptions(
            root=root, corpus=corpus, out=out, sessions=parse_sessions(list(sessions)),
            streams=tuple(s.strip() for s in streams.split(",") if s.strip()),
            stream_names=parse_stream_names(list(stream_names)), ssl_model=ssl_model, asr_model=asr_model,
            text_model=text_model, layers=layers, text_layers=text_layers, device=device, precision=precision,
            dtype=dtype, batch_seconds=batch_seconds, chunk_seconds=chunk_seconds, chunk_overlap=chunk_overlap,
            n_mfcc=n_mfcc, shard=parse_shard(shard), overwrite=overwrite, strict=strict, progress=not no_progress,
            flush_seconds=flush_seconds,
            command="sercache extract " + " ".join(shlex.quote(a) for a in sys.argv[2:]))
        report = run_extract(opts)
    except (ExtractError, ModelError, CacheError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
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
    if strict and (report.failed or report.manifest_problems):
        sys.exit(1)


# --------------------------------------------------------------------------------------- cache
@cli.group(context_settings=CONTEXT)
def cache() -> None:
    """Inspect and check a feature cache."""


@cache.command("info", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--errors", "max_errors", type=int, default=20, help="How many problem rows to list (-1: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def cache_info(path: Path, max_errors: int, as_json: bool) -> None:
    """Streams, layers, dims, counts, sizes, provenance, completeness, ASR WER and problems."""
    from sercache.store.errors import CacheError
    from sercache.store.info import cache_summary, format_summary

    try:
        summary = cache_summary(path)
    except CacheError as exc:
        _fail(exc)
    click.echo(json.dumps(summary, indent=1, default=str) if as_json else format_summary(summary, max_errors))


@cache.command("verify", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--stream", "streams", multiple=True, help="Only these streams (default: all).")
@click.option("--no-checksums", is_flag=True, help="Skip the per-utterance CRC-32 check (faster).")
def cache_verify(path: Path, streams: tuple[str, ...], no_checksums: bool) -> None:
    """Check offsets, frame counts against durations, NaN/inf, completeness and checksums.

    Exits 1 and lists each problem by shard, stream and utterance when anything is wrong.
    """
    from sercache.store.verify import verify_cache

    problems = verify_cache(path, list(streams) or None, checksums=not no_checksums)
    for p in problems:
        click.echo(str(p))
    if problems:
        click.echo(f"{len(problems)} problem(s) in {path}", err=True)
        sys.exit(1)
    click.echo(f"{path}: OK")


if __name__ == "__main__":
    cli()
