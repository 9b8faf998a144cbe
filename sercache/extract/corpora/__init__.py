"""Corpus readers: a corpus on disk -> a :class:`Manifest` (utterance table + problems).

Every module of this package but :mod:`base` and :mod:`conventions` is one corpus: its reader and
its :func:`~sercache.splits.corpora.register_corpus` call. Adding a corpus is adding a file here.
"""
from __future__ import annotations

import importlib
import pkgutil

from sercache._typing import Pathlike
from sercache.extract.corpora.base import MANIFEST_COLUMNS, Manifest, probe_all
from sercache.splits.corpora import _REGISTRY as CORPORA  # name -> Corpus, filled by the corpus modules
from sercache.splits.corpora import Corpus, get_corpus

_HELPERS = {"base", "conventions"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _HELPERS and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")


def read_corpus(corpus: str, root: Pathlike, sessions: list[str] | None = None, *, probe: bool = True) -> Manifest:
    """Read a corpus and (by default) probe every audio file's header and checksum."""
    manifest = get_corpus(corpus).read(root, sessions)
    if probe:
        manifest.table = probe_all(manifest.table, manifest.problems)
    return manifest


__all__ = ["CORPORA", "MANIFEST_COLUMNS", "Corpus", "Manifest", "read_corpus"]
