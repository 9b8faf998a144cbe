"""EmoDB: ``wav/SSTTTEV.wav`` (speaker, text, emotion letter, version)."""
from __future__ import annotations

import re
from pathlib import Path

from sercache._typing import Pathlike
from sercache.corpora import Corpus, LabelPreset, register_corpus
from sercache.corpora.base import Manifest, drop_duplicates, make_table
from sercache.corpora.conventions import matching_wavs
from sercache.store.records import ExtractionProblem

EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness",
                  "N": "neutral"}
EMODB_GENDER = {"03": "M", "08": "F", "09": "F", "10": "M", "11": "M", "12": "M", "13": "F", "14": "F", "15": "M",
                "16": "F"}
#: The gold transcripts: the release's ten sentences by text id (the file name's characters 3-5), from
#: the EmoDB documentation (http://emodb.bilderbar.info/docu/; Burkhardt et al., "A Database of German
#: Emotional Speech", Interspeech 2005, doi:10.21437/Interspeech.2005-446). Checked against the
#: ``transcript_de`` column of a public copy's labels.csv (all 535 files agree).
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
_EMODB = re.compile(r"^(\d\d)([ab]\d\d)([A-Z])([a-z])$")


def read_emodb(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """``wav/SSTTTEV.wav``: speaker, text id, emotion letter (German initial), version."""
    problems: list[ExtractionProblem] = []
    rows = []
    for p, (speaker, text_id, emo, _) in matching_wavs(Path(root), _EMODB, lambda m: m.group(3) in EMODB_EMOTIONS,
                                                       "EmoDB", "03a01Fa.wav", problems):
        rows.append({"utt_id": p.stem, "corpus": "emodb", "path": str(p), "speaker": speaker,
                     "gender": EMODB_GENDER.get(speaker, ""), "label": EMODB_EMOTIONS[emo],
                     "transcript": EMODB_TEXTS.get(text_id, ""), "text_id": text_id})
    return Manifest(make_table(drop_duplicates(rows, problems, "emodb"), ["text_id"]), problems)


FOUR = ("neutral", "happy", "sad", "angry")
PRESETS = (
    LabelPreset("emodb7", "emodb", ("neutral", "happy", "sad", "angry", "bored", "disgust", "fearful"),
                {"neutral": "neutral", "happiness": "happy", "sadness": "sad", "anger": "angry", "boredom": "bored",
                 "disgust": "disgust", "fear": "fearful"}),
    LabelPreset("emodb4", "emodb", FOUR, {"neutral": "neutral", "happiness": "happy", "sadness": "sad",
                                          "anger": "angry"}),
)

register_corpus(Corpus("emodb", read_emodb, labels="emodb4", protocol="lospk", presets=PRESETS,
                       summary="EmoDB (Berlin), wav/SSTTTEV.wav",
                       layout="wav/03a01Fa.wav (speaker 03, text a01, emotion F, version a)"))
