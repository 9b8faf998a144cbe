"""``sercache catalog``, ``sercache heads`` and ``sercache labels``: every extension, what can be trained, on which classes."""
from __future__ import annotations

from collections.abc import Callable

import click

from sercache.cli.common import CONTEXT
from sercache.cli.help import examples
from sercache.head_catalog import head_names

__all__ = ["KINDS", "catalog", "head_names", "heads", "labels"]  # head_names: read from the head modules' source, without torch


@click.command(context_settings=CONTEXT, epilog=examples("sercache heads", "sercache heads glam"))
@click.argument("name", required=False)
def heads(name: str | None) -> None:
    """List the heads, the streams they read, their hyperparameters and training defaults."""
    from sercache.heads import HEADS, get_head

    chosen = [get_head(name)] if name else [HEADS[n] for n in sorted(HEADS)]
    for cls in chosen:
        click.echo(cls.describe())


@click.command(context_settings=CONTEXT, epilog=examples("sercache labels", "sercache labels iemocap4"))
@click.argument("preset", required=False)
def labels(preset: str | None) -> None:
    """List the label-map presets (corpus codes -> classes)."""
    from sercache.splits import DEFAULT_PRESET, PRESETS, get_preset

    chosen = [get_preset(preset)] if preset else sorted((p for n, p in PRESETS.items() if p.name == n), key=lambda p: p.corpus)
    for p in chosen:
        default = [c for c, n in DEFAULT_PRESET.items() if n == p.name]
        click.echo(p.describe() + (f" [default for {default[0]}]" if default else ""))
    if not preset:
        for alias in (n for n, p in PRESETS.items() if p.name != n):
            click.echo(f"{alias}: alias of {PRESETS[alias].name}")


def _streams() -> dict[str, str]:
    from sercache.features.streams import stream_kinds

    return {n: k.help for n, k in stream_kinds().items()}


def _corpora() -> dict[str, str]:
    from sercache.corpora import corpora

    return {n: c.summary for n, c in sorted(corpora().items())}


def _presets() -> dict[str, str]:
    from sercache.splits import PRESETS

    return {n: f"{p.corpus}: {', '.join(p.classes)}" if p.name == n else f"alias of {p.name}"
            for n, p in sorted(PRESETS.items(), key=lambda item: (item[1].corpus, item[0]))}


def _protocols() -> dict[str, str]:
    from sercache.splits.registry import protocols

    return {n: p.summary for n, p in sorted(protocols().items())}


def _heads() -> dict[str, str]:
    from sercache.heads import HEADS

    return {n: f"heads/{cls.__module__.rpartition('.')[2]}.py" for n, cls in sorted(HEADS.items())}


def _metrics() -> dict[str, str]:
    from sercache.metrics import metrics

    return {m.key: m.label for m in metrics().values()}


#: Every kind of extension, with where its entries are declared and how to read its registry (name -> one line).
KINDS: dict[str, tuple[str, Callable[[], dict[str, str]]]] = {
    "streams": ("sercache/features/streams/<kind>.py (register_stream)", _streams),
    "corpora": ("sercache/corpora/<name>.py (register_corpus)", _corpora),
    "presets": ("sercache/corpora/<name>.py (presets= of its Corpus)", _presets),
    "protocols": ("sercache/splits/folds/<name>.py (register_protocol)", _protocols),
    "heads": ("sercache/heads/<name>.py (@register)", _heads),
    "metrics": ("sercache/metrics/<name>.py (register_metric)", _metrics),
}


@click.command(context_settings=CONTEXT, epilog=examples("sercache catalog", "sercache catalog presets"))
@click.argument("kind", required=False, type=click.Choice(list(KINDS)))
def catalog(kind: str | None) -> None:
    """List every kind of extension (streams, corpora, label presets, protocols, heads, metrics), or one."""
    for name in [kind] if kind else list(KINDS):
        where, entries = KINDS[name]
        click.echo(f"{name}  [{where}]")
        for entry, line in entries().items():
            click.echo(f"  {entry:<14} {line}".rstrip())
