"""``gate``: single-layer temporal-aware gated fusion, and ``cmgi``: its multi-layer baseline.

The single-layer paper fuses HuBERT-large frames (1024-d) with BERT token features of the ASR
transcript (768-d -> Linear -> 1024-d) through one gate applied per frame and per dimension,
``G = sigmoid(W [X; C] + b)``, ``fused = X * G + C * (1 - G)``, in both directions, then
mean-pools and classifies. It reports 74.9% WA on Session 2 and 43%/38% faster training/
inference than CmGI, measured with end-to-end fine-tuning.

The paper does not say how t audio frames meet t' text tokens once attention projections
are gone. We align with parameter-free scaled dot-product attention ``softmax(X Y^T / sqrt(d)) Y``
(padding masked) and share one gate across both directions, as the paper's single W, b and
its code do. Encoders are frozen here: the heads train on cached features.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from sercache.train_heads.heads import register
from sercache.train_heads.heads.base import Batch, Head, HeadOutput, attend, masked_mean


class TemporalGate(nn.Module):
    """``G = sigmoid(W [x; c] + b)``, ``out = x * G + c * (1 - G)``, per frame and per dimension."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        g = torch.sigmoid(self.proj(torch.cat([x, c], dim=-1)))
        return x * g + c * (1 - g)


@register
class GateFusionHead(Head):
    """Single-layer gated fusion of audio frames and text tokens.

    Args:
        dims: ``{"audio": d_a, "text": d_t}``; text is projected to ``d_a``.
        n_classes: number of classes.
        align: ``"attention"`` (parameter-free cross-modal alignment, per frame) or ``"pool"``
            (gate the mean-pooled vectors: no temporal alignment).
        share_gate: one gate for both directions (the paper's single W, b) or one per direction.
        dropout: on the fused, pooled representation (the paper's README reports overfitting by
            epoch 3-6).
    """

    name = "gate"
    summary = "single-layer temporal-aware gated fusion (parameter-free alignment, shared gate)"
    roles = ("audio", "text")
    train_defaults = {"optimizer": "adam", "lr": 1e-5, "batch_size": 2, "epochs": 15, "patience": 5}

    def __init__(self, dims: dict[str, int], n_classes: int, *, align: str = "attention", share_gate: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if align not in ("attention", "pool"):
            raise ValueError(f"align={align!r}: use 'attention' or 'pool'")
        d = dims["audio"]
        self.align = align
        self.text_proj = nn.Linear(dims["text"], d)
        self.gate_audio = TemporalGate(d)
        self.gate_text = self.gate_audio if share_gate else TemporalGate(d)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * d, n_classes)

    def forward(self, batch: Batch) -> HeadOutput:
        a, t = batch.streams["audio"], batch.streams["text"]
        x, y = a.x, self.text_proj(t.x)
        if self.align == "attention":
            text_on_audio = attend(x, y, y, t.mask)   # (batch, audio frames, d)
            audio_on_text = attend(y, x, x, a.mask)   # (batch, text tokens, d)
            pooled_audio = masked_mean(self.gate_audio(x, text_on_audio), a.mask)
            pooled_text = masked_mean(self.gate_text(y, audio_on_text), t.mask)
        else:
            xa, yt = masked_mean(x, a.mask), masked_mean(y, t.mask)
            pooled_audio, pooled_text = self.gate_audio(xa, yt), self.gate_text(yt, xa)
        return HeadOutput(self.classifier(self.dropout(torch.cat([pooled_audio, pooled_text], dim=-1))))


class CrossAttention(nn.Module):
    """Single-head attention with its own q, k, v projections, scaled by sqrt(d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, query: Tensor, source: Tensor, source_mask: Tensor | None) -> Tensor:
        return attend(self.q(query), self.k(source), self.v(source), source_mask)


@register
class CmGIHead(Head):
    """CmGI, as implemented in the single-layer paper's public code.

    Cross-attention with one set of q, k, v projections shared by both directions
    (``Ca = Attn(q=Xa, k=Xl, v=Xl)``, ``Cl = Attn(q=Xl, k=Xa, v=Xa)``), one shared temporal gate,
    mean pooling, concat, linear.

    Args:
        faithful_padding: reproduce the original, which has no padding masks: attention attends
            to padded frames and the means include them. Default False: masked.
        self_attn: the paper's Table 1 version, ``G = sigmoid(W [SA(x); CA(x)])``: a self-attention
            layer (one q, k, v set shared by both streams) feeds the gate instead of ``x``.
    """

    name = "cmgi"
    summary = "CmGI baseline: shared q/k/v cross-attention + temporal gate (optionally self-attention)"
    roles = ("audio", "text")
    train_defaults = {"optimizer": "adam", "lr": 1e-5, "batch_size": 2, "epochs": 15, "patience": 5}

    def __init__(self, dims: dict[str, int], n_classes: int, *, faithful_padding: bool = False,
                 self_attn: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        d = dims["audio"]
        self.faithful_padding = faithful_padding
        self.text_proj = nn.Linear(dims["text"], d)
        self.cross = CrossAttention(d)
        self.self_attention = CrossAttention(d) if self_attn else None
        self.gate = TemporalGate(d)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * d, n_classes)

    def forward(self, batch: Batch) -> HeadOutput:
        a, t = batch.streams["audio"], batch.streams["text"]
        x, y = a.x, self.text_proj(t.x)
        mask_a, mask_t = (None, None) if self.faithful_padding else (a.mask, t.mask)
        ca = self.cross(x, y, mask_t)
        cl = self.cross(y, x, mask_a)
        if self.self_attention is not None:
            x, y = self.self_attention(x, x, mask_a), self.self_attention(y, y, mask_t)
        fa, fl = self.gate(x, ca), self.gate(y, cl)
        if self.faithful_padding:
            pa, pl = fa.mean(1), fl.mean(1)
        else:
            pa, pl = masked_mean(fa, a.mask), masked_mean(fl, t.mask)
        return HeadOutput(self.classifier(self.dropout(torch.cat([pa, pl], dim=-1))))
