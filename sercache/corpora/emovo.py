"""EMOVO (Italian emotional speech): ``<speaker>/<emotion>-<speaker>-<sentence>.wav``, e.g. ``f1/dis-f1-b1.wav``.

Six actors (``f1``-``f3``, ``m1``-``m3``) read 14 sentences in seven emotions, coded by their Italian
names: ``dis`` disgusto, ``gio`` gioia, ``neu`` neutrale, ``pau`` paura, ``rab`` rabbia, ``sor`` sorpresa,
``tri`` tristezza (Costantini et al., "EMOVO Corpus: an Italian Emotional Speech Database", LREC 2014).
The codes are kept as the corpus writes them; the presets below map them to classes.
"""
from __future__ import annotations

import re
from pathlib import Path

from sercache._typing import Pathlike
from sercache.corpora import Corpus, LabelPreset, register_corpus
from sercache.corpora.base import Manifest, drop_duplicates, make_table
from sercache.corpora.conventions import matching_wavs
from sercache.store.records import ExtractionProblem

#: EMOVO's emotion code -> the class it names.
EMOVO_EMOTIONS = {"neu": "neutral", "gio": "happy", "tri": "sad", "rab": "angry", "pau": "fearful",
                  "dis": "disgust", "sor": "surprised"}
_EMOVO = re.compile(r"^([a-z]{3})-([fm]\d)-([a-z]\d)$")


def read_emovo(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """Every ``<emotion>-<speaker>-<sentence>.wav`` under ``root`` (speaker folders or flat); gender from the speaker."""
    problems: list[ExtractionProblem] = []
    rows = []
    known = lambda m: m.group(1) in EMOVO_EMOTIONS  # noqa: E731
    for p, (emo, speaker, sentence) in matching_wavs(Path(root), _EMOVO, known, "EMOVO", "dis-f1-b1.wav", problems):
        rows.append({"utt_id": p.stem, "corpus": "emovo", "path": str(p), "speaker": speaker,
                     "gender": speaker[0].upper(), "label": emo, "transcript": "", "sentence": sentence})
    return Manifest(make_table(drop_duplicates(rows, problems, "emovo"), ["sentence"]), problems)


FOUR = ("neutral", "happy", "sad", "angry")
PRESETS = (
    LabelPreset("emovo7", "emovo", tuple(EMOVO_EMOTIONS.values()), dict(EMOVO_EMOTIONS),
                "All seven emotions of the release."),
    LabelPreset("emovo4", "emovo", FOUR, {c: n for c, n in EMOVO_EMOTIONS.items() if n in FOUR},
                "The standard 4-class set: neu, gio, tri, rab; pau, dis and sor dropped."),
)

register_corpus(Corpus("emovo", read_emovo, labels="emovo4", protocol="lospk", presets=PRESETS,
                       summary="EMOVO (Italian), f1/dis-f1-b1.wav",
                       layout="f1/dis-f1-b1.wav (emotion, speaker, sentence)"))
