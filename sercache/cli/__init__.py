"""The ``sercache`` command line: parse options, call one library function, print results.

One module per command family; each command is a library call first (``sercache.train``,
``sercache.extract``, ...). Heavy modules (torch, transformers) are imported inside commands, so
``--help`` is instant. Results go to stdout; progress bars and logs go to stderr.
"""
from __future__ import annotations

from sercache.cli.cache import cache
from sercache.cli.catalog import catalog, head_names, heads, labels
from sercache.cli.cluster import sweep_command
from sercache.cli.common import cli, fail, replayable_command
from sercache.cli.extract import extract
from sercache.cli.runs import demo, eval_command, predict, report
from sercache.cli.train import train

for command in (extract, cache, catalog, heads, labels, train, eval_command, predict, report, sweep_command, demo):
    cli.add_command(command)

_head_names = head_names  # the name tests and older notebooks import

__all__ = ["cli", "fail", "head_names", "replayable_command"]
