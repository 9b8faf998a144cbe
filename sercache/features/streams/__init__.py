"""The stream registry: every ``--streams`` kind, one module per kind (or family) in this package.

Each module here calls :func:`register_stream` with its :class:`StreamKind` entries when imported; the
first read of the registry imports every module of the package, so a new kind is one new file (see
whisper.py). A name or a stream option declared twice is refused (``RegistryError``). Everything else
reads the registry: the ``--streams`` choices and model flags of ``sercache extract``, ExtractOptions'
validation, the runner's extractors, predict's rebuilding from recorded provenance, and
``cache verify``'s stream-specific checks.
"""
from __future__ import annotations

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
from sercache.registry import Registry, RegistryError
from sercache.stream_checks import register_stream_check

__all__ = ["COMMON_FIELDS", "ExtractError", "Runtime", "StreamConfig", "StreamKind", "StreamOption",
           "UnknownStreamError", "all_options", "build_extractor", "default_streams", "get_stream", "kind_of_identity",
           "options_of", "register_stream", "run_order", "stream_checks", "stream_kinds"]


class UnknownStreamError(RegistryError, KeyError):
    """A stream kind no module registers (a ``KeyError`` too, as a lookup in :func:`stream_kinds` was)."""

    __str__ = RegistryError.__str__  # the message itself, not KeyError's quoted repr


#: The stream kinds by name, in listing order (the help's, and the default ``--streams``').
_STREAMS: Registry[StreamKind] = Registry("stream kind", __name__, UnknownStreamError, order=lambda k: (k.order, k.name))


def register_stream(*kinds: StreamKind) -> tuple[StreamKind, ...]:
    """Make ``kinds`` available by name (a stream module calls this once, at import, with the kinds it defines).

    Refused (``RegistryError``) when a name is taken or an option's dest is declared by a registered kind
    already (declare it once and name it in the other kind's ``uses``). Registers the kinds' ``cache verify`` hooks.
    """
    declared = {o.dest: k.name for k in _STREAMS.entries.values() for o in k.options}
    for kind in kinds:
        if kind.name in _STREAMS.entries:
            raise RegistryError(f"stream kind name {kind.name!r} is taken")
        twice = [o.dest for o in kind.options if o.dest in declared]
        if twice:
            raise RegistryError(f"stream kind {kind.name!r}: option {twice[0]!r} is declared by stream kind "
                                f"{declared[twice[0]]!r} already; declare it once and name it in the other's `uses`")
        _STREAMS.add(kind.name, kind)
        declared.update((o.dest, kind.name) for o in kind.options)
        for hook in kind.verify:  # cache verify runs them without knowing what they check
            register_stream_check(hook)
    return kinds


def stream_kinds() -> dict[str, StreamKind]:
    """Kind name -> entry, in listing order (the help's, and the default ``--streams``')."""
    return _STREAMS.all()


def get_stream(name: str) -> StreamKind:
    return _STREAMS.get(name)


def all_options() -> dict[str, StreamOption]:
    """Every stream option by dest, in the order the kinds declare them (each is declared once)."""
    return {option.dest: option for kind in stream_kinds().values() for option in kind.options}


def options_of(kind: StreamKind) -> list[StreamOption]:
    """The options a kind reads: its own and those it uses."""
    every = all_options()
    return list(kind.options) + [every[d] for d in kind.uses]


def run_order(kinds: Sequence[str]) -> tuple[str, ...]:
    """The order streams run in: the user's, except that a stream comes after one it reads (asr before text_asr)."""
    out: list[str] = []

    def add(kind: str) -> None:
        needed = get_stream(kind).needs
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
    return get_stream(kind).build(config, runtime)


def stream_checks() -> list[Any]:
    """Every kind's ``cache verify`` hooks (store/verify.py runs them on each stream file)."""
    return [hook for kind in stream_kinds().values() for hook in kind.verify]


stream_kinds()  # every kind now, so that cache verify has their checks once this package is imported
