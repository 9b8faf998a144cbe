"""MSP-Podcast, read from the release layout: ``Audios/``, ``Labels/labels_consensus.csv``, ``Transcripts/``.

What the release holds, checked against its public documentation and loaders:

* The release readme (1.12, June 2024; a copy is in the supplementary material of an OpenReview
  submission) lists ``Audios/`` (the speaking turns as .wav), ``Labels/labels_consensus.csv``
  ("aggregated annotations in CSV format"), ``Transcripts/`` (human transcripts, one file per turn)
  and ``Partition.txt``, "suggested partition for Train, Development, Test1, Test2, and Test3 sets".
* The columns of labels_consensus.csv, as public loaders read them: ``FileName`` (with ``.wav``,
  e.g. ``MSP-PODCAST_0002_0033.wav``), ``EmoClass``, ``EmoAct``, ``EmoVal``, ``EmoDom``, ``SpkrID``
  (``Unknown`` where the speaker is not identified), ``Gender`` and ``Split_Set`` (``Train``,
  ``Development``, ``Test1``...), e.g. the MSP lab's challenge-style loaders
  (``df[df.Split_Set == "Development"]``, ``df[df.SpkrID != "Unknown"]``) and Strong-AI-Lab/emotion's
  ``datasets/MSP-PODCAST/process.py``.
* ``EmoClass`` codes (same sources): A anger, S sadness, H happiness, U surprise, F fear, D disgust,
  C contempt, N neutral, O other, X no agreement. Attributes are on a 1-7 scale.
* The MSP lab's page: Test3's labels and speakers are not public (its rows may carry none).

Not verified against the documentation: the ``Gender`` spelling (read as Male/Female or M/F; anything
else is left unknown). Unknown codes, attributes that are not numbers and partitions outside the
documented ones are kept, with a warning naming the line.
"""
from __future__ import annotations

import csv
from pathlib import Path

from sercache._typing import Pathlike
from sercache.corpora import Corpus, LabelPreset, register_corpus
from sercache.corpora.base import (
    CorpusError,
    CorpusNotFoundError,
    Manifest,
    drop_duplicates,
    make_table,
    read_text,
)
from sercache.store.records import ExtractionProblem

LABELS = Path("Labels") / "labels_consensus.csv"
COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")
CODES = {"A": "anger", "S": "sadness", "H": "happiness", "U": "surprise", "F": "fear", "D": "disgust",
         "C": "contempt", "N": "neutral", "O": "other", "X": "no agreement"}
PARTITIONS = ("Train", "Development", "Test1", "Test2", "Test3")
GENDERS = {"male": "M", "m": "M", "female": "F", "f": "F"}
ATTRIBUTES = {"EmoVal": "valence", "EmoAct": "arousal", "EmoDom": "dominance"}


def read_msp_podcast(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """Every row of labels_consensus.csv; ``sessions`` selects partitions (``--session Train,Test1``)."""
    root = Path(root)
    labels = root / LABELS
    if not labels.is_file():
        raise CorpusNotFoundError(f"{root} has no {LABELS}: give the MSP-Podcast release folder (the one holding "
                                  "Audios/, Labels/ and Transcripts/)")
    problems: list[ExtractionProblem] = []
    with labels.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise CorpusError(f"{labels} lacks column(s) {missing}; it has {reader.fieldnames}. Expected the release's "
                              f"labels_consensus.csv ({', '.join(COLUMNS)})")
        records = list(reader)
    wanted = {s.lower() for s in sessions} if sessions else None
    rows = []
    for line, rec in enumerate(records, start=2):  # line 1 is the header
        row = _row(root, labels, line, {k: (v or "").strip() for k, v in rec.items() if k}, problems)
        if row is not None and (wanted is None or row["partition"].lower() in wanted):
            rows.append(row)
    if wanted and not rows:
        found = sorted({(r.get("Split_Set") or "").strip() for r in records})
        raise CorpusNotFoundError(f"{labels} has no utterance in partition(s) {sessions} (partitions: {found})")
    return Manifest(make_table(drop_duplicates(rows, problems, "msp-podcast"), ["partition"]), problems)


def _row(root: Path, labels: Path, line: int, rec: dict[str, str], problems: list[ExtractionProblem]) -> dict | None:
    """One CSV row -> a manifest row (None: no file name); odd values are kept or blanked, with a warning."""
    def warn(uid: str, message: str) -> None:
        problems.append(ExtractionProblem(uid, str(labels), "manifest", message, severity="warning", line=line))

    name = rec["FileName"]
    if not name:
        problems.append(ExtractionProblem("", str(labels), "manifest", "empty FileName; row skipped", line=line))
        return None
    uid = Path(name).stem
    code, partition = rec["EmoClass"], rec["Split_Set"]
    if code and code not in CODES:
        warn(uid, f"unknown EmoClass {code!r} (known: {', '.join(CODES)}); kept, but no label preset maps it")
    if partition not in PARTITIONS:
        warn(uid, f"Split_Set {partition!r} is not one of {', '.join(PARTITIONS)}; kept")
    row = {"utt_id": uid, "corpus": "msp-podcast", "path": str(root / "Audios" / name), "label": code,
           "speaker": "" if rec["SpkrID"].lower() in ("", "unknown") else rec["SpkrID"],
           "gender": GENDERS.get(rec["Gender"].lower(), ""), "partition": partition,
           "transcript": _transcript(root, uid, problems), "_where": str(labels), "_line": line}
    for column, field in ATTRIBUTES.items():
        try:
            row[field] = float(rec[column]) if rec[column] else ""
        except ValueError:
            warn(uid, f"{column}={rec[column]!r} is not a number; set to NaN")
            row[field] = ""
    return row


def _transcript(root: Path, uid: str, problems: list[ExtractionProblem]) -> str:
    path = root / "Transcripts" / f"{uid}.txt"
    return " ".join(read_text(path, problems).split()) if path.is_file() else ""


def partition_shards(table: object) -> object:
    """One shard per official partition (``Train``, ``Development``, ``Test1``...); ``unpartitioned`` where none."""
    parts = table["partition"].astype(str)  # type: ignore[index]
    return parts.where(parts != "", "unpartitioned")


FOUR = ("neutral", "happy", "sad", "angry")
PRESETS = (
    LabelPreset("msp4", "msp-podcast", FOUR, {"N": "neutral", "H": "happy", "S": "sad", "A": "angry"},
                "EmoClass N, H, S, A; the others (U F D C, O other, X no agreement) dropped."),
    LabelPreset("msp8", "msp-podcast", (*FOUR, "surprised", "fearful", "disgust", "contempt"),
                {"N": "neutral", "H": "happy", "S": "sad", "A": "angry", "U": "surprised", "F": "fearful",
                 "D": "disgust", "C": "contempt"},
                "The eight primary emotions (the MSP-Podcast challenges' set); O (other) and X (no agreement) "
                "dropped."),
)

register_corpus(Corpus("msp-podcast", read_msp_podcast, labels="msp4", protocol="partition", shards=partition_shards,
                       presets=PRESETS,
                       summary="MSP-Podcast release (Audios/, Labels/labels_consensus.csv, Transcripts/)",
                       layout="Audios/MSP-PODCAST_0001_0008.wav, listed in Labels/labels_consensus.csv"))
