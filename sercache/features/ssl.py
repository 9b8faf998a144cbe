"""Frozen wav2vec2-family audio models: hidden states (``ssl``) and, in asr.py, CTC transcripts."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from sercache.features.base import STORAGE_DTYPES, AudioItem, BatchPolicy, Extractor, ExtractResult, pooled_stats
from sercache.features.encoder import PRECISIONS, AudioEncoder, ConvFrontend, RunningStats, pad_safe
from sercache.features.models import (
    audio_normalization,
    check_audio_encoder,
    load_audio_encoder,
    model_reference,
    resolve_layers,
    weights_fingerprint,
)
from sercache.features.streams.base import ExtractError
from sercache.store.records import ExtractionProblem, UtteranceFeatures

#: Padded audio seconds per batch on a GPU for pad-safe encoders. On a CPU batching buys
#: nothing (measured: 0.87x-1.02x of batch 1), so the CPU default is one utterance per batch.
GPU_BATCH_SECONDS = 200.0


class AudioModelExtractor(Extractor):
    """What every raw-waveform model stream shares: config checks, batching rules, chunking.

    The constructor reads only the config, feature-extractor config and weight fingerprint,
    so a wrong model or layer is refused before anything loads; :meth:`load` brings in the
    weights when the stream actually has work to do.
    """

    input = "audio"
    ctc = False

    def __init__(self, model: str, *, device: str = "cpu", precision: str = "fp32", batch_seconds: float | None = None,
                 chunk_seconds: float = 30.0, overlap_seconds: float = 5.0) -> None:
        model = model_reference(model)
        self.model_name = model
        self.config = self._check(model)
        if precision not in PRECISIONS:
            raise ExtractError(f"--precision {precision!r}: use one of {sorted(PRECISIONS)}")
        if overlap_seconds >= chunk_seconds:
            raise ExtractError(f"--chunk-overlap ({overlap_seconds} s) must be shorter than --chunk-seconds ({chunk_seconds} s)")
        self.device, self.precision = device, precision
        self.frontend = ConvFrontend.of(self.config)
        self.pad_safe = pad_safe(self.config)
        if batch_seconds is None:
            batch_seconds = GPU_BATCH_SECONDS if str(device).startswith("cuda") else 0.0
        self.batch_seconds = float(batch_seconds)
        self.chunk_seconds, self.overlap_seconds = float(chunk_seconds), float(overlap_seconds)
        self.fingerprint = weights_fingerprint(model)
        self.do_normalize = audio_normalization(model)
        self.frame_rate = 16_000 / self.frontend.stride
        self.encoder: AudioEncoder | None = None

    def _check(self, model: str) -> Any:
        return check_audio_encoder(model)

    def _select(self, output: Any) -> list[torch.Tensor]:
        raise NotImplementedError

    def _forward_kwargs(self) -> dict[str, Any]:
        return {}

    def load(self) -> None:
        if self.encoder is None:
            model = load_audio_encoder(self.model_name, ctc=self.ctc)
            self.encoder = AudioEncoder(
                model, self.config, select=self._select, device=self.device, precision=self.precision,
                do_normalize=self.do_normalize, chunk_seconds=self.chunk_seconds,
                overlap_seconds=self.overlap_seconds, forward_kwargs=self._forward_kwargs())

    def close(self) -> None:
        self.encoder = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model_name, "weights": self.fingerprint,
                "model_type": self.config.model_type, "precision": self.precision, "sample_rate": 16_000,
                "do_normalize": self.do_normalize, "chunk_seconds": self.chunk_seconds,
                "overlap_seconds": self.overlap_seconds}

    def details(self) -> dict[str, Any]:
        return dict(super().details(), device=str(self.device), batch_seconds=self.batch_seconds,
                    pad_safe=self.pad_safe)

    def stream_attrs(self) -> dict[str, Any]:
        return dict(super().stream_attrs(), frame_rule=self.frontend.rule())

    def batch_policy(self) -> BatchPolicy:
        return BatchPolicy(budget_seconds=self.batch_seconds, pad_safe=self.pad_safe,
                           max_items=1 if self.batch_seconds <= 0 else 256, chunk_seconds=self.chunk_seconds)

    def _encode(self, items: list[AudioItem], result: ExtractResult) -> list[list[torch.Tensor]]:
        self.load()
        assert self.encoder is not None
        n = self.frontend.receptive_field
        waves = []
        for it in items:
            if len(it.samples) < n:  # shorter than one frame: zero-pad, and say so
                result.problems.append(ExtractionProblem(
                    it.utt_id, it.path, "audio", f"{len(it.samples)} samples is shorter than the encoder's {n}-sample "
                    "receptive field; zero-padded to one frame", severity="warning"))
                waves.append(np.pad(it.samples, (0, n - len(it.samples))))
            else:
                waves.append(it.samples)
        return self.encoder.encode(waves)


class SSLExtractor(AudioModelExtractor):
    """Selected hidden layers frame by frame, plus mean/std pooled statistics of every layer.

    Args:
        model: Hugging Face id or local folder of a HuBERT/wav2vec2/WavLM/data2vec-audio model.
        layers: ``--layers`` spec (``None`` = last layer, ``"all"``, ``"6,12,24"``).
        dtype: storage dtype of frames and pooled statistics (``float16`` halves disk and RAM).
        Other keywords: see :class:`AudioModelExtractor`.
    """

    kind = "ssl"

    def __init__(self, model: str, layers: str | None = None, *, dtype: str = "float16", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        n_layers = int(self.config.num_hidden_layers)
        self.layers = resolve_layers(layers, n_layers, model)
        self.pooled_layers = list(range(n_layers + 1))
        if dtype not in STORAGE_DTYPES:
            raise ExtractError(f"--dtype {dtype!r}: use one of {sorted(STORAGE_DTYPES)}")
        self.dtype_name, self.dtype = dtype, STORAGE_DTYPES[dtype]

    def _select(self, output: Any) -> list[torch.Tensor]:
        return list(output.hidden_states)

    def _forward_kwargs(self) -> dict[str, Any]:
        return {"output_hidden_states": True}

    def identity(self) -> dict[str, Any]:
        return dict(super().identity(), hidden_size=int(self.config.hidden_size), layers=self.layers,
                    dtype=self.dtype_name)

    def extract(self, items: list[AudioItem]) -> ExtractResult:
        result = ExtractResult()
        self.load()
        assert self.encoder is not None
        if len(items) == 1 and self.encoder.needs_chunking(len(items[0].samples)):
            return self._extract_long(items[0], result)
        for it, hidden in zip(items, self._encode(items, result)):
            mean, std = pooled_stats(torch.stack(hidden), self.dtype)  # every layer, cheap
            frames = {f"layer_{k}": hidden[k].float().cpu().numpy().astype(self.dtype) for k in self.layers}
            result.records.append(UtteranceFeatures(
                it.utt_id, frames, {"pooled_mean": mean, "pooled_std": std, "n_samples": np.int64(len(it.samples))}))
        return result

    def _extract_long(self, it: AudioItem, result: ExtractResult) -> ExtractResult:
        """A long utterance: stored layers assembled, every layer's statistics merged chunk by chunk."""
        assert self.encoder is not None
        stats = RunningStats()
        kept = self.encoder.encode_long(it.samples, keep=self.layers, stats=stats)
        mean, std = stats.result(self.dtype)
        frames = {f"layer_{k}": to_storage(t, self.dtype) for k, t in zip(self.layers, kept)}
        result.records.append(UtteranceFeatures(
            it.utt_id, frames, {"pooled_mean": mean, "pooled_std": std, "n_samples": np.int64(len(it.samples))}))
        return result


def to_storage(frames: torch.Tensor, dtype: np.dtype, block: int = 1 << 16) -> np.ndarray:
    """``frames`` as a numpy array of the storage dtype, converted in blocks (no full float32 copy)."""
    out = np.empty(tuple(frames.shape), dtype=dtype)
    for i in range(0, len(out), block):
        out[i: i + block] = frames[i: i + block].float().numpy()
    return out
