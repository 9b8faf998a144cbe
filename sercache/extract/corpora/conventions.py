"""Corpora whose labels live in file names: RAVDESS, EmoDB, CREMA-D."""
from __future__ import annotations

import re
from pathlib import Path

from sercache._typing import Pathlike
from sercache.extract.corpora.base import Manifest, drop_duplicates, make_table
from sercache.store.records import ExtractionProblem

RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgust", "08": "surprised"}
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
                  "N": "neutral"}
EMODB_GENDER = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F", "14": "F", "15": "M",
                "16": "F"}
EMODB_TEXTS = {
    "a01": "Der Lappen liegt auf dem Eisschrank.", "a02": "Das will sie am Mittwoch abgeben.",
    "a04": "Heute abend könnte ich es ihm sagen.",
    "a05": "Das schwarze Stück Papier befindet sich da oben neben dem Holzstück.",
    "a07": "In sieben Stunden wird es soweit sein.",
    "b01": "Was sind denn das für Tüten, die da unter dem Tisch stehen?",
    "b02": "Sie haben es gerade hochgetragen und jetzt gehen sie wieder runter.",
    "b03": "An den Wochenenden bin ich jetzt immer nach Hause gefahren und habe Agnes besucht.",
    "b09": "Ich will das eben wegbringen und dann mit Karl was trinken gehen.",
    "b10": "Die wird auf dem Platz sein, wo wir sie immer hinlegen.",
}
CREMAD_EMOTIONS = ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")
CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before", "TSI": "The surface is slick",
    "WSI": "We'll stop in a couple of minutes",
}

_RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_EMODB = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")
_CREMAD = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")


def _wavs(root: Path, pattern: str) -> list[Path]:
    files = sorted(root.rglob(pattern))
    if not files:
        raise FileNotFoundError(f"{root} holds no {pattern} files")
    return files


def _unmatched(path: Path, corpus: str, example: str) -> ExtractionProblem:
    return ExtractionProblem(path.stem, str(path), "manifest",
                             f"file name does not follow the {corpus} convention (e.g. {example}); skipped",
                             severity="warning")


def read_ravdess(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """``Actor_XX/MM-VV-EE-II-SS-RR-AA.wav`` (modality, vocal channel, emotion, intensity, statement, repetition, actor)."""
    problems: list[ExtractionProblem] = []
    rows = []
    for p in _wavs(Path(root), "*.wav"):
        m = _RAVDESS.match(p.stem)
        if not m or m.group(3) not in RAVDESS_EMOTIONS or m.group(5) not in RAVDESS_STATEMENTS:
            problems.append(_unmatched(p, "RAVDESS", "03-01-05-01-02-01-12.wav"))
            continue
        _, channel, emo, intensity, statement, _, actor = m.groups()
        rows.append({"utt_id": p.stem, "corpus": "ravdess", "path": str(p), "speaker": f"Actor_{actor}",
                     "gender": "M" if int(actor) % 2 else "F", "label": RAVDESS_EMOTIONS[emo],
                     "transcript": RAVDESS_STATEMENTS[statement],
                     "intensity": "strong" if intensity == "02" else "normal",
                     "vocal_channel": "song" if channel == "02" else "speech"})
    return Manifest(make_table(drop_duplicates(rows, problems, "ravdess"), ["intensity", "vocal_channel"]), problems)


def read_emodb(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """``wav/SSTTTEV.wav``: speaker, text id, emotion letter (German initial), version."""
    problems: list[ExtractionProblem] = []
    rows = []
    for p in _wavs(Path(root), "*.wav"):
        m = _EMODB.match(p.stem)
        if not m or m.group(3) not in EMODB_EMOTIONS:
            problems.append(_unmatched(p, "EmoDB", "03a01Fa.wav"))
            continue
        speaker, text_id, emo, _ = m.groups()
        rows.append({"utt_id": p.stem, "corpus": "emodb", "path": str(p), "speaker": speaker,
                     "gender": EMODB_GENDER.get(speaker, ""), "label": EMODB_EMOTIONS[emo],
                     "transcript": EMODB_TEXTS.get(text_id, ""), "text_id": text_id})
    return Manifest(make_table(drop_duplicates(rows, problems, "emodb"), ["text_id"]), problems)


def read_cremad(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """``AudioWAV/1001_DFA_ANG_XX.wav``; gender from ``VideoDemographics.csv`` when present."""
    root = Path(root)
    problems: list[ExtractionProblem] = []
    genders = _cremad_genders(root)
    rows = []
    for p in _wavs(root, "*.wav"):
        m = _CREMAD.match(p.stem)
        if not m or m.group(3) not in CREMAD_EMOTIONS or m.group(2) not in CREMAD_SENTENCES:
            problems.append(_unmatched(p, "CREMA-D", "1001_DFA_ANG_XX.wav"))
            continue
        actor, sentence, emo, level = m.groups()
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
