"""Where things live inside a cache directory.

A cache is a directory of shards. A shard is an IEMOCAP session (``Session1``), the whole
corpus (``all``) or a ``--shard i/N`` slice of either (``Session1-shard2of4``)::

    CACHE/
      sercache.json                 registry: shards, the streams asked of them, the commands
      Session1/
        utterances.h5               the shard's manifest rows and manifest-level problems
        ssl.h5                      one file per finished stream, written once, atomically
        text_asr.h5
        .lock                       held (flock) by the one extract process writing this shard
        .staging/ssl/seg-000003.h5  work in progress: whole batches, each file atomic
      .models/                      converted model copies some backends decode with (faster-whisper)

A stream file only appears when every planned utterance of the shard is either stored or
recorded as failed, so a finished-looking file is never partial. Work in progress lives
under ``.staging`` and is invisible to readers until the stream is compacted.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from sercache._typing import Pathlike
from sercache.store.errors import CacheValueError

FORMAT_VERSION = 1
REGISTRY_FILE = "sercache.json"
MANIFEST_FILE = "utterances.h5"
STAGING_DIR = ".staging"
LOCK_FILE = ".lock"
MODELS_DIR = ".models"
STREAM_SUFFIX = ".h5"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(name: str, what: str) -> str:
    """Reject names that would make odd file names (stream and shard names become files)."""
    if not _NAME_RE.match(name) or name.endswith(STREAM_SUFFIX) or name == Path(MANIFEST_FILE).stem:
        raise CacheValueError(
            f"invalid {what} name {name!r}: use letters, digits, '_', '.', '-' "
            f"(and not {Path(MANIFEST_FILE).stem!r})"
        )
    return name


def is_folder_name(name: object) -> bool:
    """One directory level, no way up or out: for names (shards, folds) joined onto a directory we own."""
    return isinstance(name, str) and bool(name) and not name.startswith(".") and not set(name) & {"/", "\\", "\0"}


def shard_dir(cache: Pathlike, shard: str) -> Path:
    # a shard is one directory directly inside the cache, whatever a manifest or registry says
    if not is_folder_name(shard):
        raise CacheValueError(f"invalid shard name {shard!r}: a shard is a directory directly inside the cache {cache}")
    return Path(cache) / shard


def manifest_path(cache: Pathlike, shard: str) -> Path:
    return shard_dir(cache, shard) / MANIFEST_FILE


def stream_path(cache: Pathlike, shard: str, stream: str) -> Path:
    return shard_dir(cache, shard) / f"{stream}{STREAM_SUFFIX}"


def staging_dir(cache: Pathlike, shard: str, stream: str) -> Path:
    return shard_dir(cache, shard) / STAGING_DIR / stream


def remove_staging(staging: Path) -> None:
    """Remove one stream's staging folder, and the shard's ``.staging`` once it holds nothing else (a kill between
    the two, after a stream's file was published, must not leave an empty folder behind for good)."""
    shutil.rmtree(staging, ignore_errors=True)
    parent = staging.parent
    if parent.name == STAGING_DIR and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def list_shards(cache: Pathlike) -> list[str]:
    """Shards that have a manifest file, in natural order (Session2 before Session10)."""
    root = Path(cache)
    names = [p.parent.name for p in root.glob(f"*/{MANIFEST_FILE}")]
    return sorted(names, key=natural_key)


def list_stream_files(cache: Pathlike, shard: str) -> dict[str, Path]:
    """Finished stream files of one shard: {stream name: path}."""
    d = shard_dir(cache, shard)
    out = {}
    for p in sorted(d.glob(f"*{STREAM_SUFFIX}")):
        if p.name != MANIFEST_FILE:
            out[p.name[: -len(STREAM_SUFFIX)]] = p
    return out


def list_staging(cache: Pathlike, shard: str) -> list[str]:
    """Streams with work in progress in one shard."""
    d = shard_dir(cache, shard) / STAGING_DIR
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if p.is_dir())


def natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]
