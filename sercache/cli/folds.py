"""``sercache train``'s fold-protocol options, built from the protocol registry (sercache/splits/registry.py).

A protocol file that registers a new option (:func:`~sercache.splits.registry.register_option`) gets its
flag here, in the help's "Folds and validation" section, and in ``--config`` files, with no CLI edit.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sercache.splits.registry import ProtocolOption, choosable, cli_options

PROTOCOL_HELP = ("Fold protocol. Default: the corpus's own, as its corpus file declares it (loso over IEMOCAP's "
                 "sessions; lospk for EmoDB, RAVDESS, CREMA-D; for CSV manifests loso when every utterance has a "
                 "session, else lospk).")


def _click_type(option: ProtocolOption) -> Any:
    return {"path": click.Path(exists=True, path_type=Path), "choice": click.Choice(option.choices),
            "count": click.IntRange(min=1), "fraction": click.FloatRange(0, 1, min_open=True, max_open=True),
            }.get(option.kind, str)


def _apply(options: list[Callable[[Any], Any]]) -> Callable[[Any], Any]:
    def decorate(f: Any) -> Any:
        for option in reversed(options):  # click lists parameters in decorator order, top first
            f = option(f)
        return f
    return decorate


def _click_option(o: ProtocolOption) -> Callable[[Any], Any]:
    # no click default: None means "not given", so an option the chosen protocol does not read can be refused
    # (the protocol applies the default, which the help still shows)
    shown = f" [default: {o.default}]" if o.default is not None else ""
    return click.option(o.flag, o.param, default=None, type=_click_type(o), help=o.help + shown)


def protocol_choice_options() -> Callable[[Any], Any]:
    """``--protocol`` and the options naming fold files (``--folds``)."""
    return _apply([click.option("--protocol", default=None, type=click.Choice(choosable()), help=PROTOCOL_HELP)]
                  + [_click_option(o) for o in cli_options() if o.kind == "path"])


def protocol_setting_options() -> Callable[[Any], Any]:
    """Every other protocol option: validation, ``--session``, ``--ratios``, and those new protocols add."""
    return _apply([_click_option(o) for o in cli_options() if o.kind != "path"])


def protocol_option_names() -> list[str]:
    """The click parameter names, in help order (for the "Folds and validation" section)."""
    path = [o.param for o in cli_options() if o.kind == "path"]
    return ["protocol", *path, *(o.param for o in cli_options() if o.kind != "path")]
