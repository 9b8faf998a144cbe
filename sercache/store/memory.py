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

from sercache.store.catalog import Catalog
from sercache.store.io_engine import ReadEngine
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

    def __init__(self, memory: MemoryStore) -> None:  # noqa: D107 - FeatureStore's parts, over memory.files
        path = Path(f"<{memory.label}>")
        files: dict[Path, h5py.File] = {}
        index = {}
        for name, f in memory.files.items():
            files[path / SHARD / f"{name}.h5"] = f
            index[name] = [read_index(f, path / SHARD / f"{name}.h5")]
        self._memory = memory
        # no staged work, no manifest file; no file descriptor to read from: h5py reads the in-memory datasets
        self._attach(Catalog.build(path, [SHARD], {"shards": {}}, memory.utterances, index, {}, []),
                     ReadEngine(files, direct=False))

    def close(self) -> None:
        super().close()
        self._memory.close()
