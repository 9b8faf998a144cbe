"""Reading a corpus for extraction: a corpus on disk -> a :class:`Manifest` (utterance table + problems), audio probed.

The readers live in :mod:`sercache.corpora`, one file per corpus (its reader and its
:func:`~sercache.corpora.register_corpus` call), below ``features`` and ``splits``, so that training
reads a corpus's defaults without importing this layer. Here: reading plus probing the audio.
"""
from __future__ import annotations

from sercache._typing import Pathlike
from sercache.corpora import _REGISTRY as CORPORA  # name -> Corpus, filled by the corpus modules
from sercache.corpora import corpora, get_corpus
from sercache.corpora.base import Manifest
from sercache.extract.audio_probe import probe_all

corpora()  # imports every corpus module of this package: each registers itself


def read_corpus(corpus: str, root: Pathlike, sessions: list[str] | None = None, *, probe: bool = True) -> Manifest:
    """Read a corpus and (by default) probe every audio file's header and checksum."""
    manifest = get_corpus(corpus).read(root, sessions)
    if probe:
        manifest.table = probe_all(manifest.table, manifest.problems)
    return manifest


__all__ = ["CORPORA", "read_corpus"]
