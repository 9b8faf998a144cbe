"""The manifest: one row per utterance, the same columns for every corpus (what every reader builds)."""
from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sercache.errors import SercacheError
from sercache.store.records import ExtractionProblem

log = logging.getLogger(__name__)


class CorpusError(SercacheError, ValueError):
    """A corpus folder or manifest that cannot be read as given (the message names the file and the fix)."""


class CorpusNotFoundError(SercacheError, FileNotFoundError):
    """A corpus file or folder that is not where it was looked for."""

#: Columns of every manifest, in order. Text columns are '' where unknown, numbers NaN.
MANIFEST_COLUMNS = {
    "utt_id": str, "corpus": str, "path": str, "speaker": str, "session": str, "gender": str,
    "label": str,          # the corpus's own code (IEMOCAP 'exc', CREMA-D 'ANG'); mapping belongs to splits
    "valence": float, "arousal": float, "dominance": float,
    "transcript": str,     # gold transcript, '' where unknown
    "dialog_type": str,    # IEMOCAP impro/script, else ''
    "votes": str,          # JSON {evaluator: [categories]}: per-annotator votes for soft labels
    "start_s": float, "end_s": float,  # position in the source dialog (IEMOCAP)
    "fold": str,           # a predefined fold (csv manifests), else ''
    "duration_s": float, "num_samples": float, "sample_rate": float, "channels": float,
    "audio_sha1": str,     # checksum of the audio file bytes
}


@dataclass
class Manifest:
    """A corpus read from disk: the utterance table and everything that went wrong reading it."""

    table: pd.DataFrame
    problems: list[ExtractionProblem] = field(default_factory=list)


def make_table(rows: list[dict[str, Any]], extra_columns: Iterable[str] = ()) -> pd.DataFrame:
    """Rows -> a DataFrame with every manifest column (defaults filled), sorted by utt_id."""
    columns = list(MANIFEST_COLUMNS) + [c for c in extra_columns if c not in MANIFEST_COLUMNS]
    data: dict[str, list[Any]] = {c: [] for c in columns}
    for row in rows:
        for c in columns:
            kind = MANIFEST_COLUMNS.get(c, str)
            value = row.get(c)
            if kind is float:
                data[c].append(np.nan if value is None or value == "" else float(value))
            else:
                data[c].append("" if value is None else (json.dumps(value) if isinstance(value, (dict, list)) else str(value)))
    df = pd.DataFrame(data, columns=columns)
    for c in columns:
        if MANIFEST_COLUMNS.get(c, str) is str:
            df[c] = df[c].astype(object)
    return df.sort_values("utt_id", kind="stable").reset_index(drop=True)


def drop_duplicates(rows: list[dict[str, Any]], problems: list[ExtractionProblem], source: str) -> list[dict[str, Any]]:
    """Keep the first row of each utt_id; record the others (path and line where known)."""
    seen: dict[str, dict[str, Any]] = {}
    for row in rows:
        uid = row["utt_id"]
        if uid in seen:
            problems.append(ExtractionProblem(
                uid, str(row.get("_where", row.get("path", ""))), "manifest",
                f"duplicate utterance id (first seen in {seen[uid].get('_where', seen[uid].get('path', ''))}); "
                "this occurrence is ignored", severity="warning", line=int(row.get("_line", -1))))
            continue
        seen[uid] = row
    return list(seen.values())


def read_text(path: Path, problems: list[ExtractionProblem]) -> str:
    """UTF-8, or latin-1 with a warning (IEMOCAP holds a few non-UTF-8 bytes in some releases)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        problems.append(ExtractionProblem("", str(path), "manifest", f"not valid UTF-8 (byte {exc.start}); "
                                          "decoded as latin-1", severity="warning", line=line))
        return raw.decode("latin-1")


def read_csv_rows(path: Path, what: str = "a CSV manifest") -> pd.DataFrame:
    """Every row of a CSV file with a header, as text ('' where empty).

    Raises ValueError naming the line of a row with more fields than the header (pandas would
    silently take its first value as the row's index, shifting every column), and for a file with
    a header and no rows.
    """
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise CorpusError(f"{path} is empty: {what} needs a header line and one row per utterance")
        rows = 0
        for row in reader:
            if len(row) > len(header):
                raise CorpusError(
                    f"{path}, line {reader.line_num}: {len(row)} fields, but the header has {len(header)} "
                    f"({','.join(header)}). Quote a value that holds a comma (\"a, b\"), or remove the extra field.")
            rows += bool(row)
    if not rows:
        raise CorpusError(f"{path} has a header ({','.join(header)}) and no rows: add one row per utterance")
    return pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
