"""Work in progress: what a stream's ``.staging`` segments hold, and what a cache holds per stream so far.

An extraction stores whole batches as segment files under ``<shard>/.staging/<stream>/`` and merges
them into ``<stream>.h5`` when every utterance of the shard is done. Until then readers never see
them; this module counts them, so ``cache info`` and an interrupted ``extract`` can say what is kept.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py

from sercache._typing import Pathlike
from sercache.store.layout import list_shards, list_staging, list_stream_files, staging_dir
from sercache.store.manifest import read_stream_index
from sercache.store.streamfile import H5_READ_ERRORS, FileIndex, Schema, read_index

log = logging.getLogger(__name__)

SEGMENT_GLOB = "seg-*.h5"


@dataclass
class StagedWork:
    """The readable segments of one stream of one shard, and the utterances they hold."""

    segments: list[Path] = field(default_factory=list)
    done_ids: set[str] = field(default_factory=set)
    failed_ids: set[str] = field(default_factory=set)   # recorded as failed (errors, not warnings)
    schema: Schema = field(default_factory=Schema)
    nbytes: int = 0


def read_staged(staging: Path, drop_unreadable: bool = False) -> StagedWork:
    """Read the index of every segment in ``staging`` (a missing folder holds nothing).

    Args:
        drop_unreadable: delete a segment that cannot be read (the writer resuming: its utterances are
            redone). Readers leave it alone, and a segment that vanishes while read (the stream was
            just merged) is skipped.
    """
    work = StagedWork()
    for seg in sorted(Path(staging).glob(SEGMENT_GLOB)):
        try:
            with h5py.File(seg, "r", locking=False) as f:
                index: FileIndex = read_index(f, seg)
            size = seg.stat().st_size
        except FileNotFoundError:
            continue
        except H5_READ_ERRORS as exc:
            if drop_unreadable:
                log.warning("discarding unreadable staged segment %s (%s); its utterances are redone", seg, exc)
                seg.unlink()
            continue
        work.segments.append(seg)
        work.done_ids.update(index.utt_ids)
        work.failed_ids.update(index.problems.loc[index.problems.severity == "error", "utt_id"])
        work.nbytes += size
        if work.schema.empty:
            work.schema = index.schema
    return work


@dataclass
class StreamProgress:
    """What a cache holds of one stream: finished shards, and work staged in unfinished ones."""

    stream: str
    finished_shards: list[str] = field(default_factory=list)
    stored: int = 0                  # utterances in finished stream files
    staged_shards: list[str] = field(default_factory=list)
    staged: int = 0                  # utterances in staged segments, not merged yet
    staged_failed: int = 0
    staged_bytes: int = 0

    @property
    def kept(self) -> int:
        return self.stored + self.staged


def stream_progress(cache: Pathlike, streams: Iterable[str] | None = None) -> dict[str, StreamProgress]:
    """``{stream: StreamProgress}`` over every shard of ``cache`` (``streams``: only these, even if absent)."""
    wanted = list(streams) if streams is not None else None
    out: dict[str, StreamProgress] = {s: StreamProgress(s) for s in wanted or []}
    if not Path(cache).is_dir():
        return out
    for shard in list_shards(cache):
        finished = list_stream_files(cache, shard)
        for name in sorted(set(finished) | set(list_staging(cache, shard))):
            if wanted is not None and name not in wanted:
                continue
            p = out.setdefault(name, StreamProgress(name))
            if name in finished:
                try:
                    p.stored += len(read_stream_index(finished[name]).utt_ids)
                except H5_READ_ERRORS:  # damaged: `cache verify` says so; not counted as kept
                    continue
                p.finished_shards.append(shard)
                continue
            staged = read_staged(staging_dir(cache, shard, name))
            if staged.done_ids or staged.failed_ids:
                p.staged_shards.append(shard)
            p.staged += len(staged.done_ids)
            p.staged_failed += len(staged.failed_ids - staged.done_ids)
            p.staged_bytes += staged.nbytes
    return out
