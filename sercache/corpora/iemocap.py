"""IEMOCAP, read from the release layout (``IEMOCAP_full_release/SessionN/...``)."""
from __future__ import annotations

import re
from pathlib import Path

from sercache._typing import Pathlike
from sercache.corpora import Corpus, LabelPreset, add_preset_alias, register_corpus
from sercache.corpora.base import (
    CorpusError,
    CorpusNotFoundError,
    Manifest,
    drop_duplicates,
    make_table,
    read_text,
)
from sercache.store.records import ExtractionProblem

KNOWN_CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx")

_HEADER = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+"
                     r"\[\s*([-\d.]+)\s*,\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\]\s*$")
_VOTE = re.compile(r"^(C-[^:\s]+):\s*(.*?)\s*(\(.*\))?\s*$")
_TRANSCRIPT = re.compile(r"^(Ses\d\d[FM]_\S+)\s+\[[\d.]+-[\d.]+\]:\s?(.*)$")
_UTT_ID = re.compile(r"^Ses(\d\d)[FM]_(impro|script)\w*_([FM])\d+$")
_ID_TOKEN = re.compile(r"\bSes\d\d[FM]_")  # a line naming an utterance: a block header, maybe malformed


def parse_utt_id(utt_id: str) -> dict[str, str]:
    """Session, speaker, gender and dialog type from an IEMOCAP utterance id.

    The speaker is the session plus the first letter of the last '_' part: in
    ``Ses01F_impro01_M000`` the speaker is ``Ses01M`` (the ``F`` after the session number
    names the actor who led the dialog, not the speaker).
    """
    m = _UTT_ID.match(utt_id)
    if not m:
        raise CorpusError(f"{utt_id!r} is not an IEMOCAP utterance id (e.g. Ses01F_impro01_F000)")
    session, kind, gender = m.groups()
    return {"session": str(int(session)), "speaker": f"Ses{session}{gender}", "gender": gender,
            "dialog_type": kind, "dialog": utt_id.rsplit("_", 1)[0]}


def parse_votes(text: str) -> list[str]:
    """``'Frustration; Anger;'`` -> ``['Frustration', 'Anger']``; ``'Other:curious'`` -> ``'Other'``."""
    out = []
    for part in text.split(";"):
        part = part.strip()
        if part:
            out.append(part.split(":", 1)[0].strip())
    return out


def parse_emo_evaluation(path: Path, problems: list[ExtractionProblem]) -> list[dict]:
    """Blocks of one EmoEvaluation file -> rows (times, consensus code, V/A/D, categorical votes)."""
    rows: list[dict] = []
    current: dict | None = None
    for lineno, line in enumerate(read_text(path, problems).splitlines(), start=1):
        line = line.rstrip("\r\n")
        if not line.strip() or line.startswith("%"):
            continue
        if line.startswith("[") or (not line.startswith(("C-", "A-")) and _ID_TOKEN.search(line)):
            m = _HEADER.match(line)
            current = None
            if not m:
                problems.append(ExtractionProblem("", str(path), "manifest",
                                                  f"malformed EmoEvaluation line skipped: {line.strip()[:80]!r}",
                                                  line=lineno))
                continue
            start, end, uid, code, v, a, d = m.groups()
            current = {"utt_id": uid, "label": code, "start_s": start, "end_s": end, "valence": v,
                       "arousal": a, "dominance": d, "votes": {}, "_where": str(path), "_line": lineno}
            rows.append(current)
        elif current is not None and line.startswith("C-"):
            m = _VOTE.match(line.strip())
            if m:
                evaluator, cats, _ = m.groups()
                current["votes"][evaluator] = parse_votes(cats)
    return rows


def parse_transcriptions(path: Path, problems: list[ExtractionProblem]) -> dict[str, str]:
    """``Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.`` lines; others (``M: ...``, ``*XX*``) skipped."""
    out = {}
    for line in read_text(path, problems).splitlines():
        m = _TRANSCRIPT.match(line.strip())
        if m and _UTT_ID.match(m.group(1)):
            out[m.group(1)] = m.group(2).strip()
    return out


def read_iemocap(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """Every utterance with an EmoEvaluation entry, in the selected sessions (default: all)."""
    root = Path(root)
    session_dirs = sorted(p for p in root.glob("Session*") if p.is_dir() and p.name[7:].isdigit())
    if not session_dirs:
        raise CorpusNotFoundError(f"{root} holds no Session1..Session5 folders: give the IEMOCAP_full_release folder")
    if sessions:
        wanted = {str(int(s)) for s in sessions}
        found = {p.name[7:] for p in session_dirs}
        missing = sorted(wanted - {str(int(f)) for f in found})
        if missing:
            raise CorpusNotFoundError(f"{root} has no Session{missing[0]} (found: {[p.name for p in session_dirs]})")
        session_dirs = [p for p in session_dirs if str(int(p.name[7:])) in wanted]
    problems: list[ExtractionProblem] = []
    rows: list[dict] = []
    for sdir in session_dirs:
        eval_dir = sdir / "dialog" / "EmoEvaluation"
        if not eval_dir.is_dir():
            problems.append(ExtractionProblem("", str(eval_dir), "manifest", "folder missing: no labels for this session"))
            continue
        for eval_file in sorted(eval_dir.glob("*.txt")):  # Categorical/, Attribute/... are subfolders: not matched
            dialog = eval_file.stem
            transcripts_file = sdir / "dialog" / "transcriptions" / f"{dialog}.txt"
            transcripts = parse_transcriptions(transcripts_file, problems) if transcripts_file.exists() else {}
            for row in parse_emo_evaluation(eval_file, problems):
                uid = row["utt_id"]
                try:
                    ids = parse_utt_id(uid)
                except ValueError as exc:
                    problems.append(ExtractionProblem(uid, str(eval_file), "manifest", str(exc), line=row["_line"]))
                    continue
                if row["label"] not in KNOWN_CODES:
                    problems.append(ExtractionProblem(
                        uid, str(eval_file), "manifest", f"unknown emotion code {row['label']!r} (known: "
                        f"{', '.join(KNOWN_CODES)}); kept, but no label preset maps it", severity="warning",
                        line=row["_line"]))
                row.update(ids, corpus="iemocap", transcript=transcripts.get(uid, ""),
                           path=str(sdir / "sentences" / "wav" / ids["dialog"] / f"{uid}.wav"))
                rows.append(row)
    rows = drop_duplicates(rows, problems, "iemocap")
    return Manifest(make_table(rows), problems)


FOUR = ("neutral", "happy", "sad", "angry")
PRESETS = (
    LabelPreset("iemocap4", "iemocap", FOUR, {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad",
                                              "ang": "angry"},
                "The standard 4-class set (5531 utterances): exc merged into happy; other codes dropped."),
    LabelPreset("iemocap4-exc", "iemocap", FOUR, {"neu": "neutral", "exc": "happy", "sad": "sad", "ang": "angry"},
                "GLAM's set: happy = excited only, hap dropped."),
    LabelPreset("iemocap4-fru", "iemocap", FOUR, {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad",
                                                  "ang": "angry", "fru": "angry"},
                "The single-layer paper's code: as iemocap4, plus frustration merged into angry."),
    LabelPreset("iemocap6", "iemocap", (*FOUR, "excited", "frustrated"),
                {"neu": "neutral", "hap": "happy", "sad": "sad", "ang": "angry", "exc": "excited",
                 "fru": "frustrated"},
                "Excited and frustrated kept as classes of their own."),
)

register_corpus(Corpus("iemocap", read_iemocap, labels="iemocap4", protocol="loso", presets=PRESETS,
                       summary="IEMOCAP_full_release (Session1..5), shards by session",
                       layout="Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav, with labels in "
                       "Session1/dialog/EmoEvaluation/Ses01F_impro01.txt"))
add_preset_alias("glam", "iemocap4-exc")
