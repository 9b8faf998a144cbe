"""Read any audio file into float32 mono at the encoder's rate, or say exactly why not."""
from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from sercache._typing import Pathlike
from sercache.errors import SercacheError
from sercache.features.longaudio import LONG_AUDIO_SECONDS, load_long

TARGET_RATE = 16_000
#: Below this a file's header is more likely wrong than its audio (telephone speech is 8 kHz).
MIN_SPEECH_RATE = 4_000
#: Full scale is 1.0; a float file can hold slight overs after processing, but not this much.
MAX_PLAUSIBLE_PEAK = 4.0


class AudioError(SercacheError):
    """An audio file that cannot be used; the message is the reason stored in the errors table."""


@dataclass
class AudioInfo:
    num_samples: int
    sample_rate: int
    channels: int
    sha1: str

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate if self.sample_rate else float("nan")


@dataclass
class Audio:
    samples: np.ndarray  # (num_samples,) float32 at ``sample_rate``
    sample_rate: int
    notes: list[str] = field(default_factory=list)  # what was done to it (resampled, downmixed...)
    #: what the user should check (an implausible rate or level): stored as warnings with the features
    warnings: list[str] = field(default_factory=list)


def why_not_a_file(path: Path) -> str:
    """Why ``path`` (where ``is_file()`` is False) cannot be read as a file, in the words a user acts on."""
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic link loop (the link leads back to itself): point it at the audio file"
        if path.is_symlink():
            return f"a broken symbolic link (to {os.readlink(path)}, which does not exist)"
        return "file not found"
    if path.is_dir():
        return "a directory, not an audio file: give the file's own path"
    return "not a regular file (a device, socket or pipe): give an audio file"


def probe_audio(path: Pathlike) -> AudioInfo:
    """Header facts and a SHA-1 of the file bytes (cheap: no decoding)."""
    p = Path(path)
    if not p.is_file():
        raise AudioError(why_not_a_file(p))
    if p.stat().st_size == 0:
        raise AudioError("empty file (0 bytes)")
    try:
        info = sf.info(str(p))
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(f"not readable as audio ({_clean(exc)}); is it a WAV/FLAC file with an intact header?") from None
    digest = hashlib.sha1()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return AudioInfo(num_samples=int(info.frames), sample_rate=int(info.samplerate), channels=int(info.channels),
                     sha1=digest.hexdigest())


def load_audio(path: Pathlike, target_rate: int = TARGET_RATE) -> Audio:
    """Decode, downmix and resample one file.

    Raises:
        AudioError: missing, empty, undecodable, zero-length or non-finite audio.
    """
    p = Path(path)
    if not p.is_file():
        raise AudioError(why_not_a_file(p))
    try:
        info = sf.info(str(p))
        if info.frames > LONG_AUDIO_SECONDS * info.samplerate:  # bounded memory: block by block
            return _load_long(p, info, target_rate)
        data, rate = sf.read(str(p), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as exc:
        raise AudioError(f"not readable as audio ({_clean(exc)}); is it a WAV/FLAC file with an intact header?") from None
    notes: list[str] = []
    if data.shape[0] == 0:
        raise AudioError("zero-length audio (the file holds no samples)")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"audio holds {bad} NaN/inf samples; re-export the file")
    if data.shape[1] > 1:
        notes.append(f"downmixed {data.shape[1]} channels")
        data = data.mean(axis=1, keepdims=True)
    notes += truncation_notes(p, data.shape[0])
    samples = np.ascontiguousarray(data[:, 0])
    if rate != target_rate:
        samples = resample(samples, rate, target_rate)
        notes.append(f"resampled {rate}->{target_rate} Hz")
    if not np.any(samples):
        notes.append("silent (all samples are zero)")
    warnings = implausible(rate, data.shape[0], float(np.max(np.abs(data))))
    return Audio(samples=samples.astype(np.float32, copy=False), sample_rate=target_rate, notes=notes,
                 warnings=warnings)


def implausible(rate: int, num_samples: int, peak: float) -> list[str]:
    """Warnings for audio that decodes but is unlikely to be what the file was meant to hold."""
    out = []
    if rate < MIN_SPEECH_RATE:
        out.append(f"sample rate {rate} Hz is implausibly low for speech (below {MIN_SPEECH_RATE} Hz): its "
                   f"{num_samples} samples were stored as {num_samples / rate:.1f} s of audio; check the file's header")
    if peak > MAX_PLAUSIBLE_PEAK:
        out.append(f"peak amplitude {peak:.3g} is far above full scale (1.0): the encoders expect samples in "
                   "[-1, 1] and the file is not rescaled; check how it was written")
    return out


def _load_long(p: Path, info: sf._SoundFileInfo, target_rate: int) -> Audio:
    try:
        samples, notes = load_long(p, info, target_rate)
    except ValueError as exc:
        raise AudioError(str(exc)) from None
    notes += truncation_notes(p, int(info.frames))
    if not _any_nonzero(samples):
        notes.append("silent (all samples are zero)")
    peak = max((float(np.max(np.abs(samples[i: i + (1 << 22)]))) for i in range(0, len(samples), 1 << 22)),
               default=0.0)  # of the resampled signal, block by block: bounded memory
    return Audio(samples=samples, sample_rate=target_rate, notes=notes,
                 warnings=implausible(int(info.samplerate), int(info.frames), peak))


def _any_nonzero(samples: np.ndarray, block: int = 1 << 22) -> bool:
    return any(np.any(samples[i: i + block]) for i in range(0, len(samples), block))


def truncation_notes(path: Path, frames: int) -> list[str]:
    """A note when the WAV header declares more samples than the file holds (a copy cut short)."""
    declared = wav_declared_frames(path)
    if declared is None or declared <= frames:
        return []
    return [f"truncated: the WAV header declares {declared} samples, the file holds {frames} "
            f"({frames / declared:.0%}); stored as it is. Copy or export the file again"]


def wav_declared_frames(path: Path) -> int | None:
    """Sample frames a RIFF/WAVE header's data chunk declares (None: not a WAV, or a streamed size).

    libsndfile reads a cut file without complaint, up to the bytes that exist, so a copy that
    stopped half way would be stored at half length; the header still says how long it was.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                size = int.from_bytes(chunk[4:8], "little")
                if chunk[:4] == b"fmt ":
                    fmt = fh.read(size)
                    block_align = int.from_bytes(fmt[12:14], "little") if len(fmt) >= 14 else None
                    fh.seek(size % 2, 1)
                elif chunk[:4] == b"data":
                    if not block_align or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block_align
                else:
                    fh.seek(size + size % 2, 1)
    except OSError:
        return None


def resample(samples: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy), exact for rational ratios such as 44.1 kHz -> 16 kHz."""
    g = gcd(rate, target_rate)
    return resample_poly(samples, target_rate // g, rate // g).astype(np.float32)


def resampled_length(num_samples: int, rate: int, target_rate: int = TARGET_RATE) -> int:
    """How many samples :func:`resample` returns (``resample_poly`` gives ceil(n * up / down))."""
    if rate == target_rate:
        return num_samples
    g = gcd(rate, target_rate)
    up, down = target_rate // g, rate // g
    return -(-num_samples * up // down)


def _clean(exc: Exception) -> str:
    return str(exc).replace("\n", " ").strip()
