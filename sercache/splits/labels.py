"""Label-map presets: a corpus's own codes -> the classes a model predicts.

A preset is a named, inspectable mapping (``sercache labels``); no head hard-codes one. Each corpus
file declares its presets (``sercache/corpora/<name>.py``, ``presets=``); this module reads them and
applies one. Codes the preset does not map are dropped from training and evaluation.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sercache.corpora import DEFAULT_LABELS, LabelPreset, presets
from sercache.errors import SercacheError
from sercache.registry import MappingView


class _Presets(MappingView):
    """Every label preset by name (aliases too), as the corpus files declare them (read when used)."""

    def _mapping(self) -> dict[str, LabelPreset]:
        return presets()


#: name -> preset, declared by each corpus file next to its reader (``presets=`` of its ``Corpus``).
PRESETS: Mapping[str, LabelPreset] = _Presets()

#: The preset used when a cache of this corpus is evaluated without one being named: each corpus
#: file declares its own (``labels=`` of its :class:`~sercache.corpora.Corpus`).
DEFAULT_PRESET = DEFAULT_LABELS

#: IEMOCAP's evaluator category names -> consensus codes (for soft labels from votes).
IEMOCAP_VOTE_CODES = {"neutral": "neu", "happiness": "hap", "excited": "exc", "sadness": "sad", "anger": "ang",
                      "frustration": "fru", "surprise": "sur", "fear": "fea", "disgust": "dis", "other": "oth"}


class PresetError(SercacheError, KeyError):
    """An unknown label preset (a ``KeyError`` too, as before)."""


def get_preset(name: str) -> LabelPreset:
    if name not in PRESETS:
        raise PresetError(f"unknown label preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def apply_preset(utterances: pd.DataFrame, preset: LabelPreset) -> pd.DataFrame:
    """Rows whose code the preset maps, with ``class`` (name) and ``y`` (index into ``preset.classes``)."""
    mapped = utterances["label"].map(preset.mapping)
    out = utterances[mapped.notna()].copy()
    out["class"] = mapped[mapped.notna()]
    out["y"] = out["class"].map({c: i for i, c in enumerate(preset.classes)}).astype(np.int64)
    return out


def soft_labels(votes_json: pd.Series, preset: LabelPreset, y: np.ndarray) -> np.ndarray:
    """Annotator vote distributions over the preset's classes ``(n, classes)``.

    Each evaluator's vote is split evenly over the categories they listed; categories outside
    the preset are ignored. Utterances without usable votes get their one-hot label.
    """
    k = len(preset.classes)
    index = {c: i for i, c in enumerate(preset.classes)}
    out = np.zeros((len(votes_json), k), dtype=np.float32)
    for row, (text, label) in enumerate(zip(votes_json, y)):
        votes = json.loads(text) if isinstance(text, str) and text.startswith("{") else {}
        for categories in votes.values():
            cls = [preset.mapping.get(IEMOCAP_VOTE_CODES.get(c.strip().lower(), c.strip().lower()))
                   for c in categories]
            cls = [index[c] for c in cls if c in index]
            for c in cls:
                out[row, c] += 1.0 / len(cls)
        total = out[row].sum()
        if total > 0:
            out[row] /= total
        else:
            out[row, label] = 1.0
    return out
