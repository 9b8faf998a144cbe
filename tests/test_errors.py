"""One exception root: every error sercache defines is a SercacheError, and the CLI prints them in one place."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import click
import pytest
from click.testing import CliRunner

import sercache
from sercache.cli import cli
from sercache.cli.common import SercacheGroup
from sercache.errors import SercacheError


def _modules():
    for info in pkgutil.walk_packages(sercache.__path__, "sercache."):
        if info.name.endswith("__main__"):  # runs the CLI on import
            continue
        try:
            yield importlib.import_module(info.name)
        except ImportError:  # an optional dependency (ctranslate2, opensmile...) is not installed
            continue


def test_every_sercache_exception_derives_from_the_root():
    defined = {cls for module in _modules() for _, cls in inspect.getmembers(module, inspect.isclass)
               if issubclass(cls, Exception) and cls.__module__.startswith("sercache.")}
    assert len(defined) >= 20  # the walk found them (RunError, CacheError, ProtocolError, ...)
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in defined if not issubclass(c, SercacheError))
    assert not outside, f"derive these from sercache.errors.SercacheError: {outside}"


def test_the_roots_keep_their_builtin_bases():
    from sercache.splits import ProtocolError
    from sercache.training.run import RunError
    from sercache.training.trainer import TrainingError

    assert issubclass(RunError, ValueError) and issubclass(ProtocolError, ValueError)
    assert issubclass(TrainingError, RuntimeError)


def test_a_command_error_prints_through_the_group():
    result = CliRunner().invoke(cli, ["labels", "no-such-preset"])
    assert result.exit_code == 2
    assert result.output.startswith("error: unknown label preset 'no-such-preset'")  # a KeyError: not quoted twice


class _BadData(SercacheError):
    exit_code = 1


@pytest.mark.parametrize(("error", "code", "text"), [
    (SercacheError("refused: --x 3"), 2, "error: refused: --x 3\n"),
    (_BadData("utt1 is unreadable"), 1, "error: utt1 is unreadable\n"),
    (KeyError("unknown thing 'y'"), 2, "error: unknown thing 'y'\n"),
])
def test_the_group_prints_every_error_the_same_way(error, code, text):
    @click.group(cls=SercacheGroup)
    def group() -> None:
        pass

    @group.command()
    def boom() -> None:
        raise error

    result = CliRunner().invoke(group, ["boom"])
    assert (result.exit_code, result.output) == (code, text)


def test_a_bug_keeps_its_traceback():
    @click.group(cls=SercacheGroup)
    def group() -> None:
        pass

    @group.command()
    def boom() -> None:
        raise ZeroDivisionError("a bug")

    result = CliRunner().invoke(group, ["boom"])
    assert isinstance(result.exception, ZeroDivisionError)
