"""What every command shares: the ``sercache`` group, the error exit and the replayable command."""
from __future__ import annotations

import logging
import math
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

from sercache.errors import SercacheError

CONTEXT = dict(show_default=True, help_option_names=["-h", "--help"], max_content_width=100)


class LazyChoice(click.Choice):
    """A ``click.Choice`` whose values come from a registry, read when first needed (parsing, help).

    Reading a registry can import the modules that register into it (the corpus readers, with
    pandas); done at import, that would slow down every ``sercache --help``.
    """

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._load, self._values = load, None
        super().__init__((), case_sensitive)

    @property
    def choices(self) -> Sequence[Any]:  # type: ignore[override]
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    @choices.setter
    def choices(self, value: Sequence[Any]) -> None:  # click's __init__ sets it; the registry decides
        pass


class FiniteFloat(click.FloatRange):
    """A ``click.FloatRange`` that also refuses inf and nan (nan passes every range comparison)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = super().convert(value, param, ctx)
        except OverflowError:  # float() of an integer beyond the float range (a YAML value, say)
            self.fail(f"{str(value)[:20]}... is too large for a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


#: The largest count or seed an integer option takes (beyond it, torch and numpy overflow).
MAX_INT = 2**31 - 1


def setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "urllib3", "filelock", "h5py", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not verbose:  # transformers' "Loading weights" bars would interleave with sercache's own
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def fail(exc: Exception, status: int | None = None) -> None:
    """Print the error and exit: the error's ``exit_code`` (2 for a refused request, 1 for bad data)."""
    # KeyError's str() quotes its message; print the message itself
    message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    click.echo(f"error: {message}", err=True)
    sys.exit(status if status is not None else getattr(exc, "exit_code", 2))


#: What every command prints as ``error: <message>`` (exit 2, or the error's ``exit_code``), in one place:
#: sercache's own errors (SercacheError: sercache raises no bare builtin, tests/test_errors.py checks), and the
#: builtin ones its libraries raise for a refused value or a missing file (pandas' ValueError, open()'s
#: FileNotFoundError). Anything else is a bug and keeps its traceback.
COMMAND_ERRORS: tuple[type[Exception], ...] = (SercacheError, KeyError, ValueError, FileNotFoundError)


class SercacheGroup(click.Group):
    """The ``sercache`` group: the one place where a command's error becomes ``error: ...`` and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except COMMAND_ERRORS as exc:
            fail(exc)


def stopped_before_work() -> None:
    """Ctrl-C before a command stored anything: say so (not click's bare ``Aborted!``); exit 130."""
    click.echo("\ninterrupted before anything was stored; nothing to resume: run the command again", err=True)
    sys.exit(130)


def replayable_command(ctx: click.Context, skip: tuple[str, ...] = ("no_progress", "progress_every")) -> str:
    """The command as resolved, every setting spelled out (model ids included, defaults too).

    This is what a cache or run records, and what `cache verify` tells users to rerun: it must
    redo the same work whatever the defaults are then, and however the command was typed
    (``sercache -v extract ...``, or through the Python API).
    """
    words = ["sercache", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        two_way = getattr(param, "is_flag", False) and bool(getattr(param, "secondary_opts", None))
        if param.name in skip or value is None or (value is False and not two_way) or value == ():
            continue
        if isinstance(param, click.Argument):
            words += [_word(v) for v in (value if isinstance(value, tuple) else (value,))]
            continue
        flag = max(param.opts, key=len)
        if two_way:  # --x/--no-x
            words.append(max(param.opts, key=len) if value else max(param.secondary_opts, key=len))
        elif getattr(param, "is_flag", False):
            words.append(flag)
        else:
            for v in value if isinstance(value, tuple) else (value,):
                words += [flag, _word(v)]
    return " ".join(shlex.quote(w) for w in words)


def _word(value: object) -> str:
    return str(value.resolve()) if isinstance(value, Path) else str(value)  # paths: valid from any directory


@click.group(cls=SercacheGroup, context_settings=CONTEXT)
@click.version_option(package_name="sercache")
@click.option("-v", "--verbose", count=True, help="-v for progress logs, -vv for debug logs.")
def cli(verbose: int) -> None:
    """sercache: extract frozen encoder features once, then train SER fusion heads from the cache."""
    setup_logging(verbose)
