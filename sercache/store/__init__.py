"""The HDF5 feature cache: layout, writer, reader (catalog, io_engine, integrity, explain), verification.

Nothing here imports torch or transformers, so notebooks and analysis scripts can read a
cache without a deep-learning stack.
"""
from sercache.store.errors import (
    CacheCorruptError,
    CacheError,
    CacheLockedError,
    IncompleteStreamError,
    StaleCacheError,
)
from sercache.store.reader import FeatureStore, StreamInfo, open_cache
from sercache.store.records import ExtractionProblem, UtteranceFeatures
from sercache.store.writer import StreamWriter

__all__ = [
    "CacheCorruptError", "CacheError", "CacheLockedError", "ExtractionProblem", "FeatureStore",
    "IncompleteStreamError", "StaleCacheError", "StreamInfo", "StreamWriter", "UtteranceFeatures", "open_cache",
]
