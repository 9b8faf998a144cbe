"""What extractors hand to the store: one utterance's features, or one problem."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from sercache.store.errors import CacheValueError

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class UtteranceFeatures:
    """The output of one stream for one utterance.

    Args:
        utt_id: the manifest key.
        frames: ragged arrays that share their first axis (time frames or text tokens), e.g.
            ``{"layer_24": (frames, 1024) float16}``, or ``{"token": (tokens,) str, ...}``.
        per_utterance: one value per utterance: a scalar, a string or a fixed-shape array,
            e.g. ``{"pooled_mean": (n_layers, dim)}``, ``{"text": "HELLO"}``.
    """

    utt_id: str
    frames: dict[str, np.ndarray] = field(default_factory=dict)
    per_utterance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lengths = {name: len(a) for name, a in self.frames.items()}
        if len(set(lengths.values())) > 1:
            raise CacheValueError(f"{self.utt_id}: ragged arrays disagree on length: {lengths}")

    @property
    def n_frames(self) -> int:
        return next((len(a) for a in self.frames.values()), 0)

    @property
    def nbytes(self) -> int:
        n = sum(a.nbytes for a in self.frames.values() if a.dtype != object)
        return n + sum(np.asarray(v).nbytes for v in self.per_utterance.values() if not isinstance(v, str))


@dataclass
class ExtractionProblem:
    """A row of a cache's errors table: which utterance, where, and why.

    ``severity`` is ``"error"`` when the utterance is missing from the stream, and
    ``"warning"`` when it was stored but something was altered or suspicious (for example a
    transcript decoded as latin-1, or text truncated to the model's maximum length).
    """

    utt_id: str
    path: str
    stage: str
    reason: str
    severity: str = "error"
    line: int = -1


PROBLEM_COLUMNS = [f.name for f in fields(ExtractionProblem)]


def problems_frame(problems: list[ExtractionProblem]) -> pd.DataFrame:
    import pandas as pd  # here: the records themselves are imported by the CLI's option building

    if not problems:
        return pd.DataFrame({c: pd.Series(dtype=("int64" if c == "line" else object)) for c in PROBLEM_COLUMNS})
    return pd.DataFrame([p.__dict__ for p in problems], columns=PROBLEM_COLUMNS)


def problems_from_frame(df: pd.DataFrame) -> list[ExtractionProblem]:
    return [ExtractionProblem(**{c: (int(r[c]) if c == "line" else str(r[c])) for c in PROBLEM_COLUMNS}) for _, r in df.iterrows()]


def checksum(value: Any) -> int:
    """CRC-32 of one utterance's stored bytes (numbers) or UTF-8 text (strings).

    Recorded at write time and recomputed by ``cache verify`` and by training loads, so a
    flipped byte in a stored frame is caught and named.
    """
    if isinstance(value, str):
        return zlib.crc32(value.encode("utf-8"))
    arr = np.asarray(value)
    if arr.dtype == object or arr.dtype.kind in "US":
        return zlib.crc32("\x1f".join(str(v) for v in arr.ravel()).encode("utf-8"))
    return zlib.crc32(np.ascontiguousarray(arr).view(np.uint8).data)
