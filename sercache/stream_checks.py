"""Hooks the feature side gives the store, so the store runs checks whose meaning it does not know.

A dependency-free module below every layer: sercache.features.streams registers its kinds'
``cache verify`` checks here when imported (``import sercache`` imports it), and
sercache.store.verify runs whatever is registered.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

#: ``check(h5py_file, file_index, bad)`` per stream file; see sercache.store.verify.StreamCheck.
STREAM_CHECKS: list[Callable[..., Any]] = []


def register_stream_check(check: Callable[..., Any]) -> None:
    if check not in STREAM_CHECKS:
        STREAM_CHECKS.append(check)
