"""The corpus registry, as ``splits`` and ``train_heads`` read it (defaults per corpus): see :mod:`sercache.corpora`."""
from __future__ import annotations

from sercache.corpora import (
    _REGISTRY,
    CORPUS_PACKAGE,
    DEFAULT_LABELS,
    DEFAULT_PROTOCOLS,
    Corpus,
    corpora,
    get_corpus,
    register_corpus,
)

__all__ = ["CORPUS_PACKAGE", "DEFAULT_LABELS", "DEFAULT_PROTOCOLS", "Corpus", "_REGISTRY", "corpora", "get_corpus",
           "register_corpus"]
