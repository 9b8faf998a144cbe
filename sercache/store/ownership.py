"""Which files in a cache directory are sercache's own, and may be read, replaced or deleted by an extraction.

A cache is often a folder the user already works in. ``--overwrite`` replaces stale streams, so before
any work an extraction checks every file it would read or replace: a shard manifest or stream file is
sercache's when ``sercache.json`` records it, or when it carries the format stamp that only sercache
writes (a cache whose registry was deleted, as a damaged-registry message advises, keeps its files).
Anything else in the way is the user's, and the extraction is refused, naming it.
"""
from __future__ import annotations

from pathlib import Path

import h5py

from sercache._typing import Pathlike
from sercache.store.errors import CacheError
from sercache.store.layout import REGISTRY_FILE, manifest_path, stream_path
from sercache.store.manifest import MANIFEST_FORMAT, read_registry
from sercache.store.streamfile import H5_READ_ERRORS, STREAM_FORMAT


class ForeignFileError(CacheError):
    """A file sercache did not write is where an extraction would read or replace one."""


def format_stamp(path: Path) -> str:
    """The ``format`` attribute sercache writes into its HDF5 files ('' for any other file, or an unreadable one)."""
    try:
        with h5py.File(path, "r", locking=False) as f:
            value = f.attrs.get("format", "")
    except H5_READ_ERRORS:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def foreign_files(cache: Pathlike, shard: str, streams: list[str]) -> list[Path]:
    """Files of ``shard`` that an extraction of ``streams`` would read or replace, but sercache did not write."""
    recorded = read_registry(cache)["shards"].get(shard)
    recorded_streams = set((recorded or {}).get("streams", {}))
    foreign = []
    manifest = manifest_path(cache, shard)
    if manifest.exists() and recorded is None and format_stamp(manifest) != MANIFEST_FORMAT:
        foreign.append(manifest)
    for name in streams:
        path = stream_path(cache, shard, name)
        if path.exists() and name not in recorded_streams and format_stamp(path) != STREAM_FORMAT:
            foreign.append(path)
    return foreign


def refuse_foreign_files(cache: Pathlike, shard_streams: dict[str, list[str]]) -> None:
    """Raise :class:`ForeignFileError` naming every file in the way that sercache did not write."""
    found = [p for shard, streams in shard_streams.items() for p in foreign_files(cache, shard, streams)]
    if not found:
        return
    names = ", ".join(str(p) for p in found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
    raise ForeignFileError(
        f"{names}: not written by sercache (not recorded in {Path(cache) / REGISTRY_FILE}, and no sercache format "
        "stamp inside). sercache never replaces a file it did not write, not even with --overwrite: move the "
        "file(s) out of the way, or extract into another --out.")
