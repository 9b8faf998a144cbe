"""The shard catalogue: a cache's shards joined into one utterance table and one index per stream.

Opening a cache reads only the small parts of its files (manifests, utterance ids, offsets,
problems, attributes); the feature bytes are read later, by the I/O engine.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import pandas as pd

from sercache._typing import Pathlike
from sercache.store.errors import CacheCorruptError, CacheError
from sercache.store.layout import list_shards, list_staging, list_stream_files, manifest_path
from sercache.store.manifest import read_manifest, read_registry
from sercache.store.provenance import describe_difference, identity_of
from sercache.store.streamfile import H5_READ_ERRORS, FileIndex, read_index

log = logging.getLogger(__name__)


@dataclass
class StreamInfo:
    """What one stream holds across the cache's shards."""

    name: str
    kind: str
    layers: list[int]
    pooled_layers: list[int]
    dim: int | None
    dtype: str | None
    frame_rate: float | None
    n_utterances: int
    n_failed: int
    shards: list[str]
    missing_shards: list[str]
    in_progress: list[str]
    provenance: dict[str, Any]
    frame_fields: list[str] = field(default_factory=list)
    per_utterance_fields: list[str] = field(default_factory=list)
    inconsistent: str = ""
    #: field -> names of its last axis, where the stream records them (``layer_0``: [...])
    column_names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """True when every shard of the cache holds this stream, finished."""
        return not self.missing_shards and not self.in_progress

    @property
    def default_layer(self) -> int | None:
        return self.layers[-1] if self.layers else None


@dataclass
class Catalog:
    """What a cache holds: its shards, utterances, stream indexes and recorded problems."""

    path: Path
    shards: list[str]
    registry: dict[str, Any]
    utterances: pd.DataFrame
    #: stream -> the index of each shard file that holds it finished, in shard order
    index: dict[str, list[FileIndex]]
    streams: dict[str, StreamInfo]
    errors: pd.DataFrame

    @classmethod
    def build(cls, path: Path, shards: list[str], registry: dict[str, Any], utterances: pd.DataFrame,
              index: dict[str, list[FileIndex]], staged: Mapping[str, Sequence[str]],
              manifest_problems: list[pd.DataFrame]) -> Catalog:
        """The catalogue of indexes already read; ``staged``: shard -> streams with work in ``.staging``."""
        names = set(index).union(*staged.values())
        streams = {n: describe_stream(n, index.get(n, []), shards, staged) for n in sorted(names)}
        stream_problems = [ix.problems.assign(shard=ix.attrs.get("shard", ix.path.parent.name), stream=name)
                           for name, ixs in index.items() for ix in ixs]
        frames = manifest_problems + stream_problems
        errors = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return cls(path, shards, registry, utterances, index, streams, errors)


def read_catalog(path: Pathlike) -> Catalog:
    """Join every shard of the cache at ``path``; an unreadable or clashing shard raises, naming the fix."""
    path = Path(path)
    if not path.is_dir():
        raise CacheError(f"{path} is not a directory; give the --out folder of `sercache extract`")
    shards = list_shards(path)
    if not shards:
        raise CacheError(f"{path} holds no shard (no */utterances.h5): is it a sercache cache? "
                         "Create one with `sercache extract ROOT --corpus ... --out " f"{path}`")
    try:
        registry = read_registry(path)
    except CacheCorruptError as exc:  # the registry is bookkeeping: the features stay readable
        log.warning("%s", exc)
        registry = {"shards": {}}
    utterances, problems = join_manifests(path, shards)
    index = read_stream_indexes(path, shards)
    staged = {shard: list_staging(path, shard) for shard in shards}
    return Catalog.build(path, shards, registry, utterances, index, staged, problems)


def join_manifests(path: Path, shards: list[str]) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """All shards' manifest rows as one table (with a ``shard`` column), and their problems tables."""
    tables, problems = [], []
    for shard in shards:
        try:
            table, probs, _ = read_manifest(path, shard)
        except H5_READ_ERRORS as exc:
            raise CacheCorruptError(
                f"{manifest_path(path, shard)} cannot be read ({str(exc).splitlines()[0]}): re-extract "
                f"shard {shard} with --overwrite, or move its folder out of the cache.") from exc
        tables.append(table.assign(shard=shard))
        problems.append(probs.assign(shard=shard, stream=""))
    utterances = pd.concat(tables, ignore_index=True)
    dup = utterances.utt_id[utterances.utt_id.duplicated(keep=False)]
    if len(dup):
        u = dup.iloc[0]
        where = utterances.loc[utterances.utt_id == u, "shard"].tolist()
        raise CacheError(f"utterance {u} is in several shards of {path}: {where}. Shards of one cache "
                         "must be disjoint: remove the stray shard folder, or extract into a new cache.")
    return utterances, problems


def read_stream_indexes(path: Path, shards: list[str]) -> dict[str, list[FileIndex]]:
    """stream -> index of each finished stream file, in shard order."""
    index: dict[str, list[FileIndex]] = {}
    for shard in shards:
        for name, p in list_stream_files(path, shard).items():
            try:
                with h5py.File(p, "r", locking=False) as f:
                    index.setdefault(name, []).append(read_index(f, p))
            except H5_READ_ERRORS as exc:  # h5py's message does not name the file
                raise CacheCorruptError(
                    f"{p} cannot be read ({str(exc).splitlines()[0]}): the file is truncated or damaged. Run "
                    f"`sercache cache verify {path}`, then re-extract stream {name!r} of shard {shard} "
                    "with --overwrite (or move the file away to read the other streams).") from exc
    return index


def describe_stream(name: str, indexes: list[FileIndex], shards: list[str],
                    staged: Mapping[str, Sequence[str]]) -> StreamInfo:
    """One stream's :class:`StreamInfo` from its finished files and the shards' staged work."""
    done = [ix.attrs.get("shard", ix.path.parent.name) for ix in indexes]
    in_progress = [s for s in shards if name in staged.get(s, ()) and s not in done]
    missing = [s for s in shards if s not in done]
    prov = indexes[0].attrs.get("provenance", {}) if indexes else {}
    inconsistent = ""
    for ix in indexes[1:]:
        diff = describe_difference(identity_of(prov), identity_of(ix.attrs.get("provenance", {})))
        if diff:
            inconsistent = f"shards {done[0]} and {ix.attrs.get('shard')} of stream {name!r} differ: {diff}"
    ident = identity_of(prov)
    # A shard where every utterance failed has a file without datasets: describe the stream from
    # one that stores something, or fields and layers would look absent from the whole cache.
    first = next((ix for ix in indexes if ix.utt_ids), indexes[0] if indexes else None)
    frame_fields = list(first.schema.frames) if first else []
    dim = dtype = None
    layers = [int(x) for x in (first.attrs.get("layers", []) if first else [])]
    if first and layers and f"layer_{layers[-1]}" in first.schema.frames:
        dt, tail = first.schema.frames[f"layer_{layers[-1]}"]
        dim, dtype = (int(tail[0]) if tail else 1), str(dt)
    return StreamInfo(
        name=name, kind=str(ident.get("kind", "")), layers=layers,
        pooled_layers=[int(x) for x in (first.attrs.get("pooled_layers", []) if first else [])],
        dim=dim, dtype=dtype, frame_rate=(float(first.attrs.get("frame_rate") or 0) or None) if first else None,
        n_utterances=sum(len(ix.utt_ids) for ix in indexes),
        n_failed=sum(int((ix.problems.severity == "error").sum()) for ix in indexes),
        shards=done, missing_shards=missing, in_progress=in_progress, provenance=prov,
        frame_fields=frame_fields, per_utterance_fields=list(first.schema.per_utterance) if first else [],
        inconsistent=inconsistent, column_names=dict(first.attrs.get("column_names") or {}) if first else {},
    )
