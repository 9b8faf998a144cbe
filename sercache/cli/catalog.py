"""``sercache heads`` and ``sercache labels``: what can be trained, on which classes."""
from __future__ import annotations

import click

from sercache.cli.common import CONTEXT, fail
from sercache.cli.help import examples
from sercache.head_catalog import head_names

__all__ = ["head_names", "heads", "labels"]  # head_names: read from the head modules' source, without torch


@click.command(context_settings=CONTEXT, epilog=examples("sercache heads", "sercache heads glam"))
@click.argument("name", required=False)
def heads(name: str | None) -> None:
    """List the heads, the streams they read, their hyperparameters and training defaults."""
    from sercache.heads import HEADS, get_head

    try:
        chosen = [get_head(name)] if name else [HEADS[n] for n in sorted(HEADS)]
    except KeyError as exc:
        fail(exc)
    for cls in chosen:
        click.echo(cls.describe())


@click.command(context_settings=CONTEXT, epilog=examples("sercache labels", "sercache labels iemocap4"))
@click.argument("preset", required=False)
def labels(preset: str | None) -> None:
    """List the label-map presets (corpus codes -> classes)."""
    from sercache.splits import DEFAULT_PRESET, PRESETS, get_preset

    try:
        chosen = [get_preset(preset)] if preset else [PRESETS[n] for n in PRESETS if n != "glam"]
    except KeyError as exc:
        fail(exc)
    for p in chosen:
        default = [c for c, n in DEFAULT_PRESET.items() if n == p.name]
        click.echo(p.describe() + (f" [default for {default[0]}]" if default else ""))
    if not preset:
        click.echo("glam: alias of iemocap4-exc")
