"""MMER: multimodal multi-task fusion of speech and transcript (Ghosh et al., Interspeech 2023).

What the paper did. wav2vec2-base (CNN feature encoder frozen, transformer fine-tuned) reads the
waveform. The text is RoBERTa token embeddings of the gold transcript, precomputed and loaded from
disk; the repository fine-tunes RoBERTa per fold on the transcripts (``text_roberta/``). One-layer
BERT blocks fuse them: text
self-attention, text-to-audio and audio-to-text cross-attention, a second text-to-(audio-aware
text) cross-attention and a sigmoid gate. Max-pooled wav2vec2 frames and the max-pooled fused
sequence feed a linear classifier. Three auxiliary losses are weighted 0.1 each: CTC from the
wav2vec2 frames onto the transcript characters, a supervised contrastive loss over same-label
pairs, and InfoNCE against TTS and back-translation augmented views. Training used AdamW at
lr 5e-5 and 5-fold leave-one-session-out on IEMOCAP. The best epoch was chosen on the test
session, and the code's ``evaluate_metrics`` calls mean per-class recall "wa" (and accuracy
"ua"). Reported: 81.2% "wa".

What we reproduce. The same fusion graph, pooling, classifier, loss weights, temperature and
optimiser, on cached frozen features: ``audio`` frames (wav2vec2-base last layer in the paper's
setting) and ``text`` token embeddings of the gold transcript. CTC targets are the
``batch.chars`` gold-transcript characters over :data:`CHAR_VOCAB` (other alphabets spelled with
it: :func:`sercache.training.targets.transcript_chars`); an utterance without a gold transcript
adds no CTC term.

Where we differ.

* The encoders are frozen. A CTC linear on the raw cached frames would train only itself, so it
  reads the projected frames ``A1``. CTC then shapes a projection that the fusion uses.
* Every attention and pooling step uses padding masks.
* CTC uses ``reduction="mean"`` and ``zero_infinity=True``; the original sums and keeps
  infinite losses. Its vocabulary is wav2vec2's 32 tokens; ours is :data:`CHAR_VOCAB`.
* The supervised contrastive loss is the standard one (Khosla et al. 2020) on the
  L2-normalised pooled fused vector. The original runs a 2-layer MLP on the classifier input
  (pooled audio and fused). It does not normalise, counts each anchor as its own positive and
  divides the log-softmax, not the logits, by the temperature.
* InfoNCE runs only when the batch carries a ``"text_aug"`` stream: token embeddings of an
  augmented transcript (for example a back-translation), same encoder and dimension as
  ``"text"``. That view goes through the same fusion with the original audio. The original also
  had TTS-augmented audio and separate MLP projections per view. ``"text_aug"`` is not in
  ``roles``, so a loader adds it only when asked.
* Model selection is on validation data (the trainer's job), not on the test session.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sercache.heads import register
from sercache.heads.base import CHAR_VOCAB, Batch, Head, HeadError, HeadOutput, StreamBatch, masked_max
from sercache.heads.mmer_streamed import evaluate_in_blocks, needs_blocks

#: BERT's LayerNorm epsilon, as in the original's ``BertLayerNorm``.
BERT_LAYER_NORM_EPS = 1e-12

#: The augmented-transcript role that ``augmented_text=true`` adds (train option --text-aug-stream).
STREAM_ROLES = {"text_aug": {"default": "text_aug", "help": "Augmented-text stream for mmer --set augmented_text=true."}}


class BertBlock(nn.Module):
    """One post-LayerNorm BERT layer whose keys and values may come from another sequence.

    ``query is memory`` gives self-attention (``BertLayer``), another sequence gives
    cross-attention (the original's ``BertCrossAttentionLayer``).
    """

    def __init__(self, hidden: int, heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.attention_norm = nn.LayerNorm(hidden, eps=BERT_LAYER_NORM_EPS)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, hidden))
        self.ffn_norm = nn.LayerNorm(hidden, eps=BERT_LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        """Attend from ``query`` to ``memory``, then apply the feed-forward sublayer.

        Args:
            query: ``(batch, tq, hidden)``.
            memory: ``(batch, tk, hidden)``.
            memory_mask: ``(batch, tk)`` bool, True on real keys.

        Returns:
            ``(batch, tq, hidden)``.
        """
        # A row without any real key would softmax over nothing but -inf and turn NaN. Such a
        # row attends to all of its keys instead; pooling and masks downstream discard it.
        ignored = ~memory_mask & memory_mask.any(-1, keepdim=True)
        attended, _ = self.attention(query, memory, memory, key_padding_mask=ignored, need_weights=False)
        x = self.attention_norm(query + self.dropout(attended))
        return self.ffn_norm(x + self.dropout(self.ffn(x)))


def supervised_contrastive_loss(z: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, the ``L_out`` form).

    For each anchor with at least one other sample of its label: the mean over those positives
    of ``-log softmax`` of the similarities to every other sample. The result is averaged over
    such anchors.

    Args:
        z: ``(batch, dim)`` L2-normalised embeddings.
        labels: ``(batch,)`` class ids.
        temperature: similarity scale ``1/τ``.

    Returns:
        Scalar loss; 0 when no anchor has a positive.
    """
    not_self = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    positives = (labels[:, None] == labels[None, :]) & not_self
    n_positives = positives.sum(1)
    anchors = n_positives > 0
    if not anchors.any():
        return z.new_zeros(())
    sims = (z @ z.T / temperature).masked_fill(~not_self, torch.finfo(z.dtype).min)
    log_prob = sims.log_softmax(-1)
    per_anchor = -log_prob.masked_fill(~positives, 0.0).sum(1)[anchors] / n_positives[anchors]
    return per_anchor.mean()


def info_nce_loss(z: Tensor, z_view: Tensor, temperature: float) -> Tensor:
    """InfoNCE: each sample's augmented view is its positive, the batch's other views negatives.

    Args:
        z: ``(batch, dim)`` L2-normalised embeddings of the original inputs.
        z_view: ``(batch, dim)`` L2-normalised embeddings of the augmented views, same order.
        temperature: similarity scale ``1/τ``.

    Returns:
        Scalar loss.
    """
    logits = z @ z_view.T / temperature
    return F.cross_entropy(logits, torch.arange(len(z), device=z.device))


@register
class MMERHead(Head):
    """MMER fusion of audio frames and transcript tokens, with CTC and contrastive auxiliary losses.

    Args:
        dims: feature size per role; needs ``"audio"`` and ``"text"``.
        n_classes: number of emotion classes.
        hidden: width of the BERT blocks (the paper's 768).
        heads: attention heads per block.
        ffn_dim: feed-forward width of the BERT blocks.
        dropout: dropout on the text input, in the blocks, and on the frames before CTC.
        ctc_weight: weight of the CTC loss (0 disables it).
        supcon_weight: weight of the supervised contrastive loss (0 disables it).
        infonce_weight: weight of InfoNCE against a ``"text_aug"`` stream (0 disables it).
        temperature: temperature of both contrastive losses.
        augmented_text: also read a ``text_aug`` role (an augmented transcript stream, e.g. back-
            translations encoded with ``--stream-name``; pick it with ``--text-aug-stream``) and add
            InfoNCE between the fused views of the original and augmented text.
    """

    name: ClassVar[str] = "mmer"
    summary: ClassVar[str] = "MMER (Interspeech 2023): BERT-block cross-modal gated fusion + CTC/SupCon aux losses"
    roles: ClassVar[tuple[str, ...]] = ("audio", "text")
    mixes_layers: ClassVar[bool] = True  # reads its roles through Head.frames
    needs: ClassVar[frozenset[str]] = frozenset({"chars"})
    train_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adamw", "lr": 5e-5, "batch_size": 16, "epochs": 30}

    def __init__(self, dims: dict[str, int], n_classes: int, *, hidden: int = 768, heads: int = 12,
                 ffn_dim: int = 3072, dropout: float = 0.1, ctc_weight: float = 0.1, supcon_weight: float = 0.1,
                 infonce_weight: float = 0.1, temperature: float = 0.07, augmented_text: bool = False) -> None:
        super().__init__()
        missing = [role for role in self.roles if role not in dims]
        if missing:
            raise HeadError(f"mmer needs dims for roles {list(self.roles)}; missing {missing} in {dims}")
        if hidden % heads:
            raise HeadError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        d_audio, d_text = dims["audio"], dims["text"]
        self.ctc_weight, self.supcon_weight, self.infonce_weight = ctc_weight, supcon_weight, infonce_weight
        self.temperature = temperature

        self.dropout = nn.Dropout(dropout)
        self.text_proj = nn.Identity() if d_text == hidden else nn.Linear(d_text, hidden)
        self.text_self = BertBlock(hidden, heads, ffn_dim, dropout)
        self.proj_a1 = nn.Linear(d_audio, hidden)
        self.proj_a2 = nn.Linear(d_audio, hidden)
        self.cross_text_audio = BertBlock(hidden, heads, ffn_dim, dropout)  # q=T, kv=A1
        self.cross_audio_text = BertBlock(hidden, heads, ffn_dim, dropout)  # q=A2, kv=T
        self.cross_text_text = BertBlock(hidden, heads, ffn_dim, dropout)   # q=T, kv=audio-aware text
        self.gate = nn.Linear(2 * hidden, hidden)
        self.downsample = nn.Linear(2 * hidden, hidden)
        # The paper's classifier reads the max-pooled encoder frames themselves (768 for wav2vec2-base).
        self.classifier = nn.Linear(d_audio + hidden, n_classes)
        self.ctc = nn.Linear(hidden, len(CHAR_VOCAB))

    @classmethod
    def required_roles(cls, hyperparameters: dict[str, Any]) -> tuple[str, ...]:
        return cls.roles + (("text_aug",) if hyperparameters.get("augmented_text") else ())

    def _pooled_fusion(self, a1: Tensor, a2: Tensor, audio_mask: Tensor, text: StreamBatch) -> Tensor:
        """The gated fused text-axis sequence, max-pooled.

        Args:
            a1: ``(batch, frames, hidden)`` audio projected for the text-to-audio attention.
            a2: ``(batch, frames, hidden)`` audio projected as queries of the audio-to-text attention.
            audio_mask: ``(batch, frames)`` bool, True on real frames.
            text: token embeddings ``(batch, tokens, d_text)`` and their mask.

        Returns:
            ``(batch, 2 * hidden)``.
        """
        t = self.text_proj(self.dropout(text.x))
        t = self.text_self(t, t, text.mask)
        cross_output = self.cross_text_audio(t, a1, audio_mask)
        cross_txt = self.cross_audio_text(a2, t, text.mask)
        final_txt = self.cross_text_text(t, cross_txt, audio_mask)
        g = torch.sigmoid(self.gate(torch.cat([final_txt, cross_output], -1)))
        fused = torch.cat([final_txt, g * cross_output], -1)
        return masked_max(fused, text.mask)

    def forward(self, batch: Batch) -> HeadOutput:
        """Classify; in training mode also compute the weighted auxiliary losses.

        Args:
            batch: ``streams["audio"]`` ``(batch, frames, d_audio)``, ``streams["text"]``
                ``(batch, tokens, d_text)``, optional ``streams["text_aug"]`` ``(batch, tokens', d_text)``,
                and for CTC ``chars`` ``(batch, max_chars)`` with ``char_lengths`` ``(batch,)``.

        Returns:
            Logits ``(batch, n_classes)``; ``aux_loss`` is a weighted scalar in training mode and
            None in eval mode or when every auxiliary term is off or unavailable.
        """
        audio, text = self.frames(batch, "audio"), self.frames(batch, "text")
        if not self.training and needs_blocks(self, audio, text):  # a long recording: frames a block at a time
            return HeadOutput(evaluate_in_blocks(self, audio, text))
        a1, a2 = self.proj_a1(audio.x), self.proj_a2(audio.x)
        fused = self._pooled_fusion(a1, a2, audio.mask, text)
        features = torch.cat([masked_max(audio.x, audio.mask), self.downsample(fused)], -1)
        logits = self.classifier(features)
        if not self.training:
            return HeadOutput(logits)

        terms: list[Tensor] = []
        # Utterances without a transcript (char length 0) have no CTC target: they add no CTC term.
        has_text = batch.char_lengths > 0 if batch.chars is not None else None
        if self.ctc_weight and has_text is not None and has_text.any():
            log_probs = self.ctc(self.dropout(a1[has_text])).float().log_softmax(-1).transpose(0, 1)  # (frames, b, vocab)
            # zero_infinity: an utterance with fewer frames than characters cannot be aligned.
            ctc = F.ctc_loss(log_probs, batch.chars[has_text], audio.lengths[has_text], batch.char_lengths[has_text],
                             blank=0, zero_infinity=True)
            terms.append(self.ctc_weight * ctc)
        z = F.normalize(fused, dim=-1)
        if self.supcon_weight:
            terms.append(self.supcon_weight * supervised_contrastive_loss(z, batch.y, self.temperature))
        if self.infonce_weight and "text_aug" in batch.streams:
            z_view = F.normalize(self._pooled_fusion(a1, a2, audio.mask, self.frames(batch, "text_aug")), dim=-1)
            terms.append(self.infonce_weight * info_nce_loss(z, z_view, self.temperature))
        return HeadOutput(logits, aux_loss=torch.stack(terms).sum() if terms else None)
