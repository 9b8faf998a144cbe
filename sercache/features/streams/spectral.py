"""``mfcc``, ``logmel`` and ``spectrogram``: hand-crafted spectral frames (no model)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sercache.features.streams import register_stream
from sercache.features.streams.base import Runtime, StreamConfig, StreamKind, StreamOption

MFCC_MEL_BANDS = 128  # sercache.features.spectral.mfcc's n_mels


@dataclass
class MFCCConfig(StreamConfig):
    n_mfcc: int = 26
    n_mels: int | None = None  # None: the kind's default


@dataclass
class LogMelConfig(StreamConfig):
    n_mels: int | None = None


@dataclass
class SpectrogramConfig(StreamConfig):
    pass


def _builder(kind: str) -> Any:
    def build(c: StreamConfig, rt: Runtime) -> Any:
        from sercache.features.spectral import SpectralExtractor

        return SpectralExtractor(kind, **c.to_json())
    return build


register_stream(
    StreamKind("mfcc", "MFCCs", MFCCConfig, _builder("mfcc"), order=50, default=True, options=(
        StreamOption("n_mfcc", 26, "MFCC coefficients (GLAM uses 26).", flag="--mfcc-coefficients", type=int,
                     check=(lambda v: 1 <= v <= MFCC_MEL_BANDS,
                            f"1 to {MFCC_MEL_BANDS} (the mel bands MFCCs are computed from)")),)),
    StreamKind("logmel", "log-mel spectrogram", LogMelConfig, _builder("logmel"), order=51),
    StreamKind("spectrogram", "linear log spectrogram", SpectrogramConfig, _builder("spectrogram"), order=52),
)
