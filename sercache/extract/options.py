"""What one ``sercache extract`` call asks for, resolved and validated before any work."""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from sercache.corpora import corpora, get_corpus
from sercache.errors import SercacheError
from sercache.features.streams import (
    COMMON_FIELDS,
    ExtractError,
    StreamConfig,
    all_options,
    default_streams,
    options_of,
    run_order,
    stream_kinds,
)
from sercache.features.streams.asr import DEFAULT_ASR_MODEL
from sercache.features.streams.spectral import MFCC_MEL_BANDS
from sercache.features.streams.ssl import DEFAULT_SSL_MODEL
from sercache.features.streams.text import DEFAULT_TEXT_MODEL
from sercache.option_pairs import parse_pairs
from sercache.store.layout import check_name

__all__ = ["DEFAULT_ASR_MODEL", "DEFAULT_SSL_MODEL", "DEFAULT_STREAMS", "DEFAULT_TEXT_MODEL", "MFCC_MEL_BANDS",
           "STREAM_KINDS", "ExtractError", "ExtractOptions", "StrictStop"]

#: Every stream kind, in the registry's listing order (streams run in the order --streams gives).
STREAM_KINDS = tuple(stream_kinds())
DEFAULT_STREAMS = default_streams()
MIN_CHUNK_SECONDS = 1.0


class StrictStop(ExtractError):
    """--strict met a failing utterance: the input data is at fault, not the request (CLI exit code 1)."""

    exit_code = 1


class UnknownOptionError(SercacheError, TypeError):
    """A keyword that is neither a shared option nor one of a stream kind's (a TypeError, as Python's own is)."""


@dataclass(init=False)
class ExtractOptions:
    """Everything ``sercache extract`` takes; see the CLI help for each option.

    The fields are what every stream shares; each stream kind's own options (``ssl_model``,
    ``layers``, ``text_model``, ``n_mfcc``...: see sercache.features.streams) are keywords too,
    kept in ``options`` and readable as attributes. :meth:`stream_configs` turns them into
    ``{stream name: config}``.
    """

    root: Path
    corpus: str
    out: Path
    sessions: list[str] | None = None
    streams: tuple[str, ...] = DEFAULT_STREAMS
    stream_names: dict[str, str] = field(default_factory=dict)   # kind -> custom name
    device: str = "auto"
    precision: str = "auto"            # compute precision: fp32 | fp16 | bf16 | auto
    dtype: str = "float16"             # storage dtype of model features
    batch_seconds: float | None = None  # None = per device (0 on CPU, 200 s on GPU)
    chunk_seconds: float = 30.0
    chunk_overlap: float = 5.0
    shard: tuple[int, int] | None = None
    overwrite: bool = False
    strict: bool = False
    flush_seconds: float = 30.0
    flush_mb: float = 64.0
    progress: bool = True
    command: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # stream option dest -> value

    def __init__(self, root: Path | str, corpus: str, out: Path | str, **kwargs: Any) -> None:
        self.root, self.corpus, self.out = root, corpus, out  # type: ignore[assignment]
        for f in fields(self)[3:]:
            if f.name in kwargs:
                setattr(self, f.name, kwargs.pop(f.name))
            else:
                setattr(self, f.name, f.default_factory() if f.default is MISSING else f.default)  # type: ignore[misc]
        declared = all_options()
        unknown = sorted((set(kwargs) | set(self.options)) - set(declared))
        if unknown:
            raise UnknownOptionError(f"ExtractOptions got an unexpected keyword argument {unknown[0]!r}; stream options: "
                                     f"{', '.join(declared)}")
        self.options = {d: kwargs.get(d, self.options.get(d, o.default)) for d, o in declared.items()}
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:  # a stream option, e.g. opts.ssl_model
        options = self.__dict__.get("options", {})
        if name in options:
            return options[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __post_init__(self) -> None:
        self.root, self.out = Path(self.root), Path(self.out)
        if not self.streams:
            raise ExtractError(f"--streams: no stream given; choose from {', '.join(STREAM_KINDS)}")
        unknown = [s for s in self.streams if s not in STREAM_KINDS]
        if unknown:
            raise ExtractError(f"unknown stream {unknown[0]!r}; valid streams: {', '.join(STREAM_KINDS)}")
        for kind, name in self.stream_names.items():
            if kind not in STREAM_KINDS:
                raise ExtractError(f"--stream-name {kind}={name}: {kind!r} is not a stream; valid: {', '.join(STREAM_KINDS)}")
            check_name(name, "stream")
            if kind not in self.streams:
                raise ExtractError(f"--stream-name {kind}={name}: no {kind} stream is extracted (--streams "
                                   f"{','.join(self.streams)}); add {kind} to --streams or drop this --stream-name")
        names = [self.name_of(k) for k in self.streams]
        if len(set(names)) != len(names):
            raise ExtractError(f"two streams would share a name: {names}")
        self.streams = run_order(self.streams)  # the user's order; text_asr after asr
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
            ("--flush-seconds", self.flush_seconds, self.flush_seconds >= 0, "0 or more"),
        ] + [(o.flag or o.dest.replace("_", " "), self.options[d], o.check[0](self.options[d]), o.check[1])
             for d, o in all_options().items() if o.check]
        for option, value, ok, rule in checks:
            if isinstance(value, float) and not math.isfinite(value):  # inf passes ">= 1"; nan fails every check
                raise ExtractError(f"{option} {value}: must be a finite number")
            if not ok:
                raise ExtractError(f"{option} {value}: must be {rule}")

    def name_of(self, kind: str) -> str:
        return self.stream_names.get(kind, kind)

    def unused_options(self) -> list[str]:
        """A warning for each stream option set away from its default that no requested stream reads: it changes
        nothing, and is most often meant for another stream (``--layers all`` with ``--streams whisper``, whose
        layers are ``--whisper-layers``). Not refused: scripts pass every model while varying ``--streams``."""
        kinds = stream_kinds()
        read = {o.dest for k in self.streams for o in options_of(kinds[k])}
        warnings = []
        for dest, option in all_options().items():
            value = self.options[dest]
            if dest in read or value is None or value == option.default:
                continue
            flag = option.flag or dest
            readers = [k for k, kind in kinds.items() if dest in {o.dest for o in options_of(kind)}]
            word = dest.rsplit("_", 1)[-1]  # layers, model, language...
            meant = [o.flag for k in self.streams for o in options_of(kinds[k])
                     if o.flag and o.dest != dest and o.dest.rsplit("_", 1)[-1] == word]
            warnings.append(f"{flag} {value}: no stream of --streams {','.join(self.streams)} reads it (it is for "
                            f"{' and '.join(readers)}), so it is ignored"
                            + (f"; did you mean {' or '.join(dict.fromkeys(meant))}?" if meant else ""))
        return warnings

    def stream_configs(self, precision: str | None = None) -> dict[str, StreamConfig]:
        """``{stream name: config}`` for the requested streams (``precision``: the resolved one)."""
        values = {c: getattr(self, c) for c in COMMON_FIELDS} | self.options
        if precision is not None:
            values["precision"] = precision
        kinds = stream_kinds()
        return {self.name_of(k): kinds[k].config_from(values, options_of(kinds[k])) for k in self.streams}


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
