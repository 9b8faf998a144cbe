"""Streaming, resumable writes of one stream of one shard.

Extraction output goes into small segment files under ``.staging/<stream>/``, each holding
whole batches and each written atomically. Memory stays flat (a segment is flushed every
``flush_bytes`` or ``flush_seconds``), and an interrupted run loses at most the batches not
yet flushed. When every planned utterance is stored or recorded as failed, :meth:`finalize`
compacts the segments into ``<stream>.h5`` in manifest order, atomically, and removes the
staging directory.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from sercache import __version__
from sercache._typing import Pathlike
from sercache.store.atomic import TMP_SUFFIX, atomic_h5, write_text_atomic
from sercache.store.errors import CacheError, DiskFullError, StaleCacheError
from sercache.store.layout import FORMAT_VERSION, remove_staging, staging_dir, stream_path
from sercache.store.provenance import describe_difference, identity_of
from sercache.store.records import ExtractionProblem, UtteranceFeatures, problems_frame
from sercache.store.staging import read_staged
from sercache.store.streamfile import (
    CHECKSUMS,
    FRAMES,
    PER_UTT,
    PROBLEMS,
    STREAM_FORMAT,
    FileIndex,
    Schema,
    read_index,
    schema_of_records,
    set_attrs,
    write_records,
)
from sercache.store.tables import STR, as_str_array, write_table

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"


class StreamWriter:
    """Collect one stream of one shard; resume from staged segments; publish atomically.

    Args:
        cache: the cache directory.
        shard: shard name (``Session1``).
        stream: stream name (``ssl``, ``text_asr``, ``wavlm_large`` ...).
        provenance: ``{"identity": {...}, "details": {...}}``. Staged work made with another
            identity is refused (or discarded when ``overwrite``).
        expected_ids: every utterance of the shard, in manifest order; the final file keeps
            this order.
        overwrite: discard staged work whose identity differs instead of refusing.
        flush_bytes: flush a segment once this many bytes are buffered.
        flush_seconds: ... or once this much time has passed since the last flush.
    """

    def __init__(self, cache: Pathlike, shard: str, stream: str, provenance: dict[str, Any],
                 expected_ids: list[str], *, overwrite: bool = False, flush_bytes: int = 64 << 20,
                 flush_seconds: float = 30.0) -> None:
        self.cache, self.shard, self.stream = Path(cache), shard, stream
        self.provenance = provenance
        self.expected_ids = list(expected_ids)
        self.flush_bytes, self.flush_seconds = flush_bytes, flush_seconds
        self.final_path = stream_path(cache, shard, stream)
        self.staging = staging_dir(cache, shard, stream)
        self._buffer: list[UtteranceFeatures] = []
        self._buffer_problems: list[ExtractionProblem] = []
        self._buffer_bytes = 0
        self._last_flush = time.monotonic()
        self._prepare_staging(overwrite)
        staged = read_staged(self.staging, drop_unreadable=True)
        self._segments = staged.segments
        self.done_ids: set[str] = staged.done_ids
        self.failed_ids: set[str] = staged.failed_ids
        self._schema = staged.schema
        if self._segments:
            log.info("%s/%s: resuming from %d staged utterances (%d failed) in %d segment(s)", shard, stream,
                     len(self.done_ids), len(self.failed_ids - self.done_ids), len(self._segments))

    # ------------------------------------------------------------------ staging
    def _prepare_staging(self, overwrite: bool) -> None:
        prov_file = self.staging / PROVENANCE_FILE
        if prov_file.exists():
            staged = json.loads(prov_file.read_text())
            diff = describe_difference(identity_of(staged), identity_of(self.provenance))
            if diff and not overwrite:
                raise StaleCacheError(
                    f"{self.staging} holds unfinished work on stream {self.stream!r} made with other settings "
                    f"({diff}). Rerun with the original settings to resume it, pass --overwrite to discard it, "
                    f"or give this stream a new name with --stream-name."
                )
            if diff:
                log.warning("discarding unfinished %s work in %s (%s)", self.stream, self.staging, diff)
                shutil.rmtree(self.staging)
        self.staging.mkdir(parents=True, exist_ok=True)
        for tmp in self.staging.glob(f"*{TMP_SUFFIX}"):  # a segment torn by a kill: never published
            tmp.unlink()
        if not prov_file.exists():
            write_text_atomic(prov_file, json.dumps(self.provenance, indent=1, sort_keys=True))

    @property
    def remaining_ids(self) -> list[str]:
        return [u for u in self.expected_ids if u not in self.done_ids and u not in self.failed_ids]

    # ------------------------------------------------------------------ writing
    def add(self, record: UtteranceFeatures) -> None:
        if record.utt_id in self.done_ids:
            raise CacheError(f"{record.utt_id} is already stored in stream {self.stream!r} of {self.shard}")
        self._buffer.append(record)
        self._buffer_bytes += record.nbytes

    def add_problem(self, problem: ExtractionProblem) -> None:
        self._buffer_problems.append(problem)

    def end_batch(self) -> None:
        """Call after each batch: segments always hold whole batches (byte-identical resume)."""
        due = time.monotonic() - self._last_flush >= self.flush_seconds
        if self._buffer_bytes >= self.flush_bytes or (due and (self._buffer or self._buffer_problems)):
            self.flush()

    def flush(self) -> None:
        if not self._buffer and not self._buffer_problems:
            return
        seg = self.staging / f"seg-{len(self._segments) + 1:06d}.h5"
        while seg.exists():  # never overwrite a published segment
            seg = seg.with_name(f"seg-{int(seg.stem[4:]) + 1:06d}.h5")
        records, problems = self._buffer, self._buffer_problems
        schema = schema_of_records(records)
        if not self._schema.empty and not schema.empty and schema.describe() != self._schema.describe():
            raise CacheError(f"stream {self.stream!r} of {self.shard}: new features have layout {schema.describe()}, "
                             f"staged ones {self._schema.describe()}")
        ensure_free_space(self.staging, 2 * self._buffer_bytes, f"staging {len(records)} utterances of stream "
                          f"{self.stream!r}", f"Everything flushed before is kept in {self.staging}")
        try:
            with atomic_h5(seg) as f:
                write_records(f, records, problems, {"format": STREAM_FORMAT, "segment": True})
        except (OSError, RuntimeError) as exc:  # h5py reports a full disk as either
            raise CacheError(
                f"writing {seg} failed: {exc}. Everything flushed before is kept in {self.staging}; "
                "fix the cause (disk space?) and rerun the same command to resume."
            ) from exc
        if self._schema.empty:
            self._schema = schema
        self._segments.append(seg)
        log.debug("%s/%s: staged %d utterances (%d problems, %.1f MB) in %s", self.shard, self.stream, len(records),
                  len(problems), self._buffer_bytes / 2**20, seg.name)
        self.done_ids.update(r.utt_id for r in records)
        self.failed_ids.update(p.utt_id for p in problems if p.severity == "error")
        self._buffer, self._buffer_problems, self._buffer_bytes = [], [], 0
        self._last_flush = time.monotonic()

    # ------------------------------------------------------------------ compaction
    def finalize(self, extra_attrs: dict[str, Any] | None = None) -> Path:
        """Compact staged segments into ``<stream>.h5`` (manifest order) and drop the staging."""
        self.flush()
        missing = self.remaining_ids
        if missing:
            raise CacheError(f"stream {self.stream!r} of {self.shard} is not finished: {len(missing)} utterances "
                             f"left (first: {missing[0]})")
        indexes = []
        for seg in self._segments:
            with h5py.File(seg, "r", locking=False) as f:
                indexes.append(read_index(f, seg))
        attrs = {
            "format": STREAM_FORMAT, "format_version": FORMAT_VERSION, "stream": self.stream, "shard": self.shard,
            "provenance": self.provenance, "complete": True, "n_expected": len(self.expected_ids),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "sercache_version": __version__,
        }
        attrs.update(extra_attrs or {})
        staged = sum(seg.stat().st_size for seg in self._segments)
        ensure_free_space(self.final_path.parent, staged, f"compacting stream {self.stream!r} of {self.shard}",
                          f"The staged work in {self.staging} is kept")
        try:
            compact(indexes, self.final_path, self.expected_ids, attrs)
        except (OSError, RuntimeError) as exc:
            raise CacheError(f"writing {self.final_path} failed: {exc}. The staged work in {self.staging} is kept; "
                             "fix the cause (disk space?) and rerun the same command to finish.") from exc
        remove_staging(self.staging)
        return self.final_path


#: Kept free beyond what a write needs: HDF5 metadata, and room for everything else on the disk.
FREE_SPACE_RESERVE = 64 << 20


def ensure_free_space(directory: Path, needed: int, what: str, kept: str) -> None:
    """Refuse a write that would fill the disk: HDF5 can crash outright on ENOSPC (we saw segfaults),
    so the only safe full-disk error is the one raised before writing."""
    probe = Path(directory)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed + FREE_SPACE_RESERVE:
        raise DiskFullError(f"{what} needs about {(needed + FREE_SPACE_RESERVE) / 2**20:.0f} MB free on the disk of "
                            f"{directory}, and {free / 2**20:.0f} MB are. {kept}; free some space and rerun the same "
                            "command to resume.")


def compact(indexes: list[FileIndex], out: Path, order: list[str], attrs: dict[str, Any]) -> None:
    """Merge segment files into one contiguous stream file whose rows follow ``order``."""
    where: dict[str, tuple[int, int]] = {}
    for s, index in enumerate(indexes):
        for i, u in enumerate(index.utt_ids):
            if u in where:
                log.warning("%s is stored twice in %s staging; keeping the first copy", u, out.name)
                continue
            where[u] = (s, i)
    final_ids = [u for u in order if u in where]
    if len(final_ids) != len(where):
        extra = sorted(set(where) - set(order))[:3]
        raise CacheError(f"staged work for {out} holds utterances outside this shard's manifest, e.g. {extra}")
    position = {u: k for k, u in enumerate(final_ids)}
    lengths = np.array([indexes[where[u][0]].lengths[where[u][1]] for u in final_ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    schema = next((ix.schema for ix in indexes if ix.utt_ids), Schema())
    problems = [ix.problems for ix in indexes if len(ix.problems)]
    problem_table = (problems_frame([]) if not problems else
                     pd.concat(problems, ignore_index=True).sort_values("utt_id", kind="stable"))
    n, total = len(final_ids), int(offsets[-1])
    with atomic_h5(out) as f:
        f.create_dataset("utt_ids", data=as_str_array(final_ids), dtype=STR)
        f.create_dataset("offsets", data=offsets)
        for kind in (FRAMES, PER_UTT):
            f.create_group(kind)
            f.create_group(f"{CHECKSUMS}/{kind}")
        for name, (dtype, tail) in schema.frames.items():
            f[FRAMES].create_dataset(name, shape=(total, *tail), dtype=STR if dtype.kind == "O" else dtype)
            f[f"{CHECKSUMS}/{FRAMES}"].create_dataset(name, shape=(n,), dtype=np.uint32)
        for name, (dtype, tail) in schema.per_utterance.items():
            f[PER_UTT].create_dataset(name, shape=(n, *tail), dtype=STR if dtype.kind == "O" else dtype)
            f[f"{CHECKSUMS}/{PER_UTT}"].create_dataset(name, shape=(n,), dtype=np.uint32)
        for s, index in enumerate(indexes):
            local = [i for i, u in enumerate(index.utt_ids) if where.get(u) == (s, i)]
            if not local:
                continue
            targets = np.array([position[index.utt_ids[i]] for i in local])
            by_target = np.argsort(targets)  # h5py fancy writes need increasing indices
            with h5py.File(index.path, "r", locking=False) as seg:
                for name in schema.frames:
                    data = seg[FRAMES][name]
                    data = data.asstr()[()] if data.dtype.kind == "O" else data[()]
                    dest = f[FRAMES][name]
                    for i, t in zip(local, targets):
                        a, b = index.offsets[i], index.offsets[i + 1]
                        if b > a:
                            dest[offsets[t]:offsets[t + 1]] = data[a:b]
                    _fancy_write(f[f"{CHECKSUMS}/{FRAMES}"][name], seg[f"{CHECKSUMS}/{FRAMES}"][name][()],
                                 local, targets, by_target)
                for name in schema.per_utterance:
                    src = seg[PER_UTT][name]
                    data = src.asstr()[()] if src.dtype.kind == "O" else src[()]
                    _fancy_write(f[PER_UTT][name], data, local, targets, by_target)
                    _fancy_write(f[f"{CHECKSUMS}/{PER_UTT}"][name], seg[f"{CHECKSUMS}/{PER_UTT}"][name][()],
                                 local, targets, by_target)
        write_table(f, PROBLEMS, problem_table)
        attrs = dict(attrs, n_stored=n, n_failed=int((problem_table.severity == "error").sum()),
                     schema=schema.describe())
        set_attrs(f, attrs)


def _fancy_write(dest, data: np.ndarray, local: list[int], targets: np.ndarray, by_target: np.ndarray) -> None:  # noqa: ANN001
    rows = data[np.asarray(local)[by_target]]
    dest[targets[by_target]] = rows if rows.dtype != object else as_str_array(rows)
