"""Label-map presets: a corpus's own codes -> the classes a model predicts.

A preset is a named, inspectable mapping (``sercache labels``); no head hard-codes one.
Codes the preset does not map are dropped from training and evaluation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sercache.corpora import DEFAULT_LABELS


@dataclass(frozen=True)
class LabelPreset:
    name: str
    corpus: str
    classes: tuple[str, ...]
    mapping: dict[str, str]  # corpus code -> class
    note: str = ""

    def describe(self) -> str:
        groups = {c: sorted(k for k, v in self.mapping.items() if v == c) for c in self.classes}
        rule = "; ".join(f"{c} <- {'+'.join(g)}" for c, g in groups.items())
        return f"{self.name} ({self.corpus}): {rule}" + (f". {self.note}" if self.note else "")


def _p(name: str, corpus: str, mapping: dict[str, str], classes: tuple[str, ...], note: str = "") -> LabelPreset:
    return LabelPreset(name, corpus, classes, mapping, note)


FOUR = ("neutral", "happy", "sad", "angry")
PRESETS: dict[str, LabelPreset] = {p.name: p for p in [
    _p("iemocap4", "iemocap", {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"}, FOUR,
       "The standard 4-class set (5531 utterances): exc merged into happy; other codes dropped."),
    _p("iemocap4-exc", "iemocap", {"neu": "neutral", "exc": "happy", "sad": "sad", "ang": "angry"}, FOUR,
       "GLAM's set: happy = excited only, hap dropped."),
    _p("iemocap4-fru", "iemocap", {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry",
                                   "fru": "angry"}, FOUR,
       "The single-layer paper's code: as iemocap4, plus frustration merged into angry."),
    _p("iemocap6", "iemocap", {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "exc": "excited",
                               "fru": "frustrated"}, (*FOUR, "excited", "frustrated"),
       "Excited and frustrated kept as classes of their own."),
    _p("ravdess8", "ravdess", {c: c for c in ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                                              "surprised")},
       ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")),
    _p("ravdess4", "ravdess", {c: c for c in FOUR}, FOUR),
    _p("emodb7", "emodb", {"neutral": "neutral", "happiness": "happy", "sadness": "sad", "anger": "angry",
                           "boredom": "bored", "disgust": "disgust", "fear": "fearful"},
       ("neutral", "happy", "sad", "angry", "bored", "disgust", "fearful")),
    _p("emodb4", "emodb", {"neutral": "neutral", "happiness": "happy", "sadness": "sad", "anger": "angry"}, FOUR),
    _p("cremad6", "cremad", {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry", "DIS": "disgust",
                             "FEA": "fearful"}, ("neutral", "happy", "sad", "angry", "disgust", "fearful")),
    _p("cremad4", "cremad", {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry"}, FOUR),
    _p("msp4", "msp-podcast", {"N": "neutral", "H": "happy", "S": "sad", "A": "angry"}, FOUR,
       "EmoClass N, H, S, A; the others (U F D C, O other, X no agreement) dropped."),
    _p("msp8", "msp-podcast", {"N": "neutral", "H": "happy", "S": "sad", "A": "angry", "U": "surprised",
                               "F": "fearful", "D": "disgust", "C": "contempt"},
       (*FOUR, "surprised", "fearful", "disgust", "contempt"),
       "The eight primary emotions (the MSP-Podcast challenges' set); O (other) and X (no agreement) dropped."),
]}
PRESETS["glam"] = PRESETS["iemocap4-exc"]

#: The preset used when a cache of this corpus is evaluated without one being named: each corpus
#: file declares its own (``labels=`` of its :class:`~sercache.corpora.Corpus`).
DEFAULT_PRESET = DEFAULT_LABELS

#: IEMOCAP's evaluator category names -> consensus codes (for soft labels from votes).
IEMOCAP_VOTE_CODES = {"neutral": "neu", "happiness": "hap", "excited": "exc", "sadness": "sad", "anger": "ang",
                      "frustration": "fru", "surprise": "sur", "fear": "fea", "disgust": "dis", "other": "oth"}


def get_preset(name: str) -> LabelPreset:
    if name not in PRESETS:
        raise KeyError(f"unknown label preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
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
