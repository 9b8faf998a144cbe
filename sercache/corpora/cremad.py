"""CREMA-D: ``AudioWAV/1001_DFA_ANG_XX.wav``; gender from ``VideoDemographics.csv``."""
from __future__ import annotations

import re
from pathlib import Path

from sercache._typing import Pathlike
from sercache.corpora import Corpus, LabelPreset, register_corpus
from sercache.corpora.base import Manifest, drop_duplicates, make_table
from sercache.corpora.conventions import matching_wavs
from sercache.store.records import ExtractionProblem

CREMAD_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before", "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}

_CREMAD = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def read_cremad(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """``AudioWAV/1001_DFA_ANG_XX.wav``; gender from ``VideoDemographics.csv`` when present."""
    root = Path(root)
    problems: list[ExtractionProblem] = []
    genders = _cremad_genders(root)
    rows = []
    known = lambda m: m.group(3) in CREMAD_EMOTIONS and m.group(2) in CREMAD_SENTENCES  # noqa: E731
    for p, (actor, sentence, emo, level) in matching_wavs(root, _CREMAD, known, "CREMA-D", "1001_DFA_ANG_XX.wav",
                                                          problems):
        rows.append({"utt_id": p.stem, "corpus": "cremad", "path": str(p), "speaker": actor,
                     "gender": genders.get(actor, ""), "label": emo, "transcript": CREMAD_SENTENCES[sentence],
                     "intensity": level})
    return Manifest(make_table(drop_duplicates(rows, problems, "cremad"), ["intensity"]), problems)


def _cremad_genders(root: Path) -> dict[str, str]:
    demo = next(iter(root.rglob("VideoDemographics.csv")), None)
    if demo is None:
        return {}
    import pandas as pd

    df = pd.read_csv(demo, dtype=str, keep_default_na=False)
    sex = {"male": "M", "m": "M", "female": "F", "f": "F"}  # anything else (blank, unknown) stays ''
    return {str(r.ActorID).strip(): sex.get(str(r.Sex).strip().lower(), "") for r in df.itertuples()}


FOUR = ("neutral", "happy", "sad", "angry")
PRESETS = (
    LabelPreset("cremad6", "cremad", ("neutral", "happy", "sad", "angry", "disgust", "fearful"),
                {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry", "DIS": "disgust", "FEA": "fearful"}),
    LabelPreset("cremad4", "cremad", FOUR, {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry"}),
)

register_corpus(Corpus("cremad", read_cremad, labels="cremad4", protocol="lospk", presets=PRESETS,
                       summary="CREMA-D, AudioWAV/1001_DFA_ANG_XX.wav",
                       layout="AudioWAV/1001_DFA_ANG_XX.wav (actor, sentence, emotion, level)"))
