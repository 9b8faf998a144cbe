"""``sercache cache info|verify|status``: inspect and check a feature cache."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from sercache.cli.cluster import cache_status_command
from sercache.cli.common import CONTEXT
from sercache.cli.help import examples


@click.group(context_settings=CONTEXT)
def cache() -> None:
    """Inspect and check a feature cache."""


cache.add_command(cache_status_command)


@cache.command("info", context_settings=CONTEXT, epilog=examples("sercache cache info cache/iemocap",
                                                                  "sercache cache info cache/iemocap --json > info.json"))
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--errors", "max_errors", type=int, default=20, help="How many problem rows to list (-1: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def cache_info(path: Path, max_errors: int, as_json: bool) -> None:
    """Streams, layers, dims, counts, sizes, provenance, completeness, ASR WER and problems."""
    from sercache.features.cache_info import cache_summary, format_summary

    summary = cache_summary(path)
    click.echo(json.dumps(summary, indent=1, default=str) if as_json else format_summary(summary, max_errors))


@cache.command("verify", context_settings=CONTEXT, epilog=examples("sercache cache verify cache/iemocap",
                                                                    "sercache cache verify cache/iemocap --stream ssl"))
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--stream", "streams", multiple=True, help="Only these streams (default: all).")
@click.option("--no-checksums", is_flag=True, help="Skip the per-utterance CRC-32 check (faster).")
def cache_verify(path: Path, streams: tuple[str, ...], no_checksums: bool) -> None:
    """Check offsets, frame counts against durations, NaN/inf, completeness and checksums.

    Exits 1 and lists each problem by shard, stream and utterance when anything is wrong.
    """
    from sercache.features.streams import stream_checks
    from sercache.store.verify import verify_cache

    problems = verify_cache(path, list(streams) or None, checksums=not no_checksums, checks=stream_checks())
    for p in problems:
        click.echo(str(p))
    if problems:
        click.echo(f"{len(problems)} problem(s) in {path}", err=True)
        sys.exit(1)
    click.echo(f"{path}: OK")
