"""Write-then-rename: a file is either absent, the old version, or the whole new version."""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import h5py

from sercache.errors import SercacheError

TMP_SUFFIX = ".tmp"


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> None:
    """fsync ``tmp``, rename it over ``final`` and fsync the directory (survives power loss)."""
    fsync_path(tmp)
    os.replace(tmp, final)
    fsync_path(final.parent)


@contextmanager
def atomic_h5(final: Path) -> Iterator[h5py.File]:
    """Yield an HDF5 file that becomes ``final`` only if the block finishes without error.

    HDF5 metadata is not journaled: a process killed while appending to a file can leave the
    whole file unreadable. Writing a fresh file and renaming it means a kill at any moment
    leaves either the previous state or the complete new file, never a torn one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    if tmp.exists():
        tmp.unlink()
    try:
        with h5py.File(tmp, "w", libver="latest") as f:
            yield f
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(final: Path, text: str) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(final.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    publish(tmp, final)


def read_json(path: Path, what: str, fix: str) -> Any:
    """Parse a JSON record, or say which file is damaged and what to do (never a bare decoder error)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DamagedFileError(f"{path} ({what}) is damaged: {exc}. {fix}") from None
    except RecursionError:  # the parser recurses once per level: a crafted file must not end in a traceback
        raise DamagedFileError(f"{path} ({what}) is damaged: nested too deeply to be a sercache record. {fix}") from None


class DamagedFileError(SercacheError, ValueError):
    """A record file that cannot be parsed (truncated by a full disk, edited by hand)."""
