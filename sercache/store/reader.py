"""Read a cache: one object over all shards, with numpy + h5py + pandas only.

Example::

    import sercache
    cache = sercache.open_cache("cache/")
    cache.utterances                                   # DataFrame, one row per utterance
    cache.streams["ssl"].layers                        # [24]
    x = cache.frames("ssl", "Ses01F_impro01_F000")     # (frames, 1024) float16
    X = cache.pooled("ssl", layer=12)                  # (n_utt, 1024), ready for scikit-learn
    frames, offsets = cache.load("ssl", ids)           # a whole fold, one contiguous array
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from sercache._typing import Pathlike
from sercache.store.errors import CacheCorruptError, CacheError, IncompleteStreamError
from sercache.store.layout import list_shards, list_staging, list_stream_files, manifest_path
from sercache.store.manifest import read_manifest, read_registry
from sercache.store.provenance import describe_difference, identity_of
from sercache.store.records import checksum
from sercache.store.streamfile import CHECKSUMS, FRAMES, H5_READ_ERRORS, PER_UTT, FileIndex, read_index

log = logging.getLogger(__name__)

RAW_PIECE = 32 << 20  # bytes per parallel read
READ_THREADS = min(4, os.cpu_count() or 1)


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


def open_cache(path: Pathlike) -> FeatureStore:
    """Open a cache directory written by ``sercache extract``."""
    return FeatureStore(path)


class FeatureStore:
    """All shards of a cache, presented as one.

    Only finished streams are visible: work still under ``.staging`` is listed in
    :attr:`streams` (``in_progress``) but never read.
    """

    def __init__(self, path: Pathlike) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise CacheError(f"{self.path} is not a directory; give the --out folder of `sercache extract`")
        self.shards = list_shards(self.path)
        if not self.shards:
            raise CacheError(f"{self.path} holds no shard (no */utterances.h5): is it a sercache cache? "
                             "Create one with `sercache extract ROOT --corpus ... --out " f"{self.path}`")
        try:
            self.registry = read_registry(self.path)
        except CacheCorruptError as exc:  # the registry is bookkeeping: the features stay readable
            log.warning("%s", exc)
            self.registry = {"shards": {}}
        tables, problems = [], []
        for shard in self.shards:
            try:
                table, probs, _ = read_manifest(self.path, shard)
            except H5_READ_ERRORS as exc:
                raise CacheCorruptError(
                    f"{manifest_path(self.path, shard)} cannot be read ({str(exc).splitlines()[0]}): re-extract "
                    f"shard {shard} with --overwrite, or move its folder out of the cache.") from exc
            tables.append(table.assign(shard=shard))
            problems.append(probs.assign(shard=shard, stream=""))
        self.utterances: pd.DataFrame = pd.concat(tables, ignore_index=True)
        dup = self.utterances.utt_id[self.utterances.utt_id.duplicated(keep=False)]
        if len(dup):
            u = dup.iloc[0]
            where = self.utterances.loc[self.utterances.utt_id == u, "shard"].tolist()
            raise CacheError(f"utterance {u} is in several shards of {self.path}: {where}. Shards of one cache "
                             "must be disjoint: remove the stray shard folder, or extract into a new cache.")
        self._files: dict[Path, h5py.File] = {}
        self._index: dict[str, list[FileIndex]] = {}
        for shard in self.shards:
            for name, p in list_stream_files(self.path, shard).items():
                try:
                    with h5py.File(p, "r", locking=False) as f:
                        self._index.setdefault(name, []).append(read_index(f, p))
                except H5_READ_ERRORS as exc:  # h5py's message does not name the file
                    raise CacheCorruptError(
                        f"{p} cannot be read ({str(exc).splitlines()[0]}): the file is truncated or damaged. Run "
                        f"`sercache cache verify {self.path}`, then re-extract stream {name!r} of shard {shard} "
                        "with --overwrite (or move the file away to read the other streams).") from exc
        self._where: dict[str, dict[str, tuple[int, int]]] = {}
        self._checksums: dict[tuple[Path, str], np.ndarray] = {}
        self._raw: dict[tuple[Path, str], tuple[int, int, int] | None] = {}
        self._fds: dict[Path, int] = {}
        self._pool: ThreadPoolExecutor | None = None
        self.streams: dict[str, StreamInfo] = {n: self._describe(n) for n in sorted(self._names())}
        stream_problems = [ix.problems.assign(shard=ix.attrs.get("shard", ix.path.parent.name), stream=name)
                           for name, ixs in self._index.items() for ix in ixs]
        self.errors: pd.DataFrame = pd.concat(problems + stream_problems, ignore_index=True)

    # ------------------------------------------------------------------ description
    def _names(self) -> set[str]:
        names = set(self._index)
        for shard in self.shards:
            names.update(list_staging(self.path, shard))
        return names

    def _describe(self, name: str) -> StreamInfo:
        indexes = self._index.get(name, [])
        done = [ix.attrs.get("shard", ix.path.parent.name) for ix in indexes]
        in_progress = [s for s in self.shards if name in list_staging(self.path, s) and s not in done]
        missing = [s for s in self.shards if s not in done]
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

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.path)!r}, {len(self.utterances)} utterances, shards={self.shards}, "
                f"streams={list(self.streams)})")

    # ------------------------------------------------------------------ lookup
    def _stream(self, stream: str, *, finished: bool = True) -> StreamInfo:
        if stream not in self.streams:
            raise KeyError(f"no stream {stream!r} in {self.path}; streams here: {sorted(self.streams) or 'none'}")
        info = self.streams[stream]
        if finished and not info.shards:  # staged work only: no layer or field can be read yet
            raise IncompleteStreamError(
                f"stream {stream!r} is not finished in any shard of {self.path} (in progress: "
                f"{', '.join(info.in_progress) or 'none'}). Rerun the extract command to resume it.")
        if info.inconsistent:
            raise CacheError(info.inconsistent + ". Re-extract the odd shard with the same settings (--overwrite), "
                             "or use a different --stream-name for the other model.")
        return info

    def _locate(self, stream: str) -> dict[str, tuple[int, int]]:
        if stream not in self._where:
            self._stream(stream, finished=False)
            self._where[stream] = {u: (k, i) for k, ix in enumerate(self._index.get(stream, []))
                                   for i, u in enumerate(ix.utt_ids)}
        return self._where[stream]

    def _file(self, path: Path) -> h5py.File:
        if path not in self._files:
            self._files[path] = h5py.File(path, "r", locking=False)
        return self._files[path]

    def _missing(self, stream: str, utt_id: str) -> Exception:
        row = self.utterances.loc[self.utterances.utt_id == utt_id]
        if row.empty:
            return KeyError(f"unknown utterance id {utt_id!r} in {self.path}")
        shard = row.shard.iloc[0]
        info = self.streams[stream]
        if shard not in info.shards:
            return IncompleteStreamError(
                f"{utt_id}: shard {shard} has no finished {stream!r} stream"
                f"{' (extraction in progress or interrupted)' if shard in info.in_progress else ''}. "
                f"Run `sercache extract ... --out {self.path}` for that shard to finish it.")
        err = self.errors[(self.errors.utt_id == utt_id) & (self.errors.stream.isin(["", stream]))]
        # the error that kept it out of this stream, not an earlier manifest-level warning about it
        err = err.sort_values("severity", key=lambda s: s != "error", kind="stable")
        reason = err.reason.iloc[0] if len(err) else "not stored"
        return IncompleteStreamError(f"{utt_id} has no {stream!r} features: {reason} (see `sercache cache info`)")

    def _positions(self, stream: str, utt_ids: Sequence[str]) -> list[tuple[int, int]]:
        """(shard index, row) of each utterance in ``stream``; a missing one raises with the reason."""
        where = self._locate(stream)
        missing = next((u for u in utt_ids if u not in where), None)
        if missing is not None:
            raise self._missing(stream, missing)
        return [where[u] for u in utt_ids]

    def utt_ids(self, stream: str) -> list[str]:
        """Utterances that have ``stream`` features, in :attr:`utterances` order."""
        where = self._locate(stream)
        return [u for u in self.utterances.utt_id if u in where]

    def _field_name(self, stream: str, layer: int | None, name: str | None) -> str:
        info = self._stream(stream)
        if name is not None:
            if name not in info.frame_fields:
                raise KeyError(f"stream {stream!r} has no frame field {name!r}; fields: {info.frame_fields}")
            return name
        if not info.layers:
            raise KeyError(f"stream {stream!r} ({info.kind}) stores no feature layers; fields: {info.frame_fields}")
        layer = info.default_layer if layer is None else int(layer)
        if layer not in info.layers:
            hint = (f"; pooled statistics exist for layers {info.pooled_layers} (use .pooled)"
                    if layer in info.pooled_layers else "")
            raise KeyError(f"layer {layer} is not stored frame-by-frame in stream {stream!r} (stored: {info.layers})"
                           f"{hint}; re-extract with --layers {layer} (and --overwrite or a new --stream-name)")
        return f"layer_{layer}"

    # ------------------------------------------------------------------ reads
    def frames(self, stream: str, utt_id: str, layer: int | None = None, *, name: str | None = None) -> np.ndarray:
        """One utterance's frames ``(frames, dim)``; ``name`` reads another ragged field (``token``)."""
        field_name = self._field_name(stream, layer, name)
        where = self._locate(stream)
        if utt_id not in where:
            raise self._missing(stream, utt_id)
        k, i = where[utt_id]
        ix = self._index[stream][k]
        ds = self._file(ix.path)[FRAMES][field_name]
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
            ds0 = next((self._file(ix.path)[FRAMES][field_name] for ix in indexes if field_name in ix.schema.frames),
                       None)
            shape = (0, *(ds0.shape[1:] if ds0 is not None else ()))
            return np.empty(shape, dtype=(ds0.dtype if ds0 is not None else np.float32)), offsets
        first = self._file(indexes[locs[0][0]].path)[FRAMES][field_name]
        text = first.dtype.kind == "O"
        shape, dtype = (int(offsets[-1]), *first.shape[1:]), np.dtype(object if text else first.dtype)
        if out is None:
            out = np.empty(shape, dtype=dtype)
        elif out.shape != shape or out.dtype != dtype or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"out= must be a writeable C-contiguous {dtype} array of shape {shape} for these "
                             f"{len(locs)} utterances of {stream!r}; got {out.dtype} {out.shape}")
        raw_reads: list[tuple[int, int, memoryview]] = []
        start = 0
        while start < len(locs):
            k, i = locs[start]
            stop = start + 1
            while stop < len(locs) and locs[stop] == (k, i + stop - start):
                stop += 1
            ix = indexes[k]
            a, b = int(ix.offsets[i]), int(ix.offsets[i + stop - start])
            if b > a:
                region = None if text else self._raw_region(ix.path, field_name, out.dtype)
                if region is not None:
                    fd, base, row_bytes = region
                    dest = memoryview(out[offsets[start]:offsets[stop]]).cast("B")
                    raw_reads += [(fd, base + a * row_bytes + p, dest[p:p + RAW_PIECE])
                                  for p in range(0, len(dest), RAW_PIECE)]
                else:
                    ds = self._file(ix.path)[FRAMES][field_name]
                    if text:
                        out[offsets[start]:offsets[stop]] = ds.asstr()[a:b]
                    else:
                        ds.read_direct(out, np.s_[a:b], np.s_[offsets[start]:offsets[stop]])
            start = stop
        self._read_raw(raw_reads)
        if verify:
            self._verify_rows(stream, field_name, utt_ids, locs, out, offsets)
        return out, offsets

    def _raw_region(self, path: Path, field_name: str, dtype: np.dtype) -> tuple[int, int, int] | None:
        """``(fd, byte offset of row 0, bytes per row)`` of a contiguous, uncompressed dataset, else None.

        Finished stream files are written once and never modified (a rewrite replaces the file
        by rename, and an open descriptor keeps the old inode), so the dataset's bytes can be
        read straight from its file offset. This bypasses HDF5's single global lock and lets
        several threads fill the output at once.
        """
        key = (path, field_name)
        if key not in self._raw:
            ds = self._file(path)[FRAMES][field_name]
            offset = None
            if ds.chunks is None and ds.compression is None and ds.dtype == dtype and ds.dtype.isnative:
                offset = ds.id.get_offset()
            if offset is None:
                self._raw[key] = None
            else:
                if path not in self._fds:
                    self._fds[path] = os.open(path, os.O_RDONLY)
                row_bytes = int(np.prod(ds.shape[1:], dtype=np.int64)) * ds.dtype.itemsize
                self._raw[key] = (self._fds[path], int(offset), row_bytes)
        return self._raw[key]

    def _read_raw(self, reads: list[tuple[int, int, memoryview]]) -> None:
        """Fill each destination from its file offset; several threads when there is much to read."""
        def fill(job: tuple[int, int, memoryview]) -> None:
            fd, offset, dest = job
            done = 0
            while done < len(dest):
                n = os.preadv(fd, [dest[done:]], offset + done)
                if n <= 0:
                    raise CacheCorruptError(f"unexpected end of file reading cached frames (fd {fd}, offset "
                                            f"{offset + done}): the file is truncated; run `sercache cache verify`")
                done += n

        if sum(len(d) for _, _, d in reads) < 4 * RAW_PIECE or READ_THREADS < 2:
            for job in reads:
                fill(job)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sercache-read")
        list(self._pool.map(fill, reads))

    def _stored_checksums(self, stream: str, ix: FileIndex, kind: str, field_name: str) -> np.ndarray:
        key = (ix.path, f"{kind}/{field_name}")
        if key not in self._checksums:
            self._checksums[key] = self._file(ix.path)[f"{CHECKSUMS}/{kind}/{field_name}"][()]
        return self._checksums[key]

    def _verify_rows(self, stream: str, field_name: str, utt_ids: Sequence[str], locs: list[tuple[int, int]],
                     out: np.ndarray, offsets: np.ndarray) -> None:
        expected = np.array([self._stored_checksums(stream, self._index[stream][k], FRAMES, field_name)[i]
                             for k, i in locs], dtype=np.uint32)
        rows = [out[offsets[j]:offsets[j + 1]] for j in range(len(locs))]
        if out.nbytes >= 4 * RAW_PIECE and READ_THREADS > 1 and out.dtype != object:  # zlib releases the GIL
            if self._pool is None:
                self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sercache-read")
            actual = np.fromiter(self._pool.map(checksum, rows, chunksize=64), dtype=np.uint32, count=len(rows))
        else:
            actual = np.array([checksum(r) for r in rows], dtype=np.uint32)
        bad = np.flatnonzero(actual != expected)
        if len(bad):
            j = int(bad[0])
            ix = self._index[stream][locs[j][0]]
            shard = ix.attrs.get("shard", ix.path.parent.name)
            raise CacheCorruptError(
                f"{ix.path}: stored {field_name} frames of {utt_ids[j]} (shard {shard}) fail their checksum"
                f"{f' (and {len(bad) - 1} more utterances)' if len(bad) > 1 else ''}: the file is damaged. Run "
                f"`sercache cache verify {self.path}` to list all damage, then re-extract shard {shard} with "
                "--overwrite.")

    def per_utterance(self, stream: str, name: str, utt_ids: Iterable[str] | None = None) -> np.ndarray:
        """A per-utterance field (``pooled_mean``, ``text``, ``wer``...) for ``utt_ids`` (default: all)."""
        info = self._stream(stream)
        if name not in info.per_utterance_fields:
            raise KeyError(f"stream {stream!r} has no per-utterance field {name!r}; fields: {info.per_utterance_fields}")
        ids = self.utt_ids(stream) if utt_ids is None else list(utt_ids)
        if not ids:  # keep the field's dtype and trailing shape, so an empty selection still indexes
            dtype, tail = next(ix.schema.per_utterance[name] for ix in self._index[stream]
                               if name in ix.schema.per_utterance)
            return np.empty((0, *tail), dtype=dtype)
        locs = np.array(self._positions(stream, ids), dtype=np.int64)  # (shard file, row) per utterance
        cols: dict[int, np.ndarray] = {}
        for k in np.unique(locs[:, 0]):
            ds = self._file(self._index[stream][int(k)].path)[PER_UTT][name]
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
        info = self._stream(stream)
        if how not in ("mean", "std", "meanstd"):
            raise ValueError(f"how={how!r}: use 'mean', 'std' or 'meanstd'")
        if not info.pooled_layers:
            raise KeyError(f"stream {stream!r} has no pooled statistics")
        layer = info.pooled_layers[-1] if layer is None else int(layer)
        if layer not in info.pooled_layers:
            raise KeyError(f"layer {layer} is not pooled in stream {stream!r} (pooled: {info.pooled_layers})")
        li = info.pooled_layers.index(layer)
        if how == "meanstd":
            return np.concatenate([self.pooled(stream, layer, "mean", utt_ids),
                                   self.pooled(stream, layer, "std", utt_ids)], axis=1)
        return self.per_utterance(stream, f"pooled_{how}", utt_ids)[:, li].astype(np.float32)

    def transcripts(self, stream: str = "asr") -> pd.DataFrame:
        """The ASR hypotheses, with per-utterance WER where a gold transcript exists."""
        info = self._stream(stream)
        if info.kind != "asr":
            raise KeyError(f"stream {stream!r} is a {info.kind!r} stream, not an ASR stream")
        ids = self.utt_ids(stream)
        data = {"utt_id": ids}
        for name in info.per_utterance_fields:
            data[name] = self.per_utterance(stream, name, ids)
        df = pd.DataFrame(data)
        return df.merge(self.utterances[["utt_id", "shard", "session", "transcript"]], on="utt_id", how="left")

    def wer_by_shard(self, stream: str = "asr") -> pd.DataFrame:
        """Corpus-level WER per shard: total word errors / total reference words."""
        df = self.transcripts(stream)
        df = df[df.ref_words > 0]
        g = df.groupby("shard", sort=False)[["word_errors", "ref_words"]].sum()
        g["utterances"] = df.groupby("shard", sort=False).size()
        g["wer"] = g.word_errors / g.ref_words
        return g.reset_index()

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        for f in self._files.values():
            f.close()
        for fd in self._fds.values():
            os.close(fd)
        if self._pool is not None:
            self._pool.shutdown()
        self._files.clear()
        self._fds.clear()
        self._raw.clear()
        self._pool = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:  # joblib workers reopen files lazily
        state = self.__dict__.copy()
        state.update(_files={}, _fds={}, _raw={}, _pool=None)
        return state

