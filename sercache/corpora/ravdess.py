"""RAVDESS speech: ``Actor_XX/03-01-EE-II-SS-RR-AA.wav``, labels in the file name."""
from __future__ import annotations

import re
from pathlib import Path

from sercache._typing import Pathlike
from sercache.corpora import Corpus, LabelPreset, register_corpus
from sercache.corpora.base import Manifest, drop_duplicates, make_table
from sercache.corpora.conventions import matching_wavs
from sercache.store.records import ExtractionProblem

RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgust", "08": "surprised"}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
_RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


def read_ravdess(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (modality, vocal channel, emotion, intensity, statement, repetition, actor)."""
    problems: list[ExtractionProblem] = []
    rows = []
    known = lambda m: m.group(3) in RAVDESS_EMOTIONS and m.group(5) in RAVDESS_STATEMENTS  # noqa: E731
    for p, (_, channel, emo, intensity, statement, _, actor) in matching_wavs(
            Path(root), _RAVDESS, known, "RAVDESS", "03-01-05-01-02-01-12.wav", problems):
        rows.append({"utt_id": p.stem, "corpus": "ravdess", "path": str(p), "speaker": f"Actor_{actor}",
                     "gender": "M" if int(actor) % 2 else "F", "label": RAVDESS_EMOTIONS[emo],
                     "transcript": RAVDESS_STATEMENTS[statement],
                     "intensity": "strong" if intensity == "02" else "normal",
                     "vocal_channel": "song" if channel == "02" else "speech"})
    return Manifest(make_table(drop_duplicates(rows, problems, "ravdess"), ["intensity", "vocal_channel"]), problems)


FOUR = ("neutral", "happy", "sad", "angry")
EIGHT = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
PRESETS = (
    LabelPreset("ravdess8", "ravdess", EIGHT, {c: c for c in EIGHT}),
    LabelPreset("ravdess4", "ravdess", FOUR, {c: c for c in FOUR}),
)

register_corpus(Corpus("ravdess", read_ravdess, labels="ravdess4", protocol="lospk", presets=PRESETS,
                       summary="RAVDESS speech, Actor_XX/03-01-EE-II-SS-RR-AA.wav",
                       layout="Actor_01/03-01-05-01-01-01-01.wav (modality, channel, emotion, intensity, statement, "
                       "repetition, actor)"))
