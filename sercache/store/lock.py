"""One writer per shard: an advisory ``flock`` that dies with its process.

``flock`` is released by the kernel when the holder exits for any reason, SIGKILL included,
so a crashed extraction never leaves a stale lock behind.
"""
from __future__ import annotations

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
from sercache.store.errors import CacheLockedError
from sercache.store.layout import LOCK_FILE, shard_dir


class ShardLock:
    """Exclusive, non-blocking lock on ``CACHE/<shard>/.lock`` for an extraction's lifetime."""

    def __init__(self, cache: Pathlike, shard: str) -> None:
        self.cache = Path(cache)
        self.shard = shard
        self.path = shard_dir(cache, shard) / LOCK_FILE
        self._fd: int | None = None

    def __enter__(self) -> ShardLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise CacheLockedError(
                f"{self.cache / self.shard} is being written by another sercache process ({holder}). "
                "Wait for it to finish, or extract a different --session/--shard into this cache; "
                "different shards can be extracted in parallel."
            ) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "command": " ".join(sys.argv)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (ValueError, KeyError, OSError):
        return "holder unknown"


@contextmanager
def short_lock(path: Path) -> Iterator[None]:
    """A blocking lock for brief read-modify-write updates (the registry file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
