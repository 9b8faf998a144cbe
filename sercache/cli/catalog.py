"""``sercache heads`` and ``sercache labels``: what can be trained, on which classes."""
from __future__ import annotations

import click

from sercache.cli.common import CONTEXT, fail
from sercache.cli.help import examples


def head_names() -> list[str]:
    # kept import-light: the registry's names are listed in the help without importing torch
    return ["apcnn", "cmgi", "gate", "glam", "linear", "logreg", "mhcnn", "mlp", "mmer", "svm", "tmn", "wsum"]


@click.command(context_settings=CONTEXT, epilog=examples("sercache heads", "sercache heads glam"))
@click.argument("name", required=False)
def heads(name: str | None) -> None:
    """List the heads, the streams they read, their hyperparameters and training defaults."""
    from sercache.train_heads.heads import HEADS, get_head

    try:
        chosen = [get_head(name)] if name else [HEADS[n] for n in sorted(HEADS)]
    except KeyError as exc:
        fail(exc)
    for cls in chosen:
        click.echo(f"{cls.name}: {cls.summary}")
        click.echo(f"  reads: {', '.join(cls.roles)}"
                   + (f" (all stored layers of: {', '.join(cls.multi_layer_roles)})" if cls.multi_layer_roles else "")
                   + (f"; also uses: {', '.join(sorted(cls.needs))}" if cls.needs else ""))
        click.echo("  hyperparameters (--set KEY=VALUE): "
                   + ", ".join(f"{k}={v!r}" for k, v in cls.hyperparameters().items()))
        if cls.closed_form:
            click.echo("  training: fitted by scikit-learn on standardised utterance statistics; every combination of "
                       f"{', '.join(cls.grid_keys)} given as lists is scored on validation UA and the best one kept"
                       + ("; refit on training + validation by default" if cls.resolved_train_defaults().get("refit")
                          else ""))
        else:
            click.echo("  training defaults: " + ", ".join(f"{k}={v}" for k, v in cls.resolved_train_defaults().items()))


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
