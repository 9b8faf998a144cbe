"""MMER's evaluation of long inputs (``sercache predict`` of a recording) in bounded memory.

MMER's fusion attends from every text token to every audio frame twice (text to audio, and text to the
audio-aware text, which has one key per frame) and runs a 3072-wide feed-forward over every frame: at 50 frames a
second, a 2-hour recording holds over 4 GB in that feed-forward alone. Here the frames are read a block at a
time: the two token-to-frame attentions accumulate their softmax over the blocks (a running max and sum, the
"online softmax" of memory-efficient attention), the frame-query attention and its feed-forward run per block,
and the audio max-pool is a running max. Each token's and each frame's result is the unblocked computation's,
up to float rounding. Token-query attentions over the tokens run a block of query rows at a time.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sercache.heads import base
from sercache.heads.base import StreamBatch, masked_max


def needs_blocks(head: Any, audio: StreamBatch, text: StreamBatch) -> bool:
    """Whether one item alone would hold more than ``EVAL_SCORE_ELEMENTS`` in scores or a frame feed-forward."""
    frames, tokens, heads = audio.x.shape[1], text.x.shape[1], head.text_self.attention.num_heads
    largest = max(heads * tokens * max(frames, tokens), frames * head.text_self.ffn[0].out_features)
    return largest > base.EVAL_SCORE_ELEMENTS


def _in_projection(mha: nn.MultiheadAttention, x: Tensor, which: int) -> Tensor:
    """The query (0), key (1) or value (2) projection of ``mha``, split into heads: ``(batch, heads, len, d)``."""
    e = mha.embed_dim
    bias = mha.in_proj_bias[which * e:(which + 1) * e] if mha.in_proj_bias is not None else None
    y = F.linear(x, mha.in_proj_weight[which * e:(which + 1) * e], bias)
    return y.unflatten(-1, (mha.num_heads, e // mha.num_heads)).transpose(1, 2)


class _OverFrameBlocks:
    """Attention of fixed queries (the text tokens) over keys and values that arrive a block of frames at a time."""

    def __init__(self, mha: nn.MultiheadAttention, query: Tensor) -> None:
        self.mha = mha
        self.q = _in_projection(mha, query, 0) / math.sqrt(mha.embed_dim // mha.num_heads)
        self.max = torch.full((*self.q.shape[:-1], 1), -math.inf, dtype=query.dtype, device=query.device)
        self.sum = torch.zeros_like(self.max)
        self.acc = torch.zeros_like(self.q)

    def add(self, memory: Tensor, ignored: Tensor) -> None:
        """``memory`` ``(batch, block, hidden)``; ``ignored`` ``(batch, block)`` True on keys not attended."""
        k, v = _in_projection(self.mha, memory, 1), _in_projection(self.mha, memory, 2)
        scores = torch.matmul(self.q, k.transpose(-1, -2)).masked_fill(ignored[:, None, None, :], -math.inf)
        new = torch.maximum(self.max, scores.amax(-1, keepdim=True))
        shift = new.masked_fill(torch.isinf(new), 0.0)  # a row with no attended key yet: exp(-inf) = 0 below
        p = torch.exp(scores - shift)
        kept = torch.exp(self.max - shift)
        self.sum = self.sum * kept + p.sum(-1, keepdim=True)
        self.acc = self.acc * kept + torch.matmul(p, v)
        self.max = new

    def result(self) -> Tensor:
        out = (self.acc / self.sum).transpose(1, 2).flatten(-2)
        return self.mha.out_proj(out)


def _after_attention(block: Any, query: Tensor, attended: Tensor, rows: int) -> Tensor:
    """The rest of a BERT block (eval: no dropout): residual and norm, feed-forward, residual and norm; ``rows``
    tokens at a time (the feed-forward is ``ffn_dim`` wide)."""
    x = block.attention_norm(query + attended)
    return torch.cat([block.ffn_norm(x[:, r:r + rows] + block.ffn(x[:, r:r + rows]))
                      for r in range(0, x.shape[1], rows)], 1)


def _rows(block: Any, query: Tensor, memory: Tensor, memory_mask: Tensor, rows: int) -> Tensor:
    """``block(query, memory, memory_mask)`` a block of query rows at a time (each row's result is its own)."""
    return torch.cat([block(query[:, r:r + rows], memory, memory_mask) for r in range(0, query.shape[1], rows)], 1)


def evaluate_in_blocks(head: Any, audio: StreamBatch, text: StreamBatch) -> Tensor:
    """MMER's logits in evaluation, reading the audio frames a block at a time (see the module's notes)."""
    batch, frames, tokens = audio.x.shape[0], audio.x.shape[1], text.x.shape[1]
    heads, ffn = head.text_self.attention.num_heads, head.text_self.ffn[0].out_features
    budget = base.EVAL_SCORE_ELEMENTS
    token_rows = max(1, budget // max(1, batch * heads * tokens, batch * ffn))
    block = max(1, budget // max(1, batch * heads * tokens, batch * ffn))

    t = head.text_proj(text.x)
    t = _rows(head.text_self, t, t, text.mask, token_rows)
    to_audio = _OverFrameBlocks(head.cross_text_audio.attention, t)
    to_audio_aware = _OverFrameBlocks(head.cross_text_text.attention, t)
    any_frame = audio.mask.any(-1, keepdim=True)  # an item without real frames attends to all (as BertBlock does)
    audio_max = None
    for start in range(0, frames, block):
        x, mask = audio.x[:, start:start + block], audio.mask[:, start:start + block]
        ignored = ~mask & any_frame
        to_audio.add(head.proj_a1(x), ignored)
        to_audio_aware.add(_rows(head.cross_audio_text, head.proj_a2(x), t, text.mask, block), ignored)
        pooled = masked_max(x, mask)
        audio_max = pooled if audio_max is None else torch.maximum(audio_max, pooled)
    cross_output = _after_attention(head.cross_text_audio, t, to_audio.result(), token_rows)
    final_txt = _after_attention(head.cross_text_text, t, to_audio_aware.result(), token_rows)
    g = torch.sigmoid(head.gate(torch.cat([final_txt, cross_output], -1)))
    fused = masked_max(torch.cat([final_txt, g * cross_output], -1), text.mask)
    return head.classifier(torch.cat([audio_max, head.downsample(fused)], -1))
