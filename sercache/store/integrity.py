"""Integrity of loaded rows: each utterance's bytes against the CRC-32 stored when it was written."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sercache.store.errors import CacheCorruptError
from sercache.store.io_engine import ReadEngine, worth_threads
from sercache.store.records import checksum
from sercache.store.streamfile import CHECKSUMS, FRAMES, FileIndex


class RowChecksums:
    """The stored checksums, read once per (file, dataset), and the check of loaded rows against them."""

    def __init__(self) -> None:
        self._stored: dict[tuple[Path, str], np.ndarray] = {}

    def stored(self, io: ReadEngine, ix: FileIndex, kind: str, field_name: str) -> np.ndarray:
        key = (ix.path, f"{kind}/{field_name}")
        if key not in self._stored:
            self._stored[key] = io.file(ix.path)[f"{CHECKSUMS}/{kind}/{field_name}"][()]
        return self._stored[key]

    def verify(self, io: ReadEngine, cache: Path, indexes: Sequence[FileIndex], field_name: str,
               utt_ids: Sequence[str], locs: Sequence[tuple[int, int]], out: np.ndarray, offsets: np.ndarray) -> None:
        """Raise CacheCorruptError naming the first utterance of ``out`` whose bytes fail their checksum.

        ``out[offsets[j]:offsets[j+1]]`` holds ``utt_ids[j]``, row ``locs[j]`` = (file, utterance).
        """
        expected = np.array([self.stored(io, indexes[k], FRAMES, field_name)[i] for k, i in locs], dtype=np.uint32)
        rows = [out[offsets[j]:offsets[j + 1]] for j in range(len(locs))]
        if worth_threads(out.nbytes) and out.dtype != object:  # zlib releases the GIL
            actual = np.fromiter(io.map(checksum, rows, chunksize=64), dtype=np.uint32, count=len(rows))
        else:
            actual = np.array([checksum(r) for r in rows], dtype=np.uint32)
        bad = np.flatnonzero(actual != expected)
        if len(bad):
            j = int(bad[0])
            ix = indexes[locs[j][0]]
            shard = ix.attrs.get("shard", ix.path.parent.name)
            raise CacheCorruptError(
                f"{ix.path}: stored {field_name} frames of {utt_ids[j]} (shard {shard}) fail their checksum"
                f"{f' (and {len(bad) - 1} more utterances)' if len(bad) > 1 else ''}: the file is damaged. Run "
                f"`sercache cache verify {cache}` to list all damage, then re-extract shard {shard} with "
                "--overwrite.")
