"""One writer per shard (and per run directory): an advisory ``flock`` that dies with its process.

``flock`` is released by the kernel when the holder exits for any reason, SIGKILL included,
so a crashed extraction never leaves a stale lock behind.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sercache._typing import Pathlike
from sercache.store.errors import CacheError, CacheLockedError, DiskFullError
from sercache.store.layout import LOCK_FILE, shard_dir


class ExclusiveLock:
    """Exclusive, non-blocking ``flock`` on ``path`` for a process's work; ``refusal`` names the holder."""

    def __init__(self, path: Path, refusal: str) -> None:
        self.path = Path(path)
        self.refusal = refusal  # "{holder}" is replaced by who holds the lock
        self._fd: int | None = None

    def __enter__(self) -> ExclusiveLock:
        fd = _open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise CacheLockedError(self.refusal.replace("{holder}", holder)) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError as exc:  # a full disk fails here first: the record is the first byte a command writes
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise lock_write_error(self.path, exc) from exc
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class ShardLock(ExclusiveLock):
    """``CACHE/<shard>/.lock``, held for an extraction's lifetime: one writer per shard."""

    def __init__(self, cache: Pathlike, shard: str) -> None:
        self.cache = Path(cache)
        self.shard = shard
        super().__init__(shard_dir(cache, shard) / LOCK_FILE,
                         f"{self.cache / shard} is being written by another sercache process ({{holder}}). "
                         "Wait for it to finish, or extract a different --session/--shard into this cache; "
                         "different shards can be extracted in parallel.")


def lock_write_error(path: Path, exc: OSError) -> CacheError:
    """A clear error for a lock file that cannot be created or written (a full disk, above all)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"cannot write the lock file {path}: no space left on the disk of {path.parent} "
                             f"({exc.strerror}). Nothing was written: free some space there (or use another "
                             "directory), then rerun the same command.")
    return CacheError(f"cannot write the lock file {path} ({exc.strerror or exc}): check that {path.parent} is a "
                      "writable directory, or use another one.")


def _open_lock_file(path: Path) -> int:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise lock_write_error(path, exc) from exc


def describe_holder(info: dict) -> str:
    """``pid 123 on host since 2026-12-01 17:30:04``: a lock file's holder record, as messages show it."""
    return f"pid {info['pid']} on {info['host']} since {info['since']}"


def _read_holder(fd: int) -> str:
    try:
        return describe_holder(json.loads(os.pread(fd, 4096, 0).decode() or "{}"))
    except (ValueError, KeyError, OSError):
        return "holder unknown"


@contextmanager
def short_lock(path: Path) -> Iterator[None]:
    """A blocking lock for brief read-modify-write updates (the registry file)."""
    fd = _open_lock_file(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
