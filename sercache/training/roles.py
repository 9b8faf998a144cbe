"""Which cache streams and layers feed a head's roles: ``--ROLE-stream`` and ``--layer`` resolved against a cache.

A head reads roles (``audio``, ``text``...); each maps to a cache stream and layers.

* A frame head reads one stored layer of one stream (``--layer N``), or every stored layer for
  the roles it weights itself (``multi_layer_roles``: wsum...). The fusion heads that read their
  roles through ``Head.frames`` (gate, cmgi, tmn, mmer) also take several (``--layer 2,3,4``) or
  ``all``: the role then arrives as ``(batch, layers, frames, dim)`` and the head learns a softmax
  mix of those layers (``Head.mix_layers``) instead of reading one chosen by hand.
* A pooled head (linear, mlp, svm, logreg) reads utterance statistics, which the cache holds for
  every layer of a stream, stored frame by frame or not. One role may name several streams
  (``--audio-stream whisper,egemaps``): openSMILE streams give their functionals, every other
  stream the mean/std statistics of the layers ``--layer`` names:

  * ``N``: one layer (the default: the stream's last stored layer, as it always was);
  * ``2,3,4``: those layers, their statistics concatenated layer by layer;
  * ``all``: every pooled layer, concatenated;
  * ``select``: one of each single layer, or all of them, chosen per fold on the validation
    speakers (:mod:`sercache.training.layer_selection`); never on the test fold.

  With several streams the layer words apply to each stream that has several pooled layers (an
  MFCC or openSMILE stream keeps its one set of statistics); ``select`` chooses among the layers
  of one such stream.

A pooled role's :attr:`RoleSpec.layers` holds one entry per stream: a layer number, or a list of
layers. A role with ``select`` lists the candidates' layers there and records the choice per fold.
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sercache.errors import SercacheError
from sercache.head_catalog import role_default_streams
from sercache.store.reader import FeatureStore, StreamInfo

#: Which cache stream a role reads when the user does not say (declared by the head modules: STREAM_ROLES).
ROLE_DEFAULT_STREAMS = role_default_streams()
#: The words ``--layer`` takes besides layer numbers (pooled heads; ``all`` also for the mixing frame heads).
LAYER_WORDS = ("all", "select")


class DataError(SercacheError, ValueError):
    """The cache cannot feed this head as asked (missing stream, layer...)."""


@dataclass
class RoleSpec:
    role: str
    stream: str        # one stream name; for a pooled role, several joined by commas ("mfcc,logmel,egemaps")
    #: frame roles: the layers loaded (one, or every stored layer for multi-layer roles); pooled roles: one entry
    #: per stream, a layer number or a list of layers whose statistics are concatenated
    layers: list[Any]
    select: bool = False  # pooled roles: each fold chooses one of choices() on its validation speakers

    @property
    def streams(self) -> list[str]:
        return self.stream.split(",")

    def to_dict(self) -> dict:
        return {"stream": self.stream, "layers": self.layers, **({"select": True} if self.select else {})}

    def stream_layers(self) -> list[list[int]]:
        """A pooled role's layers per stream, each as a list."""
        return [[int(v) for v in e] if isinstance(e, list) else [int(e)] for e in self.layers]

    def choices(self) -> list[RoleSpec]:
        """The fixed layer choices of a ``select`` role: each single layer of its layered stream, then all of them.

        Single layers come first, lowest first, so that a tie on validation keeps the smaller input.
        """
        if not self.select:
            return [self]
        k = next(i for i, e in enumerate(self.layers) if isinstance(e, list) and len(e) > 1)
        options: list[Any] = [*self.layers[k], list(self.layers[k])]
        return [RoleSpec(self.role, self.stream, [*self.layers[:k], o, *self.layers[k + 1:]]) for o in options]

    def describe(self, functionals: Collection[str] = ()) -> str:
        """``whisper:3``, ``whisper:0-6+egemaps``: the streams and the layers read, for logs and reports.

        ``functionals``: streams shown by their name alone (openSMILE streams, which have no layers to choose).
        """
        return "+".join(s if s in functionals else f"{s}:{_layer_words(lay)}"
                        for s, lay in zip(self.streams, self.stream_layers()))


def _layer_words(layers: list[int]) -> str:
    if len(layers) > 2 and layers == list(range(layers[0], layers[-1] + 1)):
        return f"{layers[0]}-{layers[-1]}"
    return ",".join(map(str, layers))


@dataclass(frozen=True)
class RecordedLayers:
    """A pooled role's layers as a run recorded them (one entry per stream), to rebuild the same inputs."""

    entries: tuple[Any, ...]
    select: bool = False


def parse_layer_option(value: Any, option: str) -> int | list[int] | str | None:
    """A --layer value: None, a layer number, several (``"2,3,4"`` or a list), or one of :data:`LAYER_WORDS`."""
    if value is None or isinstance(value, RecordedLayers):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    items = [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else str(value).split(",")
    items = [v for v in items if v]
    if len(items) == 1 and items[0].lower() in LAYER_WORDS:
        return items[0].lower()
    try:
        layers = [int(v) for v in items]
    except ValueError:
        layers = []
    if not layers or len(set(layers)) != len(layers):
        raise DataError(f"{option} {value!r}: give a layer number (6), several (2,3,4), all, or select (chosen per "
                        "fold on the validation speakers)")
    return layers[0] if len(layers) == 1 else layers


def layer_option(role: str) -> str:
    """The train option that picks ``role``'s layer (``--layer`` for audio, ``--text-layer`` for text)."""
    return "--layer" if role == "audio" else f"--{role}-layer"


def _stream_info(cache: FeatureStore, role: str, name: str | None) -> StreamInfo:
    if name is None or name not in cache.streams:
        raise DataError(f"the head reads a {role!r} stream, and stream {name!r} is not in {cache.path} "
                        f"(streams: {', '.join(cache.streams) or 'none'}); choose one with --{role}-stream")
    info = cache.streams[name]
    if not info.complete:
        raise DataError(f"stream {name!r} is not finished in shard(s) {', '.join(info.missing_shards)} of "
                        f"{cache.path}: finish the extraction first (rerun the extract command)")
    return info


def _functionals(info: StreamInfo) -> bool:
    return "functionals" in info.per_utterance_fields


def _pooled_entry(info: StreamInfo, role: str, asked: int | list[int] | str | None) -> int | list[int]:
    """What one stream of a pooled role contributes: a layer, or several layers' statistics."""
    if _functionals(info):  # openSMILE: its functionals, whatever --layer says
        return info.pooled_layers[-1] if info.pooled_layers else 0
    if not info.pooled_layers:
        raise DataError(f"stream {info.name!r} ({info.kind}) has no utterance-level statistics, so a pooled head "
                        f"cannot read it; choose a feature stream with --{role}-stream")
    if asked is None:
        return info.default_layer if info.default_layer in info.pooled_layers else info.pooled_layers[-1]
    layers = list(info.pooled_layers) if asked in LAYER_WORDS else asked if isinstance(asked, list) else [asked]
    missing = [v for v in layers if v not in info.pooled_layers]
    if missing:
        raise DataError(f"{layer_option(role)} {','.join(map(str, layers))}: stream {info.name!r} has pooled "
                        f"statistics of layers {info.pooled_layers} (no {missing[0]})")
    return int(layers[0]) if len(layers) == 1 else [int(v) for v in layers]


def _pooled_role(role: str, infos: list[StreamInfo], asked: Any) -> RoleSpec:
    name = ",".join(i.name for i in infos)
    if isinstance(asked, RecordedLayers):
        if len(asked.entries) != len(infos):
            raise DataError(f"the run recorded {len(asked.entries)} layer entries for role {role!r} and it reads "
                            f"{len(infos)} streams ({name}); the record does not fit this cache")
        entries = [_pooled_entry(i, role, e) for i, e in zip(infos, asked.entries)]
        return RoleSpec(role, name, entries, select=asked.select)
    layered = [i for i in infos if not _functionals(i) and len(i.pooled_layers) > 1]
    if asked is not None and len(infos) > 1:
        if not layered:
            raise DataError(f"{layer_option(role)} {asked}: none of the streams {name} has several layers to choose "
                            "from; leave the option out")
        if asked == "select" and len(layered) > 1:
            raise DataError(f"{layer_option(role)} select chooses among the layers of one stream, and {name} has "
                            f"{len(layered)} with several ({', '.join(i.name for i in layered)}); give their layers "
                            "(e.g. all, or 6), or select with one of them")
        entries = [_pooled_entry(i, role, asked if i in layered else None) for i in infos]
    else:
        entries = [_pooled_entry(i, role, asked) for i in infos]
    select = asked == "select" and any(isinstance(e, list) for e in entries)
    return RoleSpec(role, name, entries, select=select)


def resolve_roles(cache: FeatureStore, roles: tuple[str, ...], multi_layer: tuple[str, ...],
                  streams: dict[str, str], layers: dict[str, Any], pooled: bool = False,
                  mixes: bool = False) -> dict[str, RoleSpec]:
    """Map the head's roles to cache streams and layers, with errors that list what exists.

    ``layers``: role -> what ``--layer``/``--text-layer`` say (None, a number, ``"2,3,4"``, a list of layers,
    ``"all"``, ``"select"``), or a :class:`RecordedLayers` of a run's config. A pooled head
    (``pooled=True``) reads utterance statistics, and one role may then name several streams
    (``"mfcc,logmel,egemaps"``) whose statistics are concatenated (see the module doc). A frame head
    that mixes layers (``mixes=True``: :attr:`Head.mixes_layers`) reads several stored layers of a role
    (``"all"``, ``"2,3,4"``) and learns their weighted sum.
    """
    asked_layers = {role: parse_layer_option(layers.get(role), layer_option(role)) for role in roles}
    selecting = [r for r, a in asked_layers.items() if a == "select" or isinstance(a, RecordedLayers) and a.select]
    if len(selecting) > 1:
        raise DataError(f"{' and '.join(map(layer_option, selecting))} select: a run chooses the layers of one role "
                        "on validation; give the other role's layer(s)")
    out = {}
    for role in roles:
        names = (streams.get(role) or ROLE_DEFAULT_STREAMS.get(role) or "").split(",")
        names = [n.strip() for n in names if n.strip()] or [None]
        if len(names) > 1 and not pooled:
            raise DataError(f"--{role}-stream {','.join(map(str, names))}: only pooled heads (linear, mlp, svm, "
                            "logreg) read several streams at once; give one stream")
        infos = [_stream_info(cache, role, n) for n in names]
        asked = asked_layers[role]
        if pooled:
            out[role] = _pooled_role(role, infos, asked)
            continue
        out[role] = _frame_role(role, infos[0], asked, role in multi_layer, mixes)
    return out


def named_role_options(streams: dict[str, str], layers: dict[str, Any], text: str | None) -> dict[str, list[str]]:
    """role -> the options of a request that name it (``--audio-stream whisper``, ``--layer all``, ``--text gold``)."""
    named: dict[str, list[str]] = {}
    for role, stream in streams.items():
        if stream:
            named.setdefault(role, []).append(f"--{role.replace('_', '-')}-stream {stream}")
    for role, asked in layers.items():
        if isinstance(asked, RecordedLayers):
            named.setdefault(role, []).append(f"the recorded layers of role {role!r}")
        elif asked is not None:
            named.setdefault(role, []).append(f"{layer_option(role)} {asked}")
    if text is not None:
        named.setdefault("text", []).append(f"--text {text}")
    return named


def check_roles_named(head: str, reads: Collection[str], named: dict[str, list[str]],
                      enabled_by: dict[str, str] | None = None) -> None:
    """Refuse options for roles the head does not read: ignored, they would let a run train on other features
    than the user believes (apcnn reads mfcc, so ``--audio-stream whisper`` would change nothing).

    ``enabled_by``: role -> the setting that makes the head read it (``--set with_text=true``), for the error.
    """
    for role, options in named.items():
        if role in reads:
            continue
        hint = (f"; {enabled_by[role]} makes it read one" if enabled_by and role in enabled_by else
                "; drop the option, or choose a head that reads it (`sercache heads`)")
        raise DataError(f"{' and '.join(options)}: head {head!r} reads no {role!r} stream (it reads "
                        f"{', '.join(reads) or 'none'}), so the option would be ignored{hint}")


def _frame_role(role: str, info: StreamInfo, asked: Any, multi_layer: bool, mixes: bool) -> RoleSpec:
    """One stream's frames: every stored layer (multi-layer roles), one, or several to mix (``mixes``)."""
    if multi_layer:
        if asked is not None and not isinstance(asked, RecordedLayers):
            raise DataError(f"{layer_option(role)} {asked}: this head weights every stored layer of its {role!r} "
                            "stream itself; drop the option (a stream stored with fewer layers gives it fewer)")
        if len(info.layers) < 2:
            raise DataError(f"this head weights several layers, but stream {info.name!r} stores only {info.layers}; "
                            "re-extract with --layers all (or e.g. --layers 0,6,12,24)")
        return RoleSpec(role, info.name, list(info.layers))
    if isinstance(asked, RecordedLayers):
        asked = asked.entries[0] if len(asked.entries) == 1 else list(asked.entries)
    option = f"{layer_option(role)} {','.join(map(str, asked)) if isinstance(asked, list) else asked}"
    if asked == "select" or (asked is not None and not isinstance(asked, int) and not mixes):
        raise DataError(f"{option}: " + (
            "choosing a layer on validation is for the pooled heads (linear, mlp, svm, logreg); give gate, cmgi, "
            "tmn or mmer all (a learned mix of every stored layer), several (2,3,4) or one layer" if mixes else
            "several layers, all and select are for the pooled heads (linear, mlp, svm, logreg) and for the frame "
            "heads that learn a mix of layers (gate, cmgi, tmn, mmer); this head reads one stored layer (wsum "
            "weights every stored layer itself)"))
    layers = (list(info.layers) if asked == "all" else [info.default_layer] if asked is None
              else [int(v) for v in asked] if isinstance(asked, list) else [int(asked)])
    missing = [v for v in layers if v not in info.layers]
    if missing:
        raise DataError(f"{option}: stream {info.name!r} stores layers {info.layers} frame by frame (no {missing[0]})")
    return RoleSpec(role, info.name, layers)

