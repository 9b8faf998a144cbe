"""``ssl``: hidden states of a wav2vec2-family speech encoder (HuBERT, wav2vec2, WavLM, data2vec-audio)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sercache.features.streams import register_stream
from sercache.features.streams.base import Runtime, StreamConfig, StreamKind, StreamOption

DEFAULT_SSL_MODEL = "facebook/hubert-large-ls960-ft"


@dataclass
class SSLConfig(StreamConfig):
    model: str = DEFAULT_SSL_MODEL
    layers: str | list[int] | None = None  # --layers spec, or the resolved list a stream recorded
    dtype: str = "float16"
    precision: str = "fp32"
    chunk_seconds: float = 30.0
    overlap_seconds: float = 5.0


def build(c: SSLConfig, rt: Runtime) -> Any:
    from sercache.features.ssl import SSLExtractor

    return SSLExtractor(c.model, c.layers, dtype=c.dtype, device=rt.device, precision=c.precision,
                        batch_seconds=rt.batch_seconds, chunk_seconds=c.chunk_seconds, overlap_seconds=c.overlap_seconds)


register_stream(StreamKind(
    "ssl", "speech-encoder hidden states", SSLConfig, build, order=10, default=True, model_option="--ssl-model",
    options=(
        StreamOption("ssl_model", DEFAULT_SSL_MODEL, "HF id or local folder of the speech encoder.",
                     flag="--ssl-model", field="model"),
        StreamOption("layers", None, "SSL layers to store frame by frame: 24 | 6,12,24 | all. Default: last. "
                     "Mean/std pooled statistics are stored for every layer regardless.", flag="--layers"))),)
