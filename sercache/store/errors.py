"""Exceptions the store raises. Each message names the file or utterance and the fix."""
from __future__ import annotations

from sercache.errors import SercacheError


class CacheError(SercacheError):
    """Base class for problems with a feature cache."""


class StaleCacheError(CacheError):
    """The cache holds a stream made with other settings than the ones asked for now."""


class CacheLockedError(CacheError):
    """Another process is writing this shard."""


class CacheCorruptError(CacheError):
    """Stored bytes do not match what was written (checksum, offsets, unreadable file)."""


class IncompleteStreamError(CacheError):
    """A stream is asked for where it has not (yet) been extracted."""


class DiskFullError(CacheError):
    """Too little free space for the next write; raised before writing, so nothing is torn."""


class CacheValueError(CacheError, ValueError):
    """A value the cache cannot take: a stream, shard or field name, an ``out=`` array, a pooling mode."""


class CacheKeyError(CacheError, KeyError):
    """A stream, field or layer the cache does not hold; the message lists the ones it does."""
