"""What a stream kind declares: its extractor factory, config, CLI options and verify hooks.

A kind's config is a dataclass whose fields are keys of the stream's recorded ``identity``
(sercache.features.base.Extractor.identity): it round-trips to JSON, it is built from the
``sercache extract`` options for a new stream, and from the recorded provenance when
``sercache predict`` rebuilds the extractor. Nothing here imports torch: the CLI reads the
registry for its ``--streams`` choices and flags.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sercache.errors import SercacheError


class ExtractError(SercacheError, ValueError):
    """A request that cannot be carried out (raised before any work starts)."""


@dataclass(frozen=True)
class StreamOption:
    """One ``sercache extract`` option a stream kind owns.

    Attributes:
        dest: the option's key in ExtractOptions (and the click parameter name), e.g. ``ssl_model``.
        field: the config field it fills (default: ``dest``).
        flag: the CLI flag, e.g. ``--ssl-model``; None: Python API only.
        default: value when not given.
        help: the CLI help line.
        type: ``str``, ``int`` or ``float``.
        check: ``(predicate, rule)``: a value the predicate refuses fails with "must be <rule>".
    """

    dest: str
    default: Any
    help: str = ""
    flag: str | None = None
    field: str = ""
    type: type = str
    check: tuple[Callable[[Any], bool], str] | None = None

    @property
    def target(self) -> str:
        return self.field or self.dest


@dataclass(frozen=True)
class Runtime:
    """How to run an extractor, which never changes the stored numbers (so not in its config)."""

    device: str = "cpu"
    batch_seconds: float | None = None
    #: where a converted copy of a model may be kept (inside the output cache the user named); None: a
    #: temporary folder, removed when the extractor closes
    model_store: Path | None = None


#: ExtractOptions fields shared by every kind, under the config field names they fill.
COMMON_FIELDS = {"dtype": "dtype", "precision": "precision", "chunk_seconds": "chunk_seconds",
                 "chunk_overlap": "overlap_seconds"}


@dataclass
class StreamConfig:
    """A stream's settings; subclasses add fields named as the identity keys they become."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StreamConfig:
        """From a config's JSON, or from a recorded identity (keys that are no field are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class StreamKind:
    """One entry of the stream registry.

    Attributes:
        name: the ``--streams`` word, e.g. ``ssl``.
        help: a few words for ``--streams``'s help.
        config: the config dataclass.
        build: ``(config, runtime) -> Extractor``; imports torch and models lazily.
        options: the ``sercache extract`` options this kind owns (shared ones are declared once,
            by the first kind, and listed by name in ``uses`` by the others).
        uses: option dests declared by another kind that this kind reads too.
        order: position in listings (``--streams``' help, the default ``--streams``); streams run in the
            order ``--streams`` gives them, a kind after the one it ``needs``.
        default: part of the default ``--streams``.
        model_option: the option that names this kind's model (None: no model); predict's messages.
        identity_kind: the ``kind`` its streams record in their identity (default: ``name``).
        needs: a kind whose finished stream this one reads (requested too, or already in the cache).
        constants: config values fixed by the kind (text_asr's ``source``).
        verify: hooks for ``cache verify`` (see sercache.store.verify.StreamCheck).
        implied: identity keys added after streams of this kind were first recorded, with the value
            a recording without them meant (whisper's ``window``: ``full``); see :meth:`completed`.
    """

    name: str
    help: str
    config: type[StreamConfig]
    build: Callable[[Any, Runtime], Any]
    options: tuple[StreamOption, ...] = ()
    uses: tuple[str, ...] = ()
    order: float = 100.0
    default: bool = False
    model_option: str | None = None
    identity_kind: str = ""
    needs: str | None = None
    constants: Mapping[str, Any] = field(default_factory=dict)
    verify: tuple[Callable[..., Any], ...] = ()
    implied: Mapping[str, Any] = field(default_factory=dict)

    def completed(self, identity: Mapping[str, Any]) -> dict[str, Any]:
        """A recorded identity with the keys it predates filled in, so it compares with a new one."""
        return {**self.implied, **identity}

    def recognises(self, identity: Mapping[str, Any]) -> bool:
        """Whether a stream recorded with this identity is of this kind."""
        if identity.get("kind") != (self.identity_kind or self.name):
            return False
        return all(identity.get(k) == v for k, v in self.constants.items())

    def config_from(self, values: Mapping[str, Any], options: Sequence[StreamOption]) -> StreamConfig:
        """The config for a new stream: ExtractOptions' common fields and this kind's ``options``."""
        names = {f.name for f in dataclasses.fields(self.config)}
        data: dict[str, Any] = {k: values[c] for c, k in COMMON_FIELDS.items() if k in names and c in values}
        data.update({o.target: values[o.dest] for o in options if o.target in names and o.dest in values})
        data.update(self.constants)
        return self.config(**data)
