"""Training targets beyond the class: annotator votes (``soft``), valence/arousal (``va``), transcript characters (``chars``).

Heads declare the ones they use (``Head.needs``: tmn soft + va, mmer chars). A corpus without
them still trains such a head, and the run says what was left out (:func:`target_notes`, printed
before the first fold and written to each fold's train.log):

* no annotator votes (EmoDB, RAVDESS...): the soft targets are the one-hot labels, which PeakL
  leaves unchanged;
* no valence/arousal: the regression term of the loss is left out (the targets are None, so
  tmn trains on its classification loss alone) and no CCC is reported;
* no gold transcript for an utterance: it has no CTC target and adds no CTC term (mmer); with
  none at all the CTC term is left out.

Transcripts become :data:`CHAR_VOCAB` ids by :func:`transcript_chars`: English upper-case letters,
space and apostrophe. Other alphabets' letters are spelled with those: German ä ö ü as AE OE UE and
ß as SS (German's own spelling where umlauts are unavailable, closer to the sound than A O U), any
other letter with diacritics as its base letter (é -> E, ñ -> N: Unicode decomposition). What is
still outside the vocabulary (digits, punctuation, other scripts) is dropped.
"""
from __future__ import annotations

import unicodedata
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sercache.heads.base import CHAR_VOCAB
from sercache.splits.labels import LabelPreset, soft_labels

#: Letters spelled with several vocabulary characters (upper case; ß upper-cases to SS by itself).
SPELLED = {"Ä": "AE", "Ö": "OE", "Ü": "UE", "ẞ": "SS", "Æ": "AE", "Œ": "OE", "Ø": "OE", "’": "'", "‘": "'"}
_INDEX = {c: i for i, c in enumerate(CHAR_VOCAB)}


def transcript_chars(text: object) -> list[int]:
    """A transcript -> CHAR_VOCAB ids (see the module doc); a missing transcript gives none."""
    if not isinstance(text, str):
        return []
    upper = "".join(SPELLED.get(c, c) for c in text.upper())
    plain = "".join(c for c in unicodedata.normalize("NFKD", upper) if not unicodedata.combining(c))
    return [_INDEX[c] for c in " ".join(plain.split()) if c in _INDEX]


def _has_votes(votes: pd.Series) -> np.ndarray:
    return np.array([isinstance(v, str) and v.strip() not in ("", "{}") for v in votes], dtype=bool)


def _votes(table: pd.DataFrame) -> pd.Series:
    return table["votes"] if "votes" in table else pd.Series([""] * len(table), dtype=object)


def _has_transcript(table: pd.DataFrame) -> np.ndarray:
    texts = table["transcript"] if "transcript" in table else pd.Series([""] * len(table))
    return np.array([bool(transcript_chars(t)) for t in texts], dtype=bool)


def _va(table: pd.DataFrame) -> np.ndarray:
    if not {"valence", "arousal"} <= set(table.columns):
        return np.full((len(table), 2), np.nan)
    return table[["valence", "arousal"]].to_numpy(np.float64)


def target_notes(table: pd.DataFrame, needs: frozenset[str] | set[str]) -> list[str]:
    """What of the targets in ``needs`` these utterances lack, and what training does instead (empty: nothing)."""
    notes = []
    n = len(table)
    if "soft" in needs and not _has_votes(_votes(table)).any():
        notes.append("no annotator votes in this cache: the soft targets are the one-hot labels")
    if "va" in needs and np.isnan(_va(table)).all():
        notes.append("no valence/arousal in this cache: the valence/arousal loss term is left out and no CCC is "
                     "reported")
    if "chars" in needs:
        missing = int((~_has_transcript(table)).sum())
        if missing == n:
            notes.append("no gold transcripts in this cache: the CTC loss term is left out")
        elif missing:
            notes.append(f"{missing} of {n} utterances have no gold transcript: they add no CTC loss term")
    return notes


@dataclass
class Targets:
    """The extra targets of a table's utterances, as numpy arrays (None: not asked, or not known for any)."""

    soft: np.ndarray | None = None          # (n, classes) float32
    va: np.ndarray | None = None            # (n, 2) float32 in [0, 1], NaN where unknown
    chars: np.ndarray | None = None         # (n, max chars) int64, 0-padded
    char_lengths: np.ndarray | None = None  # (n,) int64; 0 where no transcript


def extra_targets(table: pd.DataFrame, preset: LabelPreset, needs: frozenset[str] | set[str]) -> Targets:
    """The targets in ``needs`` for ``table``'s rows (with ``y``); those no utterance has are None."""
    out = Targets()
    if "soft" in needs:
        out.soft = soft_labels(_votes(table), preset, table.y.to_numpy())
    va = _va(table)
    if "va" in needs and not np.isnan(va).all():
        with warnings.catch_warnings():  # a column with no value at all stays NaN: its loss term is skipped
            warnings.simplefilter("ignore", RuntimeWarning)
            lo, hi = np.nanmin(va, axis=0), np.nanmax(va, axis=0)
        out.va = ((va - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)  # the corpus's own range -> [0, 1]
    if "chars" in needs and _has_transcript(table).any():
        seqs = [transcript_chars(t) for t in table["transcript"]]
        out.chars = np.zeros((len(seqs), max(len(s) for s in seqs)), dtype=np.int64)
        for i, s in enumerate(seqs):
            out.chars[i, : len(s)] = s
        out.char_lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    return out
