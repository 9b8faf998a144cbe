"""A generic CSV manifest: ``utt_id, path`` plus any known column (KEMDy, your own corpus)."""
from __future__ import annotations

from pathlib import Path

from sercache._typing import Pathlike
from sercache.corpora import Corpus, register_corpus
from sercache.corpora.base import (
    MANIFEST_COLUMNS,
    CorpusError,
    CorpusNotFoundError,
    Manifest,
    drop_duplicates,
    make_table,
    read_csv_rows,
)
from sercache.store.records import ExtractionProblem

OPTIONAL = ("label", "speaker", "session", "gender", "transcript", "valence", "arousal", "dominance", "fold",
            "dialog_type", "votes")


def read_csv_manifest(root: Pathlike, sessions: list[str] | None = None) -> Manifest:
    """Read ``ROOT`` (a .csv file, or a folder holding ``manifest.csv``).

    Relative paths are resolved against the CSV file's folder. Columns beyond the known
    ones are kept as text columns.
    """
    root = Path(root)
    csv = root / "manifest.csv" if root.is_dir() else root
    if not csv.is_file():
        raise CorpusNotFoundError(f"no CSV manifest at {csv}: give a .csv file with columns utt_id,path,...")
    df = read_csv_rows(csv)
    missing = [c for c in ("utt_id", "path") if c not in df.columns]
    if missing:
        raise CorpusError(f"{csv} lacks required column(s) {missing}; it has {list(df.columns)}")
    problems: list[ExtractionProblem] = []
    rows = []
    for lineno, rec in enumerate(df.to_dict("records"), start=2):
        if not rec["utt_id"]:
            problems.append(ExtractionProblem("", str(csv), "manifest", "empty utt_id; row skipped", line=lineno))
            continue
        if not rec["path"].strip():  # Path("") is the CSV's own folder: never "file not found" there
            problems.append(ExtractionProblem(rec["utt_id"], str(csv), "manifest", "empty path; row skipped",
                                              line=lineno))
            continue
        path = Path(rec["path"])
        row = {k: v for k, v in rec.items()}
        row.update(corpus=row.get("corpus") or "csv", path=str(path if path.is_absolute() else csv.parent / path),
                   _where=str(csv), _line=lineno)
        for c in ("valence", "arousal", "dominance"):
            if row.get(c, "") != "":
                try:
                    float(row[c])
                except ValueError:
                    problems.append(ExtractionProblem(row["utt_id"], str(csv), "manifest",
                                                      f"{c}={row[c]!r} is not a number; set to NaN",
                                                      severity="warning", line=lineno))
                    row[c] = ""
        rows.append(row)
    if sessions:
        wanted = set(sessions)
        rows = [r for r in rows if r.get("session", "") in wanted]
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    return Manifest(make_table(drop_duplicates(rows, problems, "csv"), extra), problems)


register_corpus(Corpus("csv", read_csv_manifest,
                       summary="a manifest .csv (utt_id,path,...); default folds by session, else by speaker",
                       layout="a .csv file (or ROOT/manifest.csv) with columns utt_id,path,... (paths relative to it)"))
