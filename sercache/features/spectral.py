"""MFCC, log-mel and linear spectrogram features in numpy (there is no torchaudio CPU build to lean on).

The MFCC reproduces ``librosa.feature.mfcc`` with librosa's defaults, which GLAM used:
centred STFT (zero padding), periodic Hann window, power spectrum, 128 Slaney-style mel
filters with Slaney area normalisation, ``power_to_db`` (ref 1, amin 1e-10, top_db 80) and
an orthonormal DCT-II. A test checks it against librosa itself when librosa is installed.
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.fft import dct
from scipy.signal import get_window

from sercache.features.base import AudioItem, BatchPolicy, Extractor, ExtractResult
from sercache.features.streams.base import ExtractError
from sercache.store.records import UtteranceFeatures


def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default, htk=False)."""
    f = np.asanyarray(f, dtype=np.float64)
    mel = f / (200.0 / 3)
    log_region = f >= 1000.0
    return np.where(log_region, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asanyarray(m, dtype=np.float64)
    f = m * (200.0 / 3)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), f)


@lru_cache(maxsize=8)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """``(n_mels, 1 + n_fft // 2)`` triangular filters with Slaney area normalisation."""
    fmax = sample_rate / 2 if fmax is None else fmax
    fft_freqs = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return weights


def power_spectrogram(y: np.ndarray, n_fft: int, hop: int, window: str = "hann") -> np.ndarray:
    """``(1 + n_fft // 2, frames)`` |STFT|^2, centred with zero padding; frames = 1 + len(y) // hop."""
    y = np.pad(np.asarray(y, dtype=np.float64), n_fft // 2)
    n_frames = 1 + (len(y) - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop][:n_frames]
    return (np.abs(np.fft.rfft(frames * get_window(window, n_fft, fftbins=True), axis=1)) ** 2).T


def power_to_db(S: np.ndarray, amin: float = 1e-10, top_db: float = 80.0) -> np.ndarray:
    log_spec = 10.0 * np.log10(np.maximum(amin, S))
    return np.maximum(log_spec, log_spec.max() - top_db)


def power_blocks(y: np.ndarray, n_fft: int, hop: int, window: str = "hann",
                 block: int = 8192) -> Iterator[tuple[int, int, np.ndarray]]:
    """``(first frame, stop frame, power)`` of :func:`power_spectrogram`, ``block`` frames at a time.

    For long signals: the whole power spectrogram of 3 hours at a 512 hop is 2.8 GB of float64
    (and its frames 5.5 GB); a block is a few MB, and each frame is computed from the same samples.
    """
    y = np.asarray(y)
    pad = n_fft // 2
    n_frames = 1 + (len(y) + 2 * pad - n_fft) // hop
    w = get_window(window, n_fft, fftbins=True)
    for f0 in range(0, n_frames, block):
        f1 = min(n_frames, f0 + block)
        lo, hi = f0 * hop - pad, (f1 - 1) * hop + n_fft - pad  # signal samples of these frames
        seg = np.zeros(hi - lo, dtype=np.float64)  # zeros beyond the signal: the centred padding
        a, b = max(0, lo), min(len(y), hi)
        seg[a - lo: b - lo] = y[a:b]
        frames = np.lib.stride_tricks.sliding_window_view(seg, n_fft)[::hop][: f1 - f0]
        yield f0, f1, (np.abs(np.fft.rfft(frames * w, axis=1)) ** 2).T


#: Signals longer than this many samples (10 minutes at 16 kHz) are transformed block by block.
LONG_SIGNAL = 600 * 16_000


def _n_frames(n: int, n_fft: int, hop: int) -> int:
    return 1 + (n + 2 * (n_fft // 2) - n_fft) // hop


def mfcc(y: np.ndarray, sample_rate: int = 16_000, n_mfcc: int = 26, n_fft: int = 2048, hop: int = 512,
         n_mels: int = 128) -> np.ndarray:
    """``(frames, n_mfcc)`` float32, equal to ``librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=n_mfcc).T``."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels)
    if len(y) <= LONG_SIGNAL:
        mel = fb @ power_spectrogram(y, n_fft, hop)
        return dct(power_to_db(mel), type=2, axis=0, norm="ortho")[:n_mfcc].T.astype(np.float32)
    # power_to_db clips at (global max - 80 dB): the dB spectrum is kept whole (n_mels rows), the rest per block
    n = _n_frames(len(y), n_fft, hop)
    log_spec = np.empty((n_mels, n))
    for f0, f1, power in power_blocks(y, n_fft, hop):
        log_spec[:, f0:f1] = 10.0 * np.log10(np.maximum(1e-10, fb @ power))
    np.maximum(log_spec, log_spec.max() - 80.0, out=log_spec)
    out = np.empty((n, n_mfcc), dtype=np.float32)
    for f0 in range(0, n, 8192):
        out[f0: f0 + 8192] = dct(log_spec[:, f0: f0 + 8192], type=2, axis=0, norm="ortho")[:n_mfcc].T
    return out


def _log_frames(y: np.ndarray, n_fft: int, hop: int, window: str, transform) -> np.ndarray:  # noqa: ANN001
    """``transform(power block) -> (bins, frames)`` for every block, stacked into ``(frames, bins)`` float32."""
    out = None
    for f0, f1, power in power_blocks(y, n_fft, hop, window):
        block = transform(power)
        if out is None:
            out = np.empty((_n_frames(len(y), n_fft, hop), block.shape[0]), dtype=np.float32)
        out[f0:f1] = block.T
    return out


def log_mel(y: np.ndarray, sample_rate: int = 16_000, n_mels: int = 80, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """``(frames, n_mels)`` float32 log(mel power + 1e-6), 25 ms window, 10 ms hop (Kaldi-like framing)."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels)
    if len(y) > LONG_SIGNAL:
        return _log_frames(y, n_fft, hop, "hann", lambda power: np.log(fb @ power + 1e-6))
    mel = fb @ power_spectrogram(y, n_fft, hop)
    return np.log(mel + 1e-6).T.astype(np.float32)


def log_spectrogram(y: np.ndarray, sample_rate: int = 16_000, n_fft: int = 640, hop: int = 160,
                    fmax: float = 4000.0) -> np.ndarray:
    """``(frames, bins)`` float32 log(power + 1e-6) of a linear-frequency STFT up to ``fmax``.

    The defaults are the input APCNN was designed for: a 40 ms Hamming window, a 10 ms hop and
    0-4 kHz (161 bins of 25 Hz at 16 kHz).
    """
    bins = int(np.floor(fmax * n_fft / sample_rate)) + 1
    if len(y) > LONG_SIGNAL:
        return _log_frames(y, n_fft, hop, "hamming", lambda power: np.log(power[:bins] + 1e-6))
    power = power_spectrogram(y, n_fft, hop, window="hamming")
    return np.log(power[:bins] + 1e-6).T.astype(np.float32)


def frame_stats(feats: np.ndarray, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over frames in float64; long inputs in blocks (no float64 copy of the whole)."""
    if len(feats) <= block:
        stats = feats.astype(np.float64)
        return stats.mean(0), stats.std(0)
    mean = sum(feats[i: i + block].sum(0, dtype=np.float64) for i in range(0, len(feats), block)) / len(feats)
    square = sum(((feats[i: i + block] - mean) ** 2).sum(0) for i in range(0, len(feats), block))
    return mean, np.sqrt(square / len(feats))


#: Spectral stream kinds and their parameters (window and hop in samples at 16 kHz).
SPECTRAL_KINDS = ("mfcc", "logmel", "spectrogram")


class SpectralExtractor(Extractor):
    """MFCC (``kind="mfcc"``), log-mel (``"logmel"``) or linear log spectrogram (``"spectrogram"``)
    frames, stored float32 as ``layer_0``.

    Spectral streams have one "layer", 0, so the same reader calls work for every stream.
    """

    input = "audio"
    layers = [0]
    pooled_layers = [0]

    def __init__(self, kind: str = "mfcc", *, n_mfcc: int = 26, n_mels: int | None = None) -> None:
        if kind not in SPECTRAL_KINDS:
            raise ExtractError(f"spectral kind {kind!r}: use one of {', '.join(SPECTRAL_KINDS)}")
        self.kind = kind
        if kind == "mfcc":
            self.params = {"n_mfcc": n_mfcc, "n_fft": 2048, "hop": 512, "n_mels": n_mels or 128}
        elif kind == "logmel":
            self.params = {"n_mels": n_mels or 80, "n_fft": 400, "hop": 160}
        else:
            self.params = {"n_fft": 640, "hop": 160, "fmax": 4000.0}
        self.frame_rate = 16_000 / self.params["hop"]

    def identity(self) -> dict[str, Any]:
        if self.kind == "spectrogram":
            return {"kind": self.kind, "sample_rate": 16_000, "dtype": "float32", **self.params, "window": "hamming",
                    "center": True, "scale": "log(power + 1e-6)"}
        return {"kind": self.kind, "sample_rate": 16_000, "dtype": "float32", **self.params,
                "window": "hann", "center": True, "mel": "slaney"}

    def details(self) -> dict[str, Any]:
        from sercache import __version__
        return {"sercache": __version__, "numpy": np.__version__}

    def stream_attrs(self) -> dict[str, Any]:
        return dict(super().stream_attrs(), frame_rule={"kind": "stft", "hop": self.params["hop"], "center": True})

    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(budget_seconds=0.0, pad_safe=False, max_items=1)

    def compute(self, samples: np.ndarray) -> np.ndarray:
        compute = {"mfcc": mfcc, "logmel": log_mel, "spectrogram": log_spectrogram}[self.kind]
        return compute(samples, **self.params)

    def extract(self, items: list[AudioItem]) -> ExtractResult:
        result = ExtractResult()
        for it in items:
            feats = self.compute(it.samples)
            mean, std = frame_stats(feats)
            result.records.append(UtteranceFeatures(it.utt_id, {"layer_0": feats}, {
                "pooled_mean": mean.astype(np.float32)[None], "pooled_std": std.astype(np.float32)[None],
                "n_samples": np.int64(len(it.samples))}))
        return result
