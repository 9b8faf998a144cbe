"""The HDF5 feature cache: layout, writer, reader (catalog, io_engine, integrity, explain), verification.

Nothing here imports torch or transformers, so notebooks and analysis scripts can read a
cache without a deep-learning stack. The names below are imported when first used: importing
one light module of the store (records, frames, layout) does not load h5py and pandas.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "CacheCorruptError": "errors", "CacheError": "errors", "CacheLockedError": "errors",
    "IncompleteStreamError": "errors", "StaleCacheError": "errors",
    "FeatureStore": "reader", "StreamInfo": "reader", "open_cache": "reader",
    "ExtractionProblem": "records", "UtteranceFeatures": "records", "StreamWriter": "writer",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sercache.store' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"sercache.store.{_HOMES[name]}"), name)
    globals()[name] = value
    return value
