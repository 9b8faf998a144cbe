"""What one ``sercache extract`` call asks for, resolved and validated before any work."""
from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sercache.keyvalue import parse_pairs
from sercache.splits.corpora import corpora, get_corpus
from sercache.store.layout import check_name

DEFAULT_SSL_MODEL = "facebook/hubert-large-ls960-ft"
DEFAULT_ASR_MODEL = "facebook/wav2vec2-large-960h"
DEFAULT_TEXT_MODEL = "bert-base-uncased"

#: Stream kinds in the order they run (text_asr reads what asr wrote).
STREAM_KINDS = ("ssl", "asr", "text_asr", "text_gold", "mfcc", "logmel", "spectrogram", "egemaps", "compare")
DEFAULT_STREAMS = ("ssl", "asr", "text_asr", "text_gold", "mfcc")
MIN_CHUNK_SECONDS = 1.0
MFCC_MEL_BANDS = 128  # sercache.features.spectral.mfcc's n_mels


class ExtractError(ValueError):
    """A request that cannot be carried out (raised before any work starts)."""


class StrictStop(ExtractError):
    """--strict met a failing utterance: the input data is at fault, not the request (CLI exit code 1)."""


@dataclass
class ExtractOptions:
    """Everything ``sercache extract`` takes; see the CLI help for each option."""

    root: Path
    corpus: str
    out: Path
    sessions: list[str] | None = None
    streams: tuple[str, ...] = DEFAULT_STREAMS
    stream_names: dict[str, str] = field(default_factory=dict)   # kind -> custom name
    ssl_model: str = DEFAULT_SSL_MODEL
    asr_model: str = DEFAULT_ASR_MODEL
    text_model: str = DEFAULT_TEXT_MODEL
    layers: str | None = None          # ssl layers; None = last
    text_layers: str | None = None     # text-encoder layers; None = last
    device: str = "auto"
    precision: str = "auto"            # compute precision: fp32 | fp16 | bf16 | auto
    dtype: str = "float16"             # storage dtype of model features
    batch_seconds: float | None = None  # None = per device (0 on CPU, 200 s on GPU)
    chunk_seconds: float = 30.0
    chunk_overlap: float = 5.0
    text_batch_size: int = 32
    n_mfcc: int = 26
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    strict: bool = False
    flush_seconds: float = 30.0
    flush_mb: float = 64.0
    progress: bool = True
    command: str = ""

    def __post_init__(self) -> None:
        self.root, self.out = Path(self.root), Path(self.out)
        unknown = [s for s in self.streams if s not in STREAM_KINDS]
        if unknown:
            raise ExtractError(f"unknown stream {unknown[0]!r}; valid streams: {', '.join(STREAM_KINDS)}")
        for kind, name in self.stream_names.items():
            if kind not in STREAM_KINDS:
                raise ExtractError(f"--stream-name {kind}={name}: {kind!r} is not a stream; valid: {', '.join(STREAM_KINDS)}")
            check_name(name, "stream")
        names = [self.name_of(k) for k in self.streams]
        if len(set(names)) != len(names):
            raise ExtractError(f"two streams would share a name: {names}")
        self.streams = tuple(k for k in STREAM_KINDS if k in self.streams)
        self._check_numbers()

    def _check_numbers(self) -> None:
        """Numbers that would fail late in torch, or store something other than what provenance says."""
        checks = [
            ("--batch-seconds", self.batch_seconds, self.batch_seconds is None or self.batch_seconds >= 0,
             "0 (one utterance per batch) or more"),
            ("--chunk-seconds", self.chunk_seconds, self.chunk_seconds >= MIN_CHUNK_SECONDS,
             f"at least {MIN_CHUNK_SECONDS:g} s (a chunk must span several encoder frames)"),
            ("--chunk-overlap", self.chunk_overlap, 0 <= self.chunk_overlap < self.chunk_seconds,
             "0 or more, and less than --chunk-seconds"),
            ("--mfcc-coefficients", self.n_mfcc, 1 <= self.n_mfcc <= MFCC_MEL_BANDS,
             f"1 to {MFCC_MEL_BANDS} (the mel bands MFCCs are computed from)"),
            ("--flush-seconds", self.flush_seconds, self.flush_seconds >= 0, "0 or more"),
            ("text batch size", self.text_batch_size, self.text_batch_size >= 1, "at least 1"),
        ]
        for option, value, ok, rule in checks:
            if not ok:
                raise ExtractError(f"{option} {value}: must be {rule}")

    def name_of(self, kind: str) -> str:
        return self.stream_names.get(kind, kind)


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"2/8"`` -> (2, 8); shards count from 1."""
    if not spec:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ExtractError(f"--shard {spec!r}: use i/N with 1 <= i <= N, e.g. --shard 2/8")
    return int(m.group(1)), int(m.group(2))


def parse_stream_names(specs: list[str]) -> dict[str, str]:
    """``["ssl=wavlm_large"]`` -> ``{"ssl": "wavlm_large"}``."""
    return parse_pairs(specs, "--stream-name", "KIND=NAME", "ssl=wavlm_large", ExtractError)


def parse_sessions(specs: list[str] | None) -> list[str] | None:
    """``["1", "Session3", "4,5"]`` -> ``["1", "3", "4", "5"]``."""
    if not specs:
        return None
    out = []
    for spec in specs:
        for s in re.split(r"[,\s]+", spec):
            if s:
                s = s[7:] if s.lower().startswith("session") else s
                out.append(str(int(s)) if s.isdigit() else s)
    return out


def base_shard(table: pd.DataFrame) -> pd.Series:
    """Natural shards: one per session where every utterance has one, else ``all``."""
    sessions = table["session"].astype(str)
    if len(sessions) and (sessions != "").all():
        return "Session" + sessions
    return pd.Series("all", index=table.index)


def problem_shards(corpus: str | None, path: str, names: list[str]) -> list[str]:
    """The shards a problem with no utterance (a bad label file at ``path``) is recorded in.

    The corpus's own rule (``problem_shards`` of its registry entry), else the ``Session<k>`` shards
    the path names, else all of ``names``.
    """
    rule = get_corpus(corpus).problem_shards if corpus in corpora() else None
    if rule is not None:
        return rule(path, names)
    m = re.search(r"Session(\d+)", path)
    targets = [s for s in names if m and (s == f"Session{m.group(1)}" or s.startswith(f"Session{m.group(1)}-"))]
    return targets or names


def assign_shards(table: pd.DataFrame, shard: tuple[int, int] | None, corpus: str | None = None) -> pd.Series:
    """Shard name per row. ``--shard i/N`` keeps rows whose CRC-32 of the id is ``i-1`` mod N.

    The base names are the corpus's (``shards`` of its registry entry), else :func:`base_shard`.
    Hashing the id (not the row position) keeps every utterance's shard stable when the
    corpus gains or loses files.
    """
    rule = get_corpus(corpus).shards if corpus in corpora() else None
    names = (rule or base_shard)(table)
    if shard is None:
        return names
    i, n = shard
    keep = table.utt_id.map(lambda u: zlib.crc32(u.encode()) % n == i - 1)
    return (names + f"-shard{i}of{n}").where(keep, "")
