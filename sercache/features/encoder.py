"""Run a wav2vec2-family encoder on waveforms: padding rules, long-utterance chunking, precision.

Two facts decide how audio may be batched:

* An encoder whose convolutional front end uses **layer norm** (``feat_extract_norm ==
  "layer"``, e.g. hubert-large-ls960-ft, WavLM, data2vec-audio) normalises each frame on its
  own; with an attention mask, zero padding leaves the outputs of the real frames unchanged
  (measured max abs diff ~1e-7). Such encoders are batched with padding.
* A **group-norm** front end (base-size wav2vec2/HuBERT, wav2vec2-large-960h) normalises over
  the whole sequence, padding included (measured max abs diff ~1.4). Such encoders are only
  ever batched over utterances of exactly equal length, which changes nothing.

Utterances longer than ``chunk_seconds`` are encoded in overlapping chunks whose starts sit
on the frame grid (multiples of the total conv stride, 320 samples), and stitched: each
output frame comes from the chunk where it is furthest from a chunk edge. The frame count
equals that of the unchunked utterance, so nothing is truncated or skipped.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from sercache.features.streams.base import ExtractError
from sercache.store.frames import conv_frames, receptive_field

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class ConvFrontend:
    """The conv stack's geometry: frames out for samples in."""

    kernels: tuple[int, ...]
    strides: tuple[int, ...]

    @classmethod
    def of(cls, config: Any) -> ConvFrontend:
        return cls(tuple(int(k) for k in config.conv_kernel), tuple(int(s) for s in config.conv_stride))

    @property
    def stride(self) -> int:
        return int(np.prod(self.strides))

    @property
    def receptive_field(self) -> int:
        return receptive_field(self.kernels, self.strides)

    def n_frames(self, n_samples: int) -> int:
        return conv_frames(n_samples, self.kernels, self.strides)

    def rule(self) -> dict[str, Any]:
        """The stream's ``frame_rule`` (store/frames.py): what ``cache verify`` checks."""
        return {"kind": "conv", "kernels": list(self.kernels), "strides": list(self.strides)}


def pad_safe(config: Any) -> bool:
    """True when zero padding + attention mask leaves this encoder's outputs unchanged."""
    return getattr(config, "feat_extract_norm", "group") == "layer"


@dataclass(frozen=True)
class Chunk:
    start: int        # first sample of the chunk
    stop: int         # one past its last sample
    first_frame: int  # global index of the chunk's frame 0
    keep_from: int    # global frames [keep_from, keep_to) are taken from this chunk
    keep_to: int


def plan_chunks(n_samples: int, chunk_samples: int, overlap_samples: int, frontend: ConvFrontend) -> list[Chunk]:
    """Overlapping chunks on the frame grid; every global frame is kept from exactly one chunk."""
    total = frontend.n_frames(n_samples)
    stride = frontend.stride
    if n_samples <= chunk_samples:
        return [Chunk(0, n_samples, 0, 0, total)]
    hop = max(stride, ((chunk_samples - overlap_samples) // stride) * stride)
    starts = [0]
    while starts[-1] + chunk_samples < n_samples:
        starts.append(starts[-1] + hop)
    bounds = []
    for i, s in enumerate(starts):
        stop = n_samples if i == len(starts) - 1 else s + chunk_samples
        bounds.append((s, stop, s // stride, s // stride + frontend.n_frames(stop - s)))
    chunks, keep_from = [], 0
    for i, (s, stop, f0, f1) in enumerate(bounds):
        keep_to = total if i == len(bounds) - 1 else (bounds[i + 1][2] + f1) // 2  # middle of the overlap
        chunks.append(Chunk(s, stop, f0, keep_from, keep_to))
        keep_from = keep_to
    return chunks


def normalize(wave: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance: exactly ``Wav2Vec2FeatureExtractor.zero_mean_unit_var_norm``."""
    return ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)).astype(np.float32)


#: Picks the tensors to keep from a model output: each ``(batch, frames, dim)``.
OutputSelector = Callable[[Any], Sequence[torch.Tensor]]


class AudioEncoder:
    """Encode lists of 16 kHz waveforms into per-utterance frame-level outputs.

    Args:
        model: a Hugging Face wav2vec2-family model in eval mode.
        config: its config.
        select: maps the model output to the tensors to keep (hidden states, or logits).
        device: ``"cpu"`` or ``"cuda"``.
        precision: compute precision, ``"fp32"``, ``"fp16"`` or ``"bf16"`` (autocast).
        do_normalize: zero-mean unit-variance input, as the model's feature extractor says.
        chunk_seconds: utterances longer than this are chunked.
        overlap_seconds: overlap between consecutive chunks (context on each side of a seam).
        forward_kwargs: extra model arguments (``output_hidden_states=True``).
    """

    def __init__(self, model: torch.nn.Module, config: Any, select: OutputSelector, *, device: str = "cpu",
                 precision: str = "fp32", do_normalize: bool = True, chunk_seconds: float = 30.0,
                 overlap_seconds: float = 5.0, sample_rate: int = 16_000, forward_kwargs: dict | None = None) -> None:
        if precision not in PRECISIONS:
            raise ExtractError(f"precision {precision!r}: use one of {sorted(PRECISIONS)}")
        if overlap_seconds >= chunk_seconds:
            raise ExtractError(f"--chunk-overlap {overlap_seconds} s must be shorter than --chunk-seconds {chunk_seconds} s")
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.config = config
        self.select = select
        self.precision = precision
        self.do_normalize = do_normalize
        self.frontend = ConvFrontend.of(config)
        self.pad_safe = pad_safe(config)
        self.chunk_samples = int(chunk_seconds * sample_rate)
        self.overlap_samples = int(overlap_seconds * sample_rate)
        self.forward_kwargs = forward_kwargs or {}

    @property
    def frame_rate(self) -> float:
        return 16_000 / self.frontend.stride

    def min_samples(self) -> int:
        return self.frontend.receptive_field

    def needs_chunking(self, n_samples: int) -> bool:
        return n_samples > self.chunk_samples

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    @torch.inference_mode()
    def forward(self, waves: Sequence[np.ndarray]) -> list[list[torch.Tensor]]:
        """One padded batch (no chunking). Returns, per utterance, its ``(frames, dim)`` tensors."""
        lengths = [len(w) for w in waves]
        if not self.pad_safe and len(set(lengths)) > 1:
            raise ExtractError("internal: a group-norm encoder was given a padded batch; "
                               "batches for it must hold utterances of equal length")
        batch = np.zeros((len(waves), max(lengths)), dtype=np.float32)
        for i, w in enumerate(waves):
            batch[i, : len(w)] = normalize(w) if self.do_normalize else w
        inputs = torch.from_numpy(batch).to(self.device, non_blocking=True)
        kwargs = dict(self.forward_kwargs)
        if self.pad_safe and len(waves) > 1:
            mask = torch.zeros(inputs.shape, dtype=torch.long)
            for i, n in enumerate(lengths):
                mask[i, :n] = 1
            kwargs["attention_mask"] = mask.to(self.device)
        with self._autocast():
            outputs = self.select(self.model(inputs, **kwargs))
        return [[o[i, : self.frontend.n_frames(n)] for o in outputs] for i, n in enumerate(lengths)]

    def encode_long(self, wave: np.ndarray, keep: Sequence[int] | None = None,
                    stats: RunningStats | None = None) -> list[torch.Tensor]:
        """One long utterance in overlapping chunks, stitched to its full frame count.

        Memory stays bounded for hours of audio: the waveform is normalised chunk by chunk (with
        the whole utterance's mean and variance), only the outputs in ``keep`` (default: all) are
        assembled, into preallocated tensors, and ``stats`` (if given) accumulates every output's
        mean and std chunk by chunk, so pooled statistics of all layers need no layer kept whole.
        """
        if self.do_normalize:  # over the whole utterance, in float64 blocks (no float64 copy of it)
            mean, var = blockwise_mean_var(wave)
        chunks = plan_chunks(len(wave), self.chunk_samples, self.overlap_samples, self.frontend)
        total = self.frontend.n_frames(len(wave))
        assembled: dict[int, torch.Tensor] = {}
        saved, self.do_normalize = self.do_normalize, False
        try:
            for c in chunks:
                piece = wave[c.start:c.stop]
                if saved:
                    piece = ((piece - mean) / np.sqrt(var + 1e-7)).astype(np.float32)
                out = self.forward([piece])[0]
                kept = [o[c.keep_from - c.first_frame: c.keep_to - c.first_frame] for o in out]
                if stats is not None:
                    stats.update(kept)
                for k in range(len(kept)) if keep is None else keep:
                    if k not in assembled:
                        assembled[k] = torch.empty((total, *kept[k].shape[1:]), dtype=kept[k].dtype)
                    assembled[k][c.keep_from: c.keep_to] = kept[k].cpu()
        finally:
            self.do_normalize = saved
        return [assembled[k] for k in sorted(assembled)]

    def encode(self, waves: Sequence[np.ndarray]) -> list[list[torch.Tensor]]:
        """Encode a planned batch: long utterances go through :meth:`encode_long`, one by one."""
        if len(waves) == 1 and self.needs_chunking(len(waves[0])):
            return [self.encode_long(waves[0])]
        if any(self.needs_chunking(len(w)) for w in waves):
            raise ExtractError("internal: utterances to chunk must be planned in batches of one")
        return self.forward(waves)


def blockwise_mean_var(wave: np.ndarray, block: int = 1 << 22) -> tuple[float, float]:
    """Mean and variance of a long waveform in float64, without a full-size temporary."""
    n = len(wave)
    mean = sum(float(wave[i: i + block].sum(dtype=np.float64)) for i in range(0, n, block)) / n
    square = sum(float(((wave[i: i + block].astype(np.float64) - mean) ** 2).sum()) for i in range(0, n, block))
    return mean, square / n


class RunningStats:
    """Mean and std over frames of several ``(frames, dim)`` outputs, merged chunk by chunk (Chan et al.)."""

    def __init__(self) -> None:
        self.n = 0
        self.mean: np.ndarray | None = None  # (outputs, dim) float64
        self.m2: np.ndarray | None = None

    def update(self, outputs: Sequence[torch.Tensor]) -> None:
        x = torch.stack([o.double() for o in outputs]).cpu().numpy()  # (outputs, frames, dim)
        n_b = x.shape[1]
        if n_b == 0:
            return
        mean_b = x.mean(axis=1)
        m2_b = ((x - mean_b[:, None]) ** 2).sum(axis=1)
        if self.mean is None:
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + delta ** 2 * (self.n * n_b / n)
        self.n = n

    def result(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        if self.mean is None:
            raise ExtractError("no frames were seen")
        return self.mean.astype(dtype), np.sqrt(self.m2 / self.n).astype(dtype)
