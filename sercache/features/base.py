"""The contract between the extraction runner and one kind of feature stream."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sercache import __version__
from sercache.errors import SercacheError
from sercache.store.records import ExtractionProblem, UtteranceFeatures

STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32}


class BackendError(SercacheError, RuntimeError):
    """A model library answered other than sercache was built for (a version it was not measured on)."""


@dataclass
class AudioItem:
    """One utterance's decoded audio, ready for an audio extractor."""

    utt_id: str
    path: str
    samples: np.ndarray  # (num_samples,) float32 at 16 kHz
    transcript: str = ""


@dataclass
class TextItem:
    utt_id: str
    path: str
    text: str


@dataclass
class BatchPolicy:
    """How the runner may group utterances for this extractor.

    Attributes:
        budget_seconds: padded audio seconds per batch (batch size x longest); 0 means one
            utterance per batch.
        pad_safe: padding leaves outputs unchanged; otherwise only equal lengths share a batch.
        max_items: a cap on utterances (or texts) per batch.
        chunk_seconds: utterances longer than this are encoded alone, in chunks.
    """

    budget_seconds: float = 0.0
    pad_safe: bool = True
    max_items: int = 64
    chunk_seconds: float = float("inf")


@dataclass
class ExtractResult:
    records: list[UtteranceFeatures] = field(default_factory=list)
    problems: list[ExtractionProblem] = field(default_factory=list)


class Extractor(ABC):
    """One kind of stream. Subclasses load their model in ``__init__`` (checked first)."""

    kind: str  # the stream kind it fills ("ssl", "asr", "text", "whisper", "mfcc"...); kinds: sercache.features.streams
    input: str  # "audio" | "text"
    layers: list[int] = []
    pooled_layers: list[int] = []
    frame_rate: float | None = None

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What changes the stored numbers; two runs may share a stream only if equal."""

    def details(self) -> dict[str, Any]:
        import torch
        import transformers

        return {"sercache": __version__, "torch": torch.__version__, "transformers": transformers.__version__}

    def provenance(self) -> dict[str, Any]:
        return {"identity": self.identity(), "details": self.details()}

    def stream_attrs(self) -> dict[str, Any]:
        """Attributes the reader needs without decoding provenance (layers, frame rate...)."""
        return {"layers": list(self.layers), "pooled_layers": list(self.pooled_layers),
                "frame_rate": float(self.frame_rate) if self.frame_rate else 0.0}

    @abstractmethod
    def batch_policy(self) -> BatchPolicy: ...

    @abstractmethod
    def extract(self, items: list[Any]) -> ExtractResult:
        """Features for one planned batch (AudioItem or TextItem list)."""

    def close(self) -> None:  # noqa: B027 - a no-op default: spectral extractors hold no model
        """Free the model (and GPU memory) once the stream is done."""


def pooled_stats(hidden: Any, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over time of ``(layers, frames, dim)`` torch hidden states, computed in float32."""
    h = hidden.float()
    if h.shape[1] == 0:
        z = np.zeros((h.shape[0], h.shape[2]), dtype=dtype)
        return z, z
    mean = h.mean(dim=1)
    std = h.std(dim=1, unbiased=False)
    return mean.cpu().numpy().astype(dtype), std.cpu().numpy().astype(dtype)
