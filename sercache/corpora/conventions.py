"""What the file-name corpora (RAVDESS, EmoDB, CREMA-D) share: finding the wavs, refusing odd names.

Each corpus has its own file (ravdess.py, emodb.py, cremad.py); their readers are re-exported here.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

from sercache.corpora.base import CorpusNotFoundError
from sercache.store.records import ExtractionProblem


def _wavs(root: Path, pattern: str) -> list[Path]:
    files = sorted(root.rglob(pattern))
    if not files:
        raise CorpusNotFoundError(f"{root} holds no {pattern} files")
    return files


def _unmatched(path: Path, corpus: str, example: str) -> ExtractionProblem:
    return ExtractionProblem(path.stem, str(path), "manifest",
                             f"file name does not follow the {corpus} convention (e.g. {example}); skipped",
                             severity="warning")


def matching_wavs(root: Path, pattern: re.Pattern[str], ok: Callable[[re.Match[str]], bool], corpus: str,
                  example: str, problems: list[ExtractionProblem]) -> Iterator[tuple[Path, tuple[str, ...]]]:
    """``(path, name fields)`` of the wavs under ``root`` named by the convention; the others are reported, skipped."""
    for p in _wavs(root, "*.wav"):
        m = pattern.match(p.stem)
        if not m or not ok(m):
            problems.append(_unmatched(p, corpus, example))
            continue
        yield p, m.groups()


def __getattr__(name: str) -> object:  # the readers and tables used to live here
    import importlib

    for module in ("ravdess", "emodb", "cremad"):
        mod = importlib.import_module(f"sercache.corpora.{module}")
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
