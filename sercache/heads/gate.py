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

import math

import torch
from torch import Tensor, nn

from sercache.heads import register
from sercache.heads.base import Batch, Head, HeadError, HeadOutput, attend, attend_rows, masked_mean

#: Audio frames gated at once in evaluation: ``sercache predict`` of a long recording is one utterance of
#: hundreds of thousands of frames, and each frame's gate reads only itself and the text (blocks change nothing
#: but the order of the mean's sum); 16384 frames are 5.5 minutes of 50 Hz features. The attention over all the
#: frames (text tokens, or ``cmgi``'s self-attention, reading every frame) is computed a block of query rows at
#: a time (:func:`~sercache.heads.base.attend_rows`): frames x frames scores are never held.
EVAL_FRAME_BLOCK = 16_384


class TemporalGate(nn.Module):
    """``G = sigmoid(W [x; c] + b)``, ``out = x * G + c * (1 - G)``, per frame and per dimension.

    ``W [x; c]`` is computed as ``W_x x + W_c c`` (the two halves of ``W``): the same sum without
    the concatenation, with no gradient computed for an ``x`` that needs none (cached frames), and
    with ``W_c`` free to meet ``c``'s values before attention (:func:`gated_attention`).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * dim, dim)

    def halves(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """``(W_x x + b, W_c v)``."""
        return _HalvesLinear.apply(x, v, self.proj.weight, self.proj.bias)

    @staticmethod
    def mix(x: Tensor, c: Tensor, pre: Tensor) -> Tensor:
        g = torch.sigmoid(pre)
        return x * g + c * (1 - g)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        px, pc = self.halves(x, c)
        return self.mix(x, c, px + pc)


def gated_attention(gate: TemporalGate, x: Tensor, query: Tensor, key: Tensor, value: Tensor,
                    key_mask: Tensor | None) -> Tensor:
    """``gate(x, c)`` for ``c = attend(query, key, value)``, with ``W_c c`` taken from the same attention.

    ``W_c (A v) = A (v W_c^T)``: projecting the t' values before attention instead of the t attended
    frames after it is the same gate for a fraction of the cost when t' << t (a few dozen text
    tokens against hundreds of audio frames). The head's largest product, frames x 2d x d, and its
    gradient with respect to ``c`` are gone (docs/benchmarks.md, "Cache vs recompute").
    """
    px, pv = gate.halves(x, value)
    both = attend(query, key, torch.cat([value, pv], dim=-1), key_mask)
    c, pc = both[..., : value.shape[-1]], both[..., value.shape[-1]:]
    return gate.mix(x, c, px + pc)


class _HalvesLinear(torch.autograd.Function):
    """``(x W_x^T + b, v W_c^T)`` for ``W = [W_x | W_c]``, one parameter.

    Autograd through two slices of ``W`` would zero-fill and copy a full-size gradient per slice
    (as costly here as the products saved); this builds ``W``'s gradient as one tensor.
    """

    @staticmethod
    def forward(ctx, x: Tensor, v: Tensor, weight: Tensor, bias: Tensor) -> tuple[Tensor, Tensor]:  # noqa: ANN001
        d = x.shape[-1]
        ctx.save_for_backward(x, v, weight)
        px = torch.addmm(bias, x.reshape(-1, d), weight[:, :d].t()).view(*x.shape[:-1], -1)
        pv = (v.reshape(-1, d) @ weight[:, d:].t()).view(*v.shape[:-1], -1)
        return px, pv

    @staticmethod
    def backward(ctx, g_x: Tensor, g_v: Tensor) -> tuple[Tensor | None, ...]:  # noqa: ANN001
        x, v, weight = ctx.saved_tensors
        d = x.shape[-1]
        gx, gv = g_x.reshape(-1, g_x.shape[-1]), g_v.reshape(-1, g_v.shape[-1])
        grad_w = torch.cat([gx.t() @ x.reshape(-1, d), gv.t() @ v.reshape(-1, d)], dim=1)
        grad_x = g_x @ weight[:, :d] if ctx.needs_input_grad[0] else None
        grad_v = g_v @ weight[:, d:] if ctx.needs_input_grad[1] else None
        return grad_x, grad_v, grad_w, gx.sum(0)


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
    mixes_layers = True  # reads its roles through Head.frames
    train_defaults = {"optimizer": "adam", "lr": 1e-5, "batch_size": 2, "epochs": 15, "patience": 5}

    def __init__(self, dims: dict[str, int], n_classes: int, *, align: str = "attention", share_gate: bool = True,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if align not in ("attention", "pool"):
            raise HeadError(f"align={align!r}: use 'attention' or 'pool'")
        d = dims["audio"]
        self.align = align
        self.text_proj = nn.Linear(dims["text"], d)
        self.gate_audio = TemporalGate(d)
        self.gate_text = self.gate_audio if share_gate else TemporalGate(d)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * d, n_classes)

    def forward(self, batch: Batch) -> HeadOutput:
        a, t = self.frames(batch, "audio"), self.frames(batch, "text")
        x, y = a.x, self.text_proj(t.x)
        if self.align == "attention":
            if self.training or x.shape[1] <= EVAL_FRAME_BLOCK:
                gated_audio = gated_attention(self.gate_audio, x, x, y, y, t.mask)  # (batch, audio frames, d)
                pooled_audio = masked_mean(gated_audio, a.mask)
            else:
                pooled_audio = self._gated_audio_mean(x, y, a.mask, t.mask)
            audio_on_text = (attend if self.training else attend_rows)(y, x, x, a.mask)  # (batch, text tokens, d)
            pooled_text = masked_mean(self.gate_text(y, audio_on_text), t.mask)
        else:
            xa, yt = masked_mean(x, a.mask), masked_mean(y, t.mask)
            pooled_audio, pooled_text = self.gate_audio(xa, yt), self.gate_text(yt, xa)
        return HeadOutput(self.classifier(self.dropout(torch.cat([pooled_audio, pooled_text], dim=-1))))

    def _gated_audio_mean(self, x: Tensor, y: Tensor, audio_mask: Tensor, text_mask: Tensor) -> Tensor:
        """``masked_mean(gated_attention(...), audio_mask)``, :data:`EVAL_FRAME_BLOCK` frames at a time: ``(batch, d)``."""
        total = x.new_zeros(x.shape[0], x.shape[-1])
        for start in range(0, x.shape[1], EVAL_FRAME_BLOCK):
            xs = x[:, start:start + EVAL_FRAME_BLOCK]
            m = audio_mask[:, start:start + EVAL_FRAME_BLOCK].unsqueeze(-1).to(x.dtype)
            total += (gated_attention(self.gate_audio, xs, xs, y, y, text_mask) * m).sum(1)
        return total / audio_mask.unsqueeze(-1).to(x.dtype).sum(1).clamp(min=1.0)


class CrossAttention(nn.Module):
    """Single-head attention with its own q, k, v projections, scaled by sqrt(d)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, query: Tensor, source: Tensor, source_mask: Tensor | None) -> Tensor:
        return attend(self.q(query), self.k(source), self.v(source), source_mask)

    def over_frames(self, query: Tensor, source: Tensor, source_mask: Tensor | None) -> Tensor:
        """``self(query, source, source_mask)`` for ``query`` already projected (``self.q``), without projecting
        ``source``: for a long source in evaluation (:func:`~sercache.heads.base.attend_rows`).

        ``q . (W_k s + b_k) = (W_k^T q) . s + q . b_k``, and the second term is the same for every key (the
        softmax ignores it); each row of weights sums to 1, so ``A (s W_v^T + b_v) = (A s) W_v^T + b_v``. No
        ``frames x d`` key or value copy of the source is made.
        """
        scale = 1.0 / math.sqrt(query.shape[-1])
        return self.v(attend_rows(query @ self.k.weight, source, source, source_mask, scale))

    def gated(self, gate: TemporalGate, x: Tensor, query: Tensor, source: Tensor,
              source_mask: Tensor | None) -> Tensor:
        """``gate(x, self(query, source, source_mask))``, through :func:`gated_attention`."""
        return gated_attention(gate, x, self.q(query), self.k(source), self.v(source), source_mask)


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
    mixes_layers = True  # reads its roles through Head.frames
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
        a, t = self.frames(batch, "audio"), self.frames(batch, "text")
        x, y = a.x, self.text_proj(t.x)
        if not self.training:
            return self._evaluate(x, y, a.mask, t.mask)
        mask_a, mask_t = (None, None) if self.faithful_padding else (a.mask, t.mask)
        cl = self.cross(y, x, mask_a)
        xg, yg = (x, y) if self.self_attention is None else (self.self_attention(x, x, mask_a),
                                                             self.self_attention(y, y, mask_t))
        # the gate's input xg meets Ca = Attn(q=Xa, k=Xl, v=Xl)
        fa = self.cross.gated(self.gate, xg, x, y, mask_t)
        fl = self.gate(yg, cl)
        if self.faithful_padding:
            pa, pl = fa.mean(1), fl.mean(1)
        else:
            pa, pl = masked_mean(fa, a.mask), masked_mean(fl, t.mask)
        return HeadOutput(self.classifier(self.dropout(torch.cat([pa, pl], dim=-1))))

    def _evaluate(self, x: Tensor, y: Tensor, audio_mask: Tensor, text_mask: Tensor) -> HeadOutput:
        """:meth:`forward` in evaluation, in bounded memory for any number of audio frames.

        The audio side is gated and pooled :data:`EVAL_FRAME_BLOCK` frames at a time, and every attention that
        reads all the frames (``Cl``, the self-attention) is computed a block of query rows at a time
        (:func:`~sercache.heads.base.attend_rows`), with no key or value projection of the frames
        (:meth:`CrossAttention.over_frames`): the frames x frames scores of the self-attention (518 GB for 2 hours
        at 50 Hz) and the frames x d copies are never held. The same outputs as training's path, up to float
        rounding.
        """
        mask_a, mask_t = (None, None) if self.faithful_padding else (audio_mask, text_mask)
        cross, sa = self.cross, self.self_attention
        cl = cross.over_frames(cross.q(y), x, mask_a)  # (batch, text tokens, d)
        yg = y if sa is None else attend_rows(sa.q(y), sa.k(y), sa.v(y), mask_t)
        fl = self.gate(yg, cl)
        pl = fl.mean(1) if self.faithful_padding else masked_mean(fl, text_mask)
        key_y, value_y = cross.k(y), cross.v(y)
        total = x.new_zeros(x.shape[0], x.shape[-1])
        for start in range(0, x.shape[1], EVAL_FRAME_BLOCK):
            xs = x[:, start:start + EVAL_FRAME_BLOCK]
            xg = xs if sa is None else sa.over_frames(sa.q(xs), x, mask_a)
            fa = gated_attention(self.gate, xg, cross.q(xs), key_y, value_y, mask_t)
            if not self.faithful_padding:
                fa = fa * audio_mask[:, start:start + EVAL_FRAME_BLOCK].unsqueeze(-1).to(fa.dtype)
            total += fa.sum(1)
        count = (torch.full_like(total[:, :1], x.shape[1]) if self.faithful_padding
                 else audio_mask.unsqueeze(-1).to(x.dtype).sum(1).clamp(min=1.0))
        return HeadOutput(self.classifier(self.dropout(torch.cat([total / count, pl], dim=-1))))
