"""What ``sercache predict`` reads: audio files, folders of them, or a CSV manifest; optionally cut into windows.

Every input is checked (found, decodable) before any model is loaded, and decoded exactly as
extraction decodes a corpus (:func:`sercache.features.audio.load_audio`: any rate, any channel
count, downmixed and resampled to 16 kHz), so the encoders see the same samples.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from sercache.corpora.base import read_csv_rows
from sercache.errors import SercacheError
from sercache.features.audio import TARGET_RATE, AudioError, load_audio, resample, resampled_length, why_not_a_file

#: File endings taken from a folder (libsndfile decodes these).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class PredictError(SercacheError, ValueError):
    """A prediction request that cannot be carried out (the message names the input and the fix)."""


@dataclass
class Source:
    """One input as given: a file (with an optional gold transcript) or an in-memory waveform."""

    name: str                    # the path as written in the output, or "<waveform>"
    path: Path | None = None
    transcript: str | None = None
    samples: np.ndarray | None = None  # 16 kHz mono float32, for waveforms


@dataclass
class Segment:
    """What the extractors see as one utterance: a whole input, or one window of it."""

    utt_id: str
    source: Source
    samples: np.ndarray | None  # None once the audio streams have read it
    start_s: float
    end_s: float


def collect_sources(inputs: list[str | Path]) -> list[Source]:
    """Files, folders (their .wav/.flac/.ogg files, recursively, sorted) and CSV manifests, in the order given."""
    if not inputs:
        raise PredictError("no INPUT given: name audio files, folders of them, or a CSV manifest with a path column")
    out: list[Source] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in AUDIO_SUFFIXES and q.is_file())
            if not found:
                raise PredictError(f"{p} holds no audio file ({', '.join(AUDIO_SUFFIXES)})")
            out += [Source(str(q), q) for q in found]
        elif p.suffix.lower() == ".csv":
            out += _manifest_sources(p)
        elif p.is_file():
            out.append(Source(str(p), p))
        else:
            raise PredictError(f"input {p} does not exist: give audio files, folders or a CSV manifest")
    return out


def _manifest_sources(csv: Path) -> list[Source]:
    """A CSV with a ``path`` column (relative to the CSV's folder) and optionally ``transcript``."""
    if not csv.is_file():
        raise PredictError(f"no CSV manifest at {csv}")
    try:
        df = read_csv_rows(csv, "a predict manifest")
    except ValueError as exc:
        raise PredictError(str(exc)) from None
    if "path" not in df.columns:
        raise PredictError(f"{csv} lacks a path column (it has {list(df.columns)}); give one path per row, and "
                           "optionally a transcript column")
    out = []
    for lineno, rec in enumerate(df.to_dict("records"), start=2):
        if not rec["path"].strip():  # Path("") would be the CSV's folder, reported as "file not found"
            raise PredictError(f"{csv}, line {lineno}: empty path; give an audio file on every row")
        p = Path(rec["path"])
        p = p if p.is_absolute() else csv.parent / p
        out.append(Source(str(p), p, rec.get("transcript")))
    return out


def check_sources(sources: list[Source], needs_transcript: str | None) -> None:
    """Refuse unreadable audio, and missing gold transcripts when a stream encodes them, before any work."""
    for s in sources:
        if s.path is not None:
            if not s.path.is_file():
                raise PredictError(f"{s.path}: {why_not_a_file(s.path)}")
            try:
                sf.info(str(s.path))  # the header only: decoding waits until the models are ready
            except (RuntimeError, sf.LibsndfileError) as exc:
                raise PredictError(f"{s.path}: not readable as audio ({str(exc).strip()}); give WAV/FLAC/OGG "
                                   "files") from None
        if needs_transcript and not (s.transcript or "").strip():
            raise PredictError(
                f"{s.name}: the run reads stream {needs_transcript!r}, which encodes the gold transcript, and this "
                "input has none. Give a CSV manifest with path and transcript columns (or train on ASR text).")


def waveform_samples(waveform: np.ndarray, sample_rate: int) -> np.ndarray:
    """An array as extraction prepares a file: float32, channels averaged, resampled to 16 kHz.

    ``waveform`` is ``(samples,)``, ``(samples, channels)`` (as soundfile reads) or ``(channels, samples)``
    (as torchaudio does; taken when the first axis is the shorter one).
    """
    x = np.asarray(waveform, dtype=np.float32)
    if x.ndim == 2:
        x = x.T if x.shape[0] < x.shape[1] else x
        x = x.mean(axis=1, keepdims=True)[:, 0] if x.shape[1] > 1 else x[:, 0]
    if x.ndim != 1 or not len(x):
        raise PredictError(f"waveform of shape {np.shape(waveform)}: give (samples,) or (samples, channels) audio")
    if not np.isfinite(x).all():
        raise PredictError("the waveform holds NaN/inf samples")
    if int(sample_rate) <= 0:
        raise PredictError(f"sample_rate {sample_rate}: must be a positive number of Hz")
    x = np.ascontiguousarray(x)
    return x if int(sample_rate) == TARGET_RATE else resample(x, int(sample_rate), TARGET_RATE)


def check_window(window: float | None, hop: float | None) -> None:
    if window is None:
        if hop is not None:
            raise PredictError(f"--hop {hop} needs --window (the window length in seconds)")
        return
    if not window > 0 or (hop is not None and not hop > 0):
        raise PredictError(f"--window {window} --hop {hop}: both must be positive seconds")


def windows(n_samples: int, window: float, hop: float | None) -> list[tuple[int, int]]:
    """``(start, end)`` samples of each window: every ``hop`` seconds until the audio is covered.

    The last window ends with the audio (it may be shorter); audio shorter than one window is one window.
    """
    size, step = round(window * TARGET_RATE), round((hop or window) * TARGET_RATE)
    n = 1 if n_samples <= size else 1 + math.ceil((n_samples - size) / step)
    return [(k * step, min(k * step + size, n_samples)) for k in range(n)]


def count_segments(sources: list[Source], window: float | None = None, hop: float | None = None) -> int:
    """How many segments :func:`segments` yields, from the files' headers (nothing is decoded)."""
    if window is None:
        return len(sources)
    total = 0
    for s in sources:
        if s.samples is not None:
            n = len(s.samples)
        else:
            info = sf.info(str(s.path))
            n = resampled_length(int(info.frames), int(info.samplerate))
        total += len(windows(n, window, hop))
    return total


def segments(sources: list[Source], window: float | None = None, hop: float | None = None) -> Iterator[Segment]:
    """Decode each source (as extraction does) when its turn comes, and cut it into windows when asked.

    A generator: one input's samples are decoded at a time, and the caller holds them only as long as it
    keeps the segments (a folder of recordings is never decoded whole at once).
    """
    for i, s in enumerate(sources):
        if s.samples is None:
            try:
                samples = load_audio(s.path).samples
            except AudioError as exc:
                raise PredictError(f"{s.path}: {exc}") from None
        else:
            samples = s.samples
        if window is None:
            segment = Segment(f"input{i:06d}", s, samples, 0.0, len(samples) / TARGET_RATE)
            del samples  # the segment is the only holder: freed once the caller is done with it
            yield segment
            continue
        spans = windows(len(samples), window, hop)
        for k, (a, b) in enumerate(spans):
            yield Segment(f"input{i:06d}-w{k:06d}", s, samples[a:b], a / TARGET_RATE, b / TARGET_RATE)
        del samples
