"""A cache that lives in memory only: what ``sercache predict`` feeds the heads through.

New audio's features are written with the real stream writer (:func:`write_records`) into
HDF5 files held by h5py's ``core`` driver without a backing store (nothing touches the disk),
and read back through :class:`FeatureStore`'s own methods (``load``, ``pooled``,
``per_utterance``...). The heads' inputs are thus built by the same code at training and at
prediction time, down to the pooling, dtype conversion and layer selection.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import h5py
import pandas as pd

from sercache.store.reader import FeatureStore
from sercache.store.records import ExtractionProblem, UtteranceFeatures
from sercache.store.streamfile import STREAM_FORMAT, read_index, write_records

SHARD = "predict"
_NAMES = itertools.count()


class MemoryStore:
    """Collects streams in memory, then opens them as a :class:`FeatureStore` (see :meth:`open`)."""

    def __init__(self, utterances: pd.DataFrame, label: str = "in-memory features") -> None:
        self.utterances = utterances.assign(shard=SHARD).reset_index(drop=True)
        self.label = label
        self.files: dict[str, h5py.File] = {}

    def add_stream(self, name: str, records: list[UtteranceFeatures], problems: list[ExtractionProblem],
                   provenance: dict[str, Any], attrs: dict[str, Any]) -> None:
        """One finished stream, ordered as :attr:`utterances` (as compaction orders a cache's stream)."""
        order = {u: i for i, u in enumerate(self.utterances.utt_id)}
        records = sorted(records, key=lambda r: order[r.utt_id])
        # a unique name per file: HDF5 tracks open files by name, even in memory
        f = h5py.File(f"sercache-memory-{next(_NAMES)}-{name}.h5", "w", driver="core", backing_store=False)
        write_records(f, records, problems, {"format": STREAM_FORMAT, "stream": name, "shard": SHARD,
                                             "provenance": provenance, "complete": True,
                                             "n_expected": len(self.utterances), **attrs})
        self.files[name] = f

    def open(self) -> FeatureStore:
        """A :class:`FeatureStore` over the streams added so far (closing it frees the memory)."""
        return OpenMemoryStore(self)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


class OpenMemoryStore(FeatureStore):
    """:class:`FeatureStore` with its files in memory: every read method is the cache's own."""

    def __init__(self, memory: MemoryStore) -> None:  # noqa: D107 - the state FeatureStore.__init__ sets
        self.path = Path(f"<{memory.label}>")
        self.shards = [SHARD]
        self.registry = {"shards": {}}
        self.utterances = memory.utterances
        self._memory = memory
        self._files = {}
        self._index = {}
        for name, f in memory.files.items():
            key = Path(f"<{memory.label}>") / SHARD / f"{name}.h5"
            self._files[key] = f
            self._index[name] = [read_index(f, key)]
        self._where, self._checksums, self._raw, self._fds, self._pool = {}, {}, {}, {}, None
        self.streams = {n: self._describe(n) for n in sorted(self._index)}
        frames = [ix.problems.assign(shard=SHARD, stream=n) for n, ixs in self._index.items() for ix in ixs]
        self.errors = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _names(self) -> set[str]:
        return set(self._index)

    def _raw_region(self, path: Path, field_name: str, dtype: Any) -> None:
        return None  # no file descriptor to read from: h5py reads the in-memory dataset

    def close(self) -> None:
        self._files.clear()
        self._memory.close()
