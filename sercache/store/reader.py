"""Read a cache: one object over all shards, with numpy + h5py + pandas only.

Example::

    import sercache
    cache = sercache.open_cache("cache/")
    cache.utterances                                   # DataFrame, one row per utterance
    cache.streams["ssl"].layers                        # [24]
    x = cache.frames("ssl", "Ses01F_impro01_F000")     # (frames, 1024) float16
    X = cache.pooled("ssl", layer=12)                  # (n_utt, 1024), ready for scikit-learn
    frames, offsets = cache.load("ssl", ids)           # a whole fold, one contiguous array

:class:`FeatureStore` is the face of four parts, one job each: the shard catalogue
(:mod:`~sercache.store.catalog`), the I/O engine (:mod:`~sercache.store.io_engine`), integrity
checks (:mod:`~sercache.store.integrity`) and the explanation of failed lookups
(:mod:`~sercache.store.explain`). What a stream's fields mean (ASR transcripts and WER, for one)
is the features side's: see :mod:`sercache.features.asr_report`.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sercache._typing import Pathlike
from sercache.store.catalog import Catalog, StreamInfo, read_catalog
from sercache.store.errors import CacheKeyError, CacheValueError
from sercache.store.explain import checked_stream, frame_field, missing_utterance
from sercache.store.integrity import RowChecksums
from sercache.store.io_engine import RAW_PIECE, READ_THREADS, ReadEngine
from sercache.store.streamfile import PER_UTT, FileIndex

__all__ = ["RAW_PIECE", "READ_THREADS", "FeatureStore", "StreamInfo", "open_cache"]


def open_cache(path: Pathlike) -> FeatureStore:
    """Open a cache directory written by ``sercache extract``."""
    return FeatureStore(path)


class FeatureStore:
    """All shards of a cache, presented as one.

    Only finished streams are visible: work still under ``.staging`` is listed in
    :attr:`streams` (``in_progress``) but never read.
    """

    def __init__(self, path: Pathlike) -> None:
        self._attach(read_catalog(path), ReadEngine())

    def _attach(self, catalog: Catalog, io: ReadEngine) -> None:
        self._catalog = catalog
        self.path: Path = catalog.path
        self.shards: list[str] = catalog.shards
        #: ``sercache.json``: the shards and the streams asked of each (empty if damaged)
        self.registry: dict[str, Any] = catalog.registry
        #: every shard's manifest rows, one per utterance, with a ``shard`` column
        self.utterances: pd.DataFrame = catalog.utterances
        self.streams: dict[str, StreamInfo] = catalog.streams
        #: every recorded problem: the manifests' (``stream`` "") and each stream file's
        self.errors: pd.DataFrame = catalog.errors
        self._index: dict[str, list[FileIndex]] = catalog.index
        self._io = io
        self._checksums = RowChecksums()
        self._where: dict[str, dict[str, tuple[int, int]]] = {}

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, {len(self.utterances)} utterances, shards={self.shards}, "
                f"streams={list(self.streams)})")

    # ------------------------------------------------------------------ lookup
    def stream_info(self, stream: str) -> StreamInfo:
        """``streams[stream]`` where it can be read; raises naming the fix if unknown, unfinished or inconsistent."""
        return checked_stream(self._catalog, stream)

    def _locate(self, stream: str) -> dict[str, tuple[int, int]]:
        if stream not in self._where:
            checked_stream(self._catalog, stream, finished=False)
            self._where[stream] = {u: (k, i) for k, ix in enumerate(self._index.get(stream, []))
                                   for i, u in enumerate(ix.utt_ids)}
        return self._where[stream]

    def _positions(self, stream: str, utt_ids: Sequence[str]) -> list[tuple[int, int]]:
        """(shard index, row) of each utterance in ``stream``; a missing one raises with the reason."""
        where = self._locate(stream)
        missing = next((u for u in utt_ids if u not in where), None)
        if missing is not None:
            raise missing_utterance(self._catalog, stream, missing)
        return [where[u] for u in utt_ids]

    def utt_ids(self, stream: str) -> list[str]:
        """Utterances that have ``stream`` features, in :attr:`utterances` order."""
        where = self._locate(stream)
        return [u for u in self.utterances.utt_id if u in where]

    def _field_name(self, stream: str, layer: int | None, name: str | None) -> str:
        return frame_field(checked_stream(self._catalog, stream), layer, name)

    # ------------------------------------------------------------------ reads
    def frames(self, stream: str, utt_id: str, layer: int | None = None, *, name: str | None = None) -> np.ndarray:
        """One utterance's frames ``(frames, dim)``; ``name`` reads another ragged field (``token``)."""
        field_name = self._field_name(stream, layer, name)
        k, i = self._positions(stream, [utt_id])[0]
        ix = self._index[stream][k]
        ds = self._io.frames(ix.path, field_name)
        a, b = ix.offsets[i], ix.offsets[i + 1]
        return ds.asstr()[a:b] if ds.dtype.kind == "O" else ds[a:b]

    def frame_counts(self, stream: str, utt_ids: Sequence[str]) -> np.ndarray:
        """Frames (or tokens) stored for each of ``utt_ids`` in ``stream``: size an ``out`` buffer for :meth:`load`."""
        indexes = self._index[stream]
        return np.array([indexes[k].lengths[i] for k, i in self._positions(stream, utt_ids)], dtype=np.int64)

    def load(self, stream: str, utt_ids: Sequence[str], layer: int | None = None, *, name: str | None = None,
             verify: bool = False, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Frames of many utterances as one contiguous array plus offsets.

        Utterance ``utt_ids[i]`` is ``frames[offsets[i]:offsets[i+1]]``. Runs of utterances
        stored next to each other are read straight into the output buffer, in pieces that
        several threads read at once (a fold loads at the speed of the disk or page cache).

        Args:
            verify: recompute each utterance's CRC-32 and raise CacheCorruptError on a mismatch.
            out: a C-contiguous array to fill instead of allocating one, shaped
                ``(frame_counts(...).sum(), dim)`` with the stored dtype (e.g. one layer's slice of a
                preallocated ``(layers, total, dim)`` block, so a fold is never held twice).

        Returns:
            ``(frames (total, dim), offsets (n + 1,) int64)``.
        """
        field_name = self._field_name(stream, layer, name)
        locs = self._positions(stream, utt_ids)
        indexes = self._index[stream]
        lengths = np.array([indexes[k].lengths[i] for k, i in locs], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        if not locs:
            return self._io.empty(indexes, field_name), offsets
        first = self._io.frames(indexes[locs[0][0]].path, field_name)
        text = first.dtype.kind == "O"
        shape, dtype = (int(offsets[-1]), *first.shape[1:]), np.dtype(object if text else first.dtype)
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
            raise CacheValueError(f"out= must be a writeable C-contiguous {dtype} array of shape {shape} for these "
                                  f"{len(locs)} utterances of {stream!r}; got {out.dtype} {out.shape}")
        self._io.read_rows(indexes, locs, offsets, field_name, out)
        if verify:
            self._checksums.verify(self._io, self.path, indexes, field_name, utt_ids, locs, out, offsets)
        return out, offsets

    def per_utterance(self, stream: str, name: str, utt_ids: Iterable[str] | None = None) -> np.ndarray:
        """A per-utterance field (``pooled_mean``, ``text``, ``wer``...) for ``utt_ids`` (default: all)."""
        info = checked_stream(self._catalog, stream)
        if name not in info.per_utterance_fields:
            raise CacheKeyError(f"stream {stream!r} has no per-utterance field {name!r}; fields: {info.per_utterance_fields}")
        ids = self.utt_ids(stream) if utt_ids is None else list(utt_ids)
        if not ids:  # keep the field's dtype and trailing shape, so an empty selection still indexes
            dtype, tail = next(ix.schema.per_utterance[name] for ix in self._index[stream]
                               if name in ix.schema.per_utterance)
            return np.empty((0, *tail), dtype=dtype)
        locs = np.array(self._positions(stream, ids), dtype=np.int64)  # (shard file, row) per utterance
        cols: dict[int, np.ndarray] = {}
        for k in np.unique(locs[:, 0]):
            ds = self._io.file(self._index[stream][int(k)].path)[PER_UTT][name]
            cols[int(k)] = ds.asstr()[()] if ds.dtype.kind == "O" else ds[()]
        # one fancy-indexing gather per shard file (a Python loop per utterance cost 0.5 s at 160k utterances)
        first = next(iter(cols.values()))
        text = first.dtype == object
        out = np.empty((len(ids), *first.shape[1:]),
                       dtype=object if text else np.result_type(*[c.dtype for c in cols.values()]))
        for k, col in cols.items():
            mask = locs[:, 0] == k
            out[mask] = col[locs[mask, 1]]
        return out

    def pooled(self, stream: str, layer: int | None = None, how: str = "mean",
               utt_ids: Iterable[str] | None = None) -> np.ndarray:
        """Utterance-level statistics ``(n_utt, dim)`` float32 of any layer (all layers are pooled).

        Args:
            how: ``"mean"``, ``"std"`` or ``"meanstd"`` (the two concatenated, ``2 * dim``).
            utt_ids: rows to return, in order (default: :meth:`utt_ids`).
        """
        info = checked_stream(self._catalog, stream)
        if how not in ("mean", "std", "meanstd"):
            raise CacheValueError(f"how={how!r}: use 'mean', 'std' or 'meanstd'")
        if not info.pooled_layers:
            raise CacheKeyError(f"stream {stream!r} has no pooled statistics")
        layer = info.pooled_layers[-1] if layer is None else int(layer)
        if layer not in info.pooled_layers:
            raise CacheKeyError(f"layer {layer} is not pooled in stream {stream!r} (pooled: {info.pooled_layers})")
        li = info.pooled_layers.index(layer)
        if how == "meanstd":
            return np.concatenate([self.pooled(stream, layer, "mean", utt_ids),
                                   self.pooled(stream, layer, "std", utt_ids)], axis=1)
        return self.per_utterance(stream, f"pooled_{how}", utt_ids)[:, li].astype(np.float32)

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        self._io.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # joblib workers reopen files lazily (ReadEngine.__getstate__)
        return self.__dict__.copy()
