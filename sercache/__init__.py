"""sercache: extract frozen encoder features once, train SER fusion heads from the cache.

Importing this package is cheap: it pulls in neither torch nor transformers, so a
notebook can ``import sercache`` and read a cache with h5py, numpy and pandas alone.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "open_cache"]


def open_cache(path):  # noqa: ANN001, ANN201 - thin re-export, documented in store.reader
    """Open a feature cache directory for reading. See :func:`sercache.store.open_cache`."""
    from sercache.store import open_cache as _open_cache

    return _open_cache(path)
