"""``asr``: greedy CTC transcripts and frame log-probabilities of a wav2vec2-style ASR model."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sercache.features.streams.base import Runtime, StreamConfig, StreamKind, StreamOption

DEFAULT_ASR_MODEL = "facebook/wav2vec2-large-960h"


@dataclass
class ASRConfig(StreamConfig):
    model: str = DEFAULT_ASR_MODEL
    precision: str = "fp32"
    chunk_seconds: float = 30.0
    overlap_seconds: float = 5.0


def build(c: ASRConfig, rt: Runtime) -> Any:
    from sercache.features.asr import CTCExtractor

    return CTCExtractor(c.model, device=rt.device, precision=c.precision, batch_seconds=rt.batch_seconds,
                        chunk_seconds=c.chunk_seconds, overlap_seconds=c.overlap_seconds)


KINDS = (StreamKind(
    "asr", "CTC transcripts", ASRConfig, build, order=20, default=True, model_option="--asr-model",
    options=(StreamOption("asr_model", DEFAULT_ASR_MODEL, "HF id or local folder of a CTC ASR model.",
                          flag="--asr-model", field="model"),)),)
