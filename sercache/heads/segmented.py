"""What the GLAM family shares: segment windows in seconds, the references' recipes, segment-level loss.

GLAM and its two baselines see fixed-length windows of a frame stream, each carrying its
utterance's label, and an utterance's prediction is the mean of its windows' logits. The trainer
batches them by segment (see :mod:`sercache.training.segments`); ``forward`` takes utterances.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sercache.heads.base import Batch, Head, HeadError, HeadOutput, StreamBatch

#: Each reference's training recipe (sercache's defaults). ``batch_size`` counts segments, as in
#: the references. None of them stopped early: ``patience`` = ``epochs`` runs every epoch and
#: keeps the one with the best validation UA. GLAM's reference fed raw (not z-scored) MFCCs.
GLAM_TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6, "batch_size": 32, "epochs": 50, "patience": 50,
    "schedule": "exponential", "gamma": 0.95, "min_lr": 1e-6, "grad_clip": 0.0, "mixup_alpha": 0.5,
    "normalize": False,
}
MHCNN_TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6, "batch_size": 32, "epochs": 50, "patience": 50,
    "schedule": "step", "step_size": 10, "gamma": 0.1, "grad_clip": 0.0, "mixup_alpha": 0.0,
}
APCNN_TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4, "batch_size": 128,
    "epochs": 50, "patience": 50, "schedule": "none", "grad_clip": 0.0, "mixup_alpha": 0.0,
}

#: Frames per second of the MFCC stream (16 kHz, hop 512): the default input's rate.
MFCC_FRAME_RATE = 16_000 / 512


def segment_windows(lengths: Tensor, segment_frames: int, hop_frames: float) -> tuple[Tensor, Tensor]:
    """Window starts covering every utterance, and the utterance each window belongs to.

    An utterance of ``L`` frames gets ``1`` window if ``L <= segment_frames`` (starting at 0, to be
    zero-padded), else ``ceil((L - segment_frames) / hop) + 1`` windows starting at ``round(k * hop)``,
    the last one moved back to end exactly at ``L``. The hop may be fractional (0.2 s is 6.25 frames
    of the MFCC stream): rounding each start keeps the mean hop exact.

    Args:
        lengths: ``(batch,)`` real frames per utterance.
        segment_frames: window length in frames.
        hop_frames: distance between window starts in frames (> 0, may be fractional).

    Returns:
        ``starts`` ``(n_segments,)`` and ``utt_index`` ``(n_segments,)``, utterance-major and
        ascending in time within an utterance.
    """
    if hop_frames <= 0 or segment_frames < 1:
        raise HeadError(f"segments need segment_frames >= 1 and hop_frames > 0, got {segment_frames}, {hop_frames}")
    lengths = lengths.long()
    last_start = (lengths - segment_frames).clamp(min=0)
    counts = torch.ceil(last_start.double() / hop_frames - 1e-9).long().clamp(min=0) + 1
    utt_index = torch.repeat_interleave(torch.arange(len(lengths), device=lengths.device), counts)
    first = torch.cumsum(counts, 0) - counts
    k = torch.arange(len(utt_index), device=lengths.device) - first[utt_index]
    starts = torch.floor(k.double() * hop_frames + 0.5).long()
    return torch.minimum(starts, last_start[utt_index]), utt_index


def segment_size(seconds: float, frame_rate: float) -> int:
    """Frames of a ``seconds`` window of a stream analysed with centred frames: ``1 + floor(seconds x rate)``.

    That is what the references computed on cut waveforms (librosa's centred STFT): 1.8 s of
    16 kHz audio at hop 512 gives 57 MFCC frames, 2 s gives 63.
    """
    return 1 + int(np.floor(seconds * frame_rate + 1e-6))


class SegmentHead(Head):
    """Shared machinery: cut utterances into segments, run a per-segment network, average per utterance.

    Subclasses build ``self.net``: ``(n_segments, 1, height, segment_frames) -> (n_segments, n_classes)``
    where ``height`` is ``self.height`` (the frame dim, or ``input_proj`` when set). The trainer
    batches these heads by segment (``batch_unit``; see :mod:`sercache.training.segments`)
    through :meth:`segment_loss` and :meth:`segment_logits`; ``forward`` takes utterances.
    """

    roles: ClassVar[tuple[str, ...]] = ("mfcc",)
    batch_unit: ClassVar[str] = "segment"
    train_defaults: ClassVar[dict[str, Any]] = GLAM_TRAIN_DEFAULTS
    net: nn.Module

    def __init__(self, dims: dict[str, int], n_classes: int, *, segment_seconds: float, hop_seconds: float,
                 frame_rate: float, segment_frames: int | None, hop_frames: float | None, input_proj: int | None,
                 mixup_alpha: float) -> None:
        super().__init__()
        if frame_rate <= 0 or segment_seconds <= 0 or hop_seconds <= 0:
            raise HeadError(f"segment_seconds, hop_seconds and frame_rate must be positive, got {segment_seconds}, "
                            f"{hop_seconds}, {frame_rate}")
        self.n_classes = n_classes
        self.segment_frames = int(segment_frames) if segment_frames is not None else segment_size(segment_seconds,
                                                                                                   frame_rate)
        self.hop_frames = float(hop_frames) if hop_frames is not None else hop_seconds * frame_rate
        if self.segment_frames < 1 or self.hop_frames <= 0:
            raise HeadError("segment_frames and hop_frames must be positive")
        self.mixup_alpha = mixup_alpha
        dim = dims[self.roles[0]]
        self.input_proj = nn.Linear(dim, input_proj) if input_proj is not None else None
        self.height = input_proj if input_proj is not None else dim

    def images(self, x: Tensor, mask: Tensor) -> Tensor:
        """``(n_segments, segment_frames, dim)`` frames (``mask`` True on real ones) -> the network's
        input images ``(n_segments, 1, height, segment_frames)`` (feature axis = height, time = width)."""
        if self.input_proj is not None:
            x = self.input_proj(x)
        # ``where`` (not a product) zeroes every position past the end, whatever the padding holds
        # and whatever input_proj's bias makes of it.
        return torch.where(mask[..., None], x, 0.0).transpose(1, 2).unsqueeze(1)

    def segment_logits(self, x: Tensor, mask: Tensor) -> Tensor:
        """Segment frames -> segment logits ``(n_segments, C)``."""
        return self.net(self.images(x, mask))

    def segment_loss(self, x: Tensor, mask: Tensor, y: Tensor) -> Tensor:
        """Segment-level loss, as in the references.

        Each segment carries its utterance's label; with ``mixup_alpha > 0`` the input images and
        their one-hot labels are mixed within the batch (``lam ~ Beta(alpha, alpha)`` and a
        permutation, both from torch's global RNG); the soft-target cross-entropy is averaged over segments.
        """
        images = self.images(x, mask)
        target = F.one_hot(y, self.n_classes).to(images.dtype)
        if self.mixup_alpha > 0:
            alpha = torch.tensor(float(self.mixup_alpha))
            lam = torch.distributions.Beta(alpha, alpha).sample().to(images.device, images.dtype)
            perm = torch.randperm(images.shape[0], device=images.device)
            images = lam * images + (1 - lam) * images[perm]
            target = lam * target + (1 - lam) * target[perm]
        return F.cross_entropy(self.net(images), target)

    def windows(self, stream: StreamBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Cut every utterance of a batch into windows of frames.

        Args:
            stream: ``x`` ``(batch, frames, dim)`` with real frames first, ``mask`` ``(batch, frames)``.

        Returns:
            ``x`` ``(n_segments, segment_frames, dim)``, its ``mask`` (True on real frames) and
            ``utt_index`` ``(n_segments,)``.
        """
        lengths = stream.lengths
        starts, utt_index = segment_windows(lengths, self.segment_frames, self.hop_frames)
        frames = starts[:, None] + torch.arange(self.segment_frames, device=stream.x.device)  # (n_seg, S)
        real = frames < lengths[utt_index, None]
        # Clamping keeps the gather in range when the batch is shorter than a segment.
        x = stream.x[utt_index[:, None], frames.clamp(max=stream.x.shape[1] - 1)]
        return x, real, utt_index

    def segments(self, stream: StreamBatch) -> tuple[Tensor, Tensor]:
        """The network's input images of every window of a batch, ``(n_segments, 1, height, segment_frames)``
        (frames past an utterance's end are zero), and ``utt_index`` ``(n_segments,)``."""
        x, mask, utt_index = self.windows(stream)
        return self.images(x, mask), utt_index

    @staticmethod
    def _utterance_mean(seg_logits: Tensor, utt_index: Tensor, batch_size: int) -> Tensor:
        """Mean of segment logits per utterance: ``(n_segments, C) -> (batch, C)``."""
        total = seg_logits.new_zeros(batch_size, seg_logits.shape[1]).index_add_(0, utt_index, seg_logits)
        counts = torch.bincount(utt_index, minlength=batch_size)  # >= 1: every utterance has a segment
        return total / counts[:, None].to(seg_logits.dtype)

    def forward(self, batch: Batch) -> HeadOutput:
        """Utterance logits ``(batch, n_classes)``: the mean of each utterance's segment logits."""
        stream = batch.streams[self.roles[0]]
        x, mask, utt_index = self.windows(stream)
        return HeadOutput(logits=self._utterance_mean(self.segment_logits(x, mask), utt_index, stream.x.shape[0]))

    def training_step(self, batch: Batch) -> Tensor:
        """The segment-level loss over every segment of a batch of utterances."""
        x, mask, utt_index = self.windows(batch.streams[self.roles[0]])
        return self.segment_loss(x, mask, batch.y[utt_index])
