"""The stream registry: every ``--streams`` kind, one module per kind (or family) in this package.

Each module here defines ``KINDS``, a tuple of :class:`StreamKind` entries; the package finds
them itself, so a new kind is one new file (see whisper.py). Everything else reads the
registry: the ``--streams`` choices and model flags of ``sercache extract``, ExtractOptions'
validation, the runner's extractors, predict's rebuilding from recorded provenance, and
``cache verify``'s stream-specific checks.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sercache.features.streams.base import (
    COMMON_FIELDS,
    ExtractError,
    Runtime,
    StreamConfig,
    StreamKind,
    StreamOption,
)
from sercache.registry import package_modules
from sercache.stream_checks import register_stream_check

__all__ = ["COMMON_FIELDS", "ExtractError", "Runtime", "StreamConfig", "StreamKind", "StreamOption", "all_options",
           "build_extractor", "default_streams", "kind_of_identity", "options_of", "run_order", "stream_checks",
           "stream_kinds"]


@functools.lru_cache(maxsize=1)
def stream_kinds() -> dict[str, StreamKind]:
    """Kind name -> entry, in listing order (the help's, and the default ``--streams``')."""
    found = [kind for module in package_modules(__name__) for kind in getattr(module, "KINDS", ())]
    names = [k.name for k in found]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two stream kinds share a name: {sorted(names)}")
    return {k.name: k for k in sorted(found, key=lambda k: (k.order, k.name))}


@functools.lru_cache(maxsize=1)
def all_options() -> dict[str, StreamOption]:
    """Every stream option by dest, in the order the kinds declare them."""
    out: dict[str, StreamOption] = {}
    for kind in stream_kinds().values():
        for option in kind.options:
            if option.dest in out:
                raise RuntimeError(f"option {option.dest!r} is declared by two stream kinds; declare it once and "
                                   "name it in the other's `uses`")
            out[option.dest] = option
    return out


def options_of(kind: StreamKind) -> list[StreamOption]:
    """The options a kind reads: its own and those it uses."""
    every = all_options()
    return list(kind.options) + [every[d] for d in kind.uses]


def run_order(kinds: Sequence[str]) -> tuple[str, ...]:
    """The order streams run in: the user's, except that a stream comes after one it reads (asr before text_asr)."""
    out: list[str] = []

    def add(kind: str) -> None:
        needed = stream_kinds()[kind].needs
        if needed in kinds and needed not in out:
            add(needed)
        if kind not in out:
            out.append(kind)

    for kind in kinds:
        add(kind)
    return tuple(out)


def default_streams() -> tuple[str, ...]:
    return tuple(k.name for k in stream_kinds().values() if k.default)


def kind_of_identity(identity: Mapping[str, Any]) -> StreamKind | None:
    """The kind that recorded this identity (None: no registered kind did)."""
    return next((k for k in stream_kinds().values() if k.recognises(identity)), None)


def build_extractor(kind: str, config: StreamConfig, runtime: Runtime) -> Any:
    """The extractor for one stream (checks its model config and layers; loads no weights)."""
    return stream_kinds()[kind].build(config, runtime)


def stream_checks() -> list[Any]:
    """Every kind's ``cache verify`` hooks (store/verify.py runs them on each stream file)."""
    return [hook for kind in stream_kinds().values() for hook in kind.verify]


for _check in stream_checks():  # cache verify runs them without knowing what they check
    register_stream_check(_check)
