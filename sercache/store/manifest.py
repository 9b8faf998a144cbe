"""Per-shard manifest files and the cache registry."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import h5py
import pandas as pd

from sercache import __version__
from sercache._typing import Pathlike
from sercache.store.atomic import atomic_h5, write_text_atomic
from sercache.store.layout import FORMAT_VERSION, REGISTRY_FILE, check_name, manifest_path
from sercache.store.lock import short_lock
from sercache.store.records import ExtractionProblem, problems_frame
from sercache.store.streamfile import PROBLEMS, read_index, refuse_outside_storage, set_attrs
from sercache.store.tables import read_table, write_table

MANIFEST_FORMAT = "sercache-manifest"
UTTERANCES = "utterances"
REGISTRY_FORMAT = "sercache-cache"


def write_manifest(cache: Pathlike, shard: str, table: pd.DataFrame, problems: list[ExtractionProblem],
                   attrs: dict[str, Any]) -> Path:
    """Write ``CACHE/<shard>/utterances.h5`` atomically: the rows and the manifest-level problems."""
    path = manifest_path(cache, shard)
    with atomic_h5(path) as f:
        write_table(f, UTTERANCES, table.reset_index(drop=True))
        write_table(f, PROBLEMS, problems_frame(problems))
        set_attrs(f, dict(attrs, format=MANIFEST_FORMAT, format_version=FORMAT_VERSION, shard=shard,
                          n_utterances=len(table), created=time.strftime("%Y-%m-%d %H:%M:%S"),
                          sercache_version=__version__))
    return path


def read_manifest(cache: Pathlike, shard: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(utterances, problems, attrs) of one shard."""
    path = manifest_path(cache, shard)
    with h5py.File(path, "r", locking=False) as f:
        refuse_outside_storage(f, path)
        table = read_table(f[UTTERANCES])
        problems = read_table(f[PROBLEMS])
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return table, problems, attrs


def read_registry(cache: Pathlike) -> dict[str, Any]:
    path = Path(cache) / REGISTRY_FILE
    if not path.exists():
        return {"format": REGISTRY_FORMAT, "format_version": FORMAT_VERSION, "shards": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        from sercache.store.errors import CacheCorruptError

        raise CacheCorruptError(f"{path} is damaged ({exc}). It only lists which shards and streams were asked "
                                "for: delete it and rerun the extract commands (finished streams are kept).") from exc


def register_streams(cache: Pathlike, shard: str, streams: list[str], command: str) -> None:
    """Record that ``streams`` were asked of ``shard`` (so a later loss of the shard is noticed)."""
    cache = Path(cache)
    with short_lock(cache / ".sercache.lock"):
        reg = read_registry(cache)
        entry = reg["shards"].setdefault(shard, {"streams": {}})
        for s in streams:
            entry["streams"][s] = {"command": command, "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
        write_text_atomic(cache / REGISTRY_FILE, json.dumps(reg, indent=1, sort_keys=True))


def registered_streams(cache: Pathlike, shard: str) -> list[str]:
    """Streams the registry says were asked of ``shard`` (the files sercache may replace or delete there)."""
    streams = read_registry(cache)["shards"].get(shard, {}).get("streams", {})
    return [s for s in sorted(streams) if _is_plain_name(s)]


def _is_plain_name(name: str) -> bool:
    try:
        check_name(name, "stream")
    except ValueError:
        return False
    return True


def read_stream_index(path: Path):  # noqa: ANN201 - FileIndex
    with h5py.File(path, "r", locking=False) as f:
        return read_index(f, path)


def read_stream_field(path: Path, name: str) -> dict[str, Any]:
    """``{utt_id: value}`` of one per-utterance field of a finished stream file (e.g. ``text``)."""
    from sercache.store.streamfile import PER_UTT

    with h5py.File(path, "r", locking=False) as f:
        index = read_index(f, path)
        if not index.utt_ids:
            return {}
        ds = f[f"{PER_UTT}/{name}"]
        values = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) is not None else ds[()]
        return dict(zip(index.utt_ids, values.tolist()))
