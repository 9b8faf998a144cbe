"""The reader's I/O engine: open stream files once, and fill an output buffer from many rows fast.

Runs of utterances stored next to each other become one region of the output; a region of an
uncompressed contiguous dataset is read with ``preadv`` straight from its file offset (HDF5 holds
one global lock, ``preadv`` none). Everything else (text, chunked or in-memory datasets) goes
through h5py.

A large read is cut into :data:`READ_STREAMS` contiguous spans of the output, each read in file
order by its own thread through its own open file description. Cold, that keeps several requests
in flight (what a virtual disk or a network filesystem needs for throughput) while every stream
stays sequential, so the kernel's readahead, kept per open file, ramps up for each. Threads that
shared one descriptor and took 32 MB pieces in turn (the earlier engine) made each other's
accesses look random to readahead: 0.5-0.8x a raw sequential read cold (docs/benchmarks.md, "Cache reads").
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from sercache.store.errors import CacheCorruptError
from sercache.store.streamfile import FRAMES, FileIndex

RAW_PIECE = 32 << 20  # bytes per preadv call
READ_THREADS = min(4, os.cpu_count() or 1)  # CPU-bound work on the read threads (checksums)
#: sequential streams of one large read; they wait on I/O, so more than the cores
READ_STREAMS = 8

T = TypeVar("T")
R = TypeVar("R")
#: (file descriptor, file offset, destination bytes)
RawRead = tuple[int, int, memoryview]


def worth_threads(nbytes: int, threads: int | None = None) -> bool:
    """Whether ``nbytes`` of work is enough to pay for handing it to ``threads`` (the read threads)."""
    return nbytes >= 4 * RAW_PIECE and (READ_THREADS if threads is None else threads) > 1


class ReadEngine:
    """Open h5py files, raw descriptors and the read thread pool of one :class:`FeatureStore`.

    Args:
        files: files opened elsewhere (the in-memory store's), used as they are and not closed here.
        direct: read contiguous datasets with ``preadv``; off where there is no file to read from.
    """

    def __init__(self, files: dict[Path, h5py.File] | None = None, *, direct: bool = True) -> None:
        self._borrowed = dict(files or {})
        self._files: dict[Path, h5py.File] = dict(self._borrowed)
        self._fds: dict[Path, int] = {}
        self._raw: dict[tuple[Path, str], tuple[int, int, int] | None] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._stream_pool: ThreadPoolExecutor | None = None
        self.direct = direct

    def file(self, path: Path) -> h5py.File:
        if path not in self._files:
            self._files[path] = h5py.File(path, "r", locking=False)
        return self._files[path]

    def frames(self, path: Path, field_name: str) -> h5py.Dataset:
        return self.file(path)[FRAMES][field_name]

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1) -> Iterator[R]:
        """``fn`` over ``items`` on the read threads (for work that releases the GIL)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="sercache-read")
        return self._pool.map(fn, items, chunksize=chunksize)

    # ------------------------------------------------------------------ reads
    def empty(self, indexes: Sequence[FileIndex], field_name: str) -> np.ndarray:
        """A zero-row array with the field's dtype and trailing shape (float32 where no file has it)."""
        ds0 = next((self.frames(ix.path, field_name) for ix in indexes if field_name in ix.schema.frames), None)
        shape = (0, *(ds0.shape[1:] if ds0 is not None else ()))
        return np.empty(shape, dtype=(ds0.dtype if ds0 is not None else np.float32))

    def read_rows(self, indexes: Sequence[FileIndex], locs: Sequence[tuple[int, int]], offsets: np.ndarray,
                  field_name: str, out: np.ndarray) -> None:
        """Fill ``out[offsets[j]:offsets[j+1]]`` with row ``locs[j]`` = (file, utterance) of ``field_name``."""
        text = out.dtype == object
        raw_reads: list[RawRead] = []
        start = 0
        while start < len(locs):
            k, i = locs[start]
            stop = start + 1
            while stop < len(locs) and locs[stop] == (k, i + stop - start):
                stop += 1
            ix = indexes[k]
            a, b = int(ix.offsets[i]), int(ix.offsets[i + stop - start])
            if b > a:
                region = None if text else self.raw_region(ix.path, field_name, out.dtype)
                if region is not None:
                    fd, base, row_bytes = region
                    dest = memoryview(out[offsets[start]:offsets[stop]]).cast("B")
                    raw_reads += [(fd, base + a * row_bytes + p, dest[p:p + RAW_PIECE])
                                  for p in range(0, len(dest), RAW_PIECE)]
                else:
                    ds = self.frames(ix.path, field_name)
                    if text:
                        out[offsets[start]:offsets[stop]] = ds.asstr()[a:b]
                    else:
                        ds.read_direct(out, np.s_[a:b], np.s_[offsets[start]:offsets[stop]])
            start = stop
        self.read_raw(raw_reads)

    def raw_region(self, path: Path, field_name: str, dtype: np.dtype) -> tuple[int, int, int] | None:
        """``(fd, byte offset of row 0, bytes per row)`` of a contiguous, uncompressed dataset, else None.

        Finished stream files are written once and never modified (a rewrite replaces the file
        by rename, and an open descriptor keeps the old inode), so the dataset's bytes can be
        read straight from its file offset. This bypasses HDF5's single global lock and lets
        several threads fill the output at once.
        """
        if not self.direct:
            return None
        key = (path, field_name)
        if key not in self._raw:
            ds = self.frames(path, field_name)
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

    def read_raw(self, reads: list[RawRead]) -> None:
        """Fill each destination from its file offset: in sequential streams when there is much to read.

        ``reads`` come in output order, so consecutive ones continue each other in the same file.
        """
        if not worth_threads(sum(len(d) for _, _, d in reads), READ_STREAMS):
            read_span(reads, reopen=False)
            return
        spans = split_spans(reads, READ_STREAMS)
        if self._stream_pool is None:
            self._stream_pool = ThreadPoolExecutor(READ_STREAMS, thread_name_prefix="sercache-stream")
        list(self._stream_pool.map(read_span, spans))

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        for path, f in self._files.items():
            if path not in self._borrowed:
                f.close()
        for fd in self._fds.values():
            os.close(fd)
        for pool in (self._pool, self._stream_pool):
            if pool is not None:
                pool.shutdown()
        self._files.clear()
        self._fds.clear()
        self._raw.clear()
        self._pool = self._stream_pool = None

    def __getstate__(self) -> dict[str, Any]:  # a worker process reopens files lazily
        return {"_borrowed": {}, "_files": {}, "_fds": {}, "_raw": {}, "_pool": None, "_stream_pool": None,
                "direct": self.direct}


def split_spans(reads: list[RawRead], n: int) -> list[list[RawRead]]:
    """``reads`` cut into at most ``n`` runs of consecutive reads holding about equal bytes."""
    total = sum(len(d) for _, _, d in reads)
    spans: list[list[RawRead]] = [[] for _ in range(n)]
    done = 0
    for job in reads:  # each read goes to the span its middle byte falls in
        spans[min(n - 1, (2 * done + len(job[2])) * n // max(2 * total, 1))].append(job)
        done += len(job[2])
    return [span for span in spans if span]


def read_span(reads: list[RawRead], reopen: bool = True) -> None:
    """Fill each destination in order; with ``reopen``, through this span's own open file descriptions.

    A descriptor reopened through ``/proc/self/fd`` is the same file (even one replaced by rename
    since) with its own file position and readahead state. Where there is no ``/proc`` (macOS),
    the shared descriptor is used.
    """
    own: dict[int, int] = {}
    try:
        for fd, offset, dest in reads:
            if reopen and fd not in own:
                try:
                    own[fd] = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY)
                except OSError:
                    own[fd] = fd
            fill(own.get(fd, fd), offset, dest)
    finally:
        for shared, mine in own.items():
            if mine != shared:
                os.close(mine)


def fill(fd: int, offset: int, dest: memoryview) -> None:
    """``dest`` from ``fd`` at ``offset``, however many calls the kernel needs."""
    done = 0
    while done < len(dest):
        n = os.preadv(fd, [dest[done:]], offset + done)
        if n <= 0:
            raise CacheCorruptError(f"unexpected end of file reading cached frames (fd {fd}, offset "
                                    f"{offset + done}): the file is truncated; run `sercache cache verify`")
        done += n
