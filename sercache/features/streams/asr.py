"""``asr``: transcripts from a CTC model (wav2vec2-style, greedy) or a Whisper model (``generate``, greedy).

``--asr-model`` decides which: a Whisper checkpoint (config ``model_type`` "whisper") decodes with
sercache.features.whisper_asr, anything else must be a CTC model (sercache.features.asr). Both
store the same fields (per token: token, confidence, start/end frame on the 50 frames/s grid; per
utterance: text, WER against the gold transcript...), so ``text_asr``, the WER report and
``predict`` read either; the recorded identity's ``decoder`` says which one made a stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sercache.features.streams import register_stream
from sercache.features.streams.base import Runtime, StreamConfig, StreamKind, StreamOption

DEFAULT_ASR_MODEL = "facebook/wav2vec2-large-960h"
BACKENDS = ("transformers", "faster-whisper", "faster-whisper-int8")


@dataclass
class ASRConfig(StreamConfig):
    model: str = DEFAULT_ASR_MODEL
    precision: str = "fp32"
    chunk_seconds: float = 30.0             # CTC only: Whisper decodes long audio in its own 30 s windows
    overlap_seconds: float = 5.0
    language: str = "detect"                # Whisper only: a language code, or detect per utterance
    backend: str = "transformers"           # Whisper only: transformers | faster-whisper | faster-whisper-int8


def build(c: ASRConfig, rt: Runtime) -> Any:
    from sercache.features.models import check_asr_model

    if check_asr_model(c.model, c.language).model_type == "whisper":
        if c.backend.startswith("faster-whisper"):
            from sercache.features.whisper_ct2 import FasterWhisperASRExtractor

            return FasterWhisperASRExtractor(c.model, backend=c.backend, language=c.language, device=rt.device,
                                             precision=c.precision, model_store=rt.model_store)
        from sercache.features.whisper_asr import WhisperASRExtractor

        return WhisperASRExtractor(c.model, language=c.language, device=rt.device, precision=c.precision,
                                   batch_seconds=rt.batch_seconds)
    if c.backend != "transformers":
        from sercache.features.models import ModelError

        raise ModelError(f"--asr-backend {c.backend} decodes Whisper models; --asr-model {c.model!r} is a CTC model "
                         "(leave --asr-backend out)")
    from sercache.features.asr import CTCExtractor

    return CTCExtractor(c.model, device=rt.device, precision=c.precision, batch_seconds=rt.batch_seconds,
                        chunk_seconds=c.chunk_seconds, overlap_seconds=c.overlap_seconds)


register_stream(StreamKind(
    "asr", "ASR transcripts: CTC or Whisper", ASRConfig, build, order=20, default=True, model_option="--asr-model",
    options=(
        StreamOption("asr_model", DEFAULT_ASR_MODEL, "HF id or local folder of an ASR model: CTC (wav2vec2-style) "
                     "or Whisper.", flag="--asr-model", field="model"),
        StreamOption("asr_language", "detect", "Whisper ASR only: the spoken language as a code (de, en...), or "
                     "detect it per utterance.", flag="--asr-language", field="language"),
        StreamOption("asr_backend", "transformers", "Whisper ASR only: transformers (generate), faster-whisper "
                     "(CTranslate2; pip install 'sercache[faster-whisper]') or faster-whisper-int8 (int8 weights: "
                     "fastest on a CPU).", flag="--asr-backend", field="backend",
                     check=(lambda v: v in BACKENDS, "one of " + ", ".join(BACKENDS))))),)
