"""Segment-level batching for the GLAM family (``glam``, ``apcnn``, ``mhcnn``).

These networks see fixed-length windows of a frame stream (GLAM: 1.8 s every 0.2 s; APCNN and
MHCNN: 2 s every 1 s), each carrying its utterance's label, and an utterance's prediction is the
mean of its windows' logits. As in the references, a training step is a batch of *segments*
(GLAM 32, APCNN 128) drawn from every segment of the training fold.

The windows of a set of utterances are computed once (a start row and a length per segment, no
copy of the frames); a batch is then one vectorised gather from the fold's frame block.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from sercache.heads.segmented import segment_windows
from sercache.training.data import InMemoryData


class SegmentTable:
    """Every segment of utterances ``idx`` of one role: where it starts in the fold's frames, and its label.

    Args:
        data: the fold in memory (frames, lengths, labels, normalisation).
        role: the frame role the segment network reads.
        idx: positions of the utterances in ``data``.
        segment_frames, hop_frames: see :func:`~sercache.heads.segmented.segment_windows`.
    """

    def __init__(self, data: InMemoryData, role: str, idx: np.ndarray, segment_frames: int, hop_frames: float) -> None:
        self.data, self.role, self.segment_frames = data, role, segment_frames
        device = data.device
        idx_t = torch.as_tensor(idx, device=device)
        lengths = torch.as_tensor(data.lengths[role][idx], device=device)
        starts, utt = segment_windows(lengths, segment_frames, hop_frames)
        self.utterance = utt                                    # (n,) position in idx
        self.first_row = data._starts[role][idx_t][utt] + starts  # (n,) row of the segment's first frame
        self.length = torch.clamp(lengths[utt] - starts, max=segment_frames)  # real frames (< S when padded)
        self.y = data.y[idx_t][utt]
        self.steps = torch.arange(segment_frames, device=device)

    def __len__(self) -> int:
        return len(self.utterance)

    def batches(self, batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
        """Shuffled batches of segment positions (``rng=None``: in order, for evaluation)."""
        order = np.arange(len(self)) if rng is None else rng.permutation(len(self))
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]

    def gather(self, seg: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """Segments ``seg`` as ``x`` ``(n, segment_frames, dim)`` float32 (normalised, zero past the end),
        ``mask`` ``(n, segment_frames)`` and labels ``(n,)``."""
        sel = torch.as_tensor(seg, device=self.data.device)
        frames = self.data._frames[self.role]            # (layers, total + 1, dim): the last row is zeros
        mask = self.steps[None, :] < self.length[sel][:, None]
        rows = torch.where(mask, self.first_row[sel][:, None] + self.steps[None, :], frames.shape[1] - 1)
        x = frames[0, rows].float()
        if self.data.normalization is not None:
            mean, std = (t.to(x.device)[0] for t in self.data.normalization[self.role])
            x = self.data.clip((x - mean) / std) * mask[..., None]
        return x, mask, self.y[sel]

    def utterance_logits(self, segment_logits: Tensor, n_utterances: int) -> Tensor:
        """Mean of each utterance's segment logits: ``(n_segments, C) -> (n_utterances, C)``."""
        total = segment_logits.new_zeros(n_utterances, segment_logits.shape[1]).index_add_(0, self.utterance,
                                                                                            segment_logits)
        counts = torch.bincount(self.utterance, minlength=n_utterances).clamp(min=1)
        return total / counts[:, None].to(segment_logits.dtype)
