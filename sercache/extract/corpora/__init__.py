"""Corpus readers: a corpus on disk -> a :class:`Manifest` (utterance table + problems)."""
from __future__ import annotations

from collections.abc import Callable

from sercache._typing import Pathlike
from sercache.extract.corpora.base import MANIFEST_COLUMNS, Manifest, probe_all
from sercache.extract.corpora.conventions import read_cremad, read_emodb, read_ravdess
from sercache.extract.corpora.csvfile import read_csv_manifest
from sercache.extract.corpora.iemocap import read_iemocap

CORPORA: dict[str, Callable[..., Manifest]] = {
    "iemocap": read_iemocap,
    "ravdess": read_ravdess,
    "emodb": read_emodb,
    "cremad": read_cremad,
    "csv": read_csv_manifest,
}


def read_corpus(corpus: str, root: Pathlike, sessions: list[str] | None = None, *, probe: bool = True) -> Manifest:
    """Read a corpus and (by default) probe every audio file's header and checksum."""
    if corpus not in CORPORA:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {sorted(CORPORA)}")
    manifest = CORPORA[corpus](root, sessions)
    if probe:
        manifest.table = probe_all(manifest.table, manifest.problems)
    return manifest


__all__ = ["CORPORA", "MANIFEST_COLUMNS", "Manifest", "read_corpus"]
