"""``tmn``: Tensor Mixer Network with Peaking Labels (KIISE 2023).

What the paper did (public code: 1pha/MulitmodalERC-TensorMixerNetwork, KEMDy19+20, 7 classes):

* fine-tuned a Korean wav2vec2-large and a Korean BERT/RoBERTa end to end; the audio frames are
  projected to 256 and mean-pooled over real frames, the text [CLS] state is projected to 256;
* fused the two 256-d vectors by their outer product (tensor fusion) into a 1x256x256 "image"
  and fed it to an MLP-Mixer (patch 16, width 512, depth 12) whose output holds the class logits
  followed by valence and arousal;
* trained with ``0.7 * focal(gamma=2) + 0.3 * MSE(valence, arousal)``, the classification targets
  being the annotators' vote distributions sharpened by PeakL (:func:`peak_labels`).

What sercache reproduces: the same projections, fusion, mixer, multi-task output and loss, on
cached (frozen) encoder features. Differences:

* the encoders are frozen, so only the projections and the mixer train;
* the original focal loss is applied to the batch-mean cross-entropy (``(1 - e^-CE)^gamma * CE``
  with CE already averaged), which modulates the whole batch by one factor; the default here is
  the per-sample focal loss, and ``faithful_focal=True`` reproduces the original;
* the valence/arousal MSE skips unknown (NaN) targets instead of requiring every label;
* PeakL falls back to the unchanged vote distribution where the original divides 0 by 0
  (rows that are uniform after the peaking step), and uses an exact ``0 * ln 0 = 0`` where the
  original adds machine epsilon inside the log.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sercache.heads import register
from sercache.heads.base import Batch, Head, HeadError, HeadOutput, masked_mean

__all__ = ["TensorMixerHead", "focal_loss", "masked_mse", "peak_labels"]


def peak_labels(soft: Tensor) -> Tensor:
    """PeakL: sharpen annotator vote distributions in proportion to their uncertainty.

    For each row ``y`` over ``K`` classes::

        r  = tanh(-sum_k y_k ln y_k)          # 0 * ln 0 = 0; r = 0 for a one-hot row
        y' = ReLU((y - r / K) / (1 - r))      # r <= tanh(ln K) < 1, so no division by 0
        y' = (y' - min y') / sum(y' - min y')

    The published repository's README writes the shorter ``max(0, y - r/K)``; that omits the
    ``1 / (1 - r)`` rescaling and the min-subtraction/renormalisation that its code applies, and
    this function follows the code.

    Edge cases: a one-hot row comes back unchanged. A row whose entries are all equal after the
    ReLU (e.g. a uniform vote) sums to 0 after the min subtraction; the original then produces
    NaN (0/0). Here such a row falls back to the original distribution ``y``: with no peak to
    sharpen, the annotators' votes are the most honest target.

    Args:
        soft: ``(batch, classes)`` non-negative rows summing to 1.

    Returns:
        ``(batch, classes)`` peaked distributions, rows summing to 1.
    """
    n_classes = soft.shape[-1]
    entropy = -torch.xlogy(soft, soft).sum(-1, keepdim=True)
    r = torch.tanh(entropy)
    peaked = F.relu((soft - r / n_classes) / (1.0 - r))
    peaked = peaked - peaked.amin(-1, keepdim=True)
    total = peaked.sum(-1, keepdim=True)
    flat = total <= 0
    return torch.where(flat, soft, peaked / torch.where(flat, torch.ones_like(total), total))


def focal_loss(logits: Tensor, targets: Tensor, gamma: float = 2.0, faithful: bool = False) -> Tensor:
    """Focal loss against (soft) target distributions.

    Per-sample (default): ``mean_i sum_k -t_ik (1 - p_ik)^gamma log p_ik``, which with one-hot
    targets is the usual focal loss and with ``gamma=0`` is cross-entropy.

    Faithful (``faithful=True``): the published implementation, which first averages the
    cross-entropy over the batch and then applies the focal factor once:
    ``(1 - exp(-CE))^gamma * CE``.

    Args:
        logits: ``(batch, classes)``.
        targets: ``(batch, classes)`` target distributions (one-hot or soft).
        gamma: focusing parameter.
        faithful: reproduce the batch-level original.

    Returns:
        Scalar loss.
    """
    log_p = logits.log_softmax(-1)
    if faithful:
        ce = -(targets * log_p).sum(-1).mean()
        return (1.0 - torch.exp(-ce)) ** gamma * ce
    return -(targets * (1.0 - log_p.exp()) ** gamma * log_p).sum(-1).mean()


def masked_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the known (non-NaN) targets only.

    Args:
        pred: ``(batch, 2)`` predicted valence and arousal.
        target: ``(batch, 2)`` targets, NaN where unknown.

    Returns:
        Scalar loss; 0 when no target is known (so a batch without dimensional labels trains
        the classifier alone).
    """
    known = ~torch.isnan(target)
    if not known.any():
        return pred.new_zeros(())
    return F.mse_loss(pred[known], target[known].to(pred.dtype))


class _PreNormResidual(nn.Module):
    """``x + fn(LayerNorm(x))`` over the last dimension."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return x + self.fn(self.norm(x))


class _Transpose(nn.Module):
    """Swap the patch and channel axes ``(batch, n, d) <-> (batch, d, n)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)


def _feed_forward(dim: int, expansion: float, dropout: float) -> nn.Sequential:
    """``Linear(dim -> dim*expansion) -> GELU -> Dropout -> Linear(back to dim) -> Dropout``."""
    inner = int(dim * expansion)
    return nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(inner, dim), nn.Dropout(dropout))


@register
class TensorMixerHead(Head):
    """Outer-product fusion of pooled audio and text [CLS], classified and regressed by an MLP-Mixer.

    Args:
        dims: feature size per role: ``{"audio": d_audio, "text": d_text}``.
        n_classes: number of emotion classes ``K``; the mixer outputs ``K + 2`` values.
        fusion_dim: size ``F`` of each projected modality; the fused image is ``F x F``.
        patch_size: side ``P`` of the square mixer patches (``F`` must be a multiple of it).
        mixer_dim: mixer channel width (each ``P*P`` patch is embedded to this size).
        depth: number of mixer blocks.
        token_expansion: hidden size of the token-mixing MLP, as a multiple of the patch count.
        channel_expansion: hidden size of the channel-mixing MLP, as a multiple of ``mixer_dim``.
        dropout: dropout inside both mixing MLPs.
        peakl: train on PeakL-sharpened vote distributions when ``batch.soft`` is loaded
            (else on one-hot labels).
        focal_gamma: focal loss focusing parameter.
        faithful_focal: apply the focal factor to the batch-mean cross-entropy, as published.
        cls_weight: weight of the classification (focal) loss.
        reg_weight: weight of the valence/arousal MSE.
    """

    name: ClassVar[str] = "tmn"
    summary: ClassVar[str] = "Tensor Mixer Network: audio x text [CLS] outer product -> MLP-Mixer, PeakL + V/A"
    roles: ClassVar[tuple[str, ...]] = ("audio", "text")
    mixes_layers: ClassVar[bool] = True  # reads its roles through Head.frames
    needs: ClassVar[frozenset[str]] = frozenset({"soft", "va"})
    regression: ClassVar[bool] = True
    # Published: AdamW, mixer lr 1e-4 (encoders 1e-5, frozen here), weight decay 1e-6, batch 8,
    # gradient clipping 1. Not carried over: 200 epochs with patience 20 and cosine warm
    # restarts (T_0 500 steps), which were sized for end-to-end fine-tuning.
    train_defaults: ClassVar[dict[str, Any]] = {
        "optimizer": "adamw", "lr": 1e-4, "weight_decay": 1e-6, "batch_size": 8, "epochs": 50,
        "grad_clip": 1.0,
    }

    def __init__(self, dims: dict[str, int], n_classes: int, *, fusion_dim: int = 256, patch_size: int = 16,
                 mixer_dim: int = 512, depth: int = 12, token_expansion: float = 4.0,
                 channel_expansion: float = 0.5, dropout: float = 0.0, peakl: bool = True,
                 focal_gamma: float = 2.0, faithful_focal: bool = False, cls_weight: float = 0.7,
                 reg_weight: float = 0.3) -> None:
        super().__init__()
        if fusion_dim % patch_size:
            raise HeadError(f"fusion_dim must be a multiple of patch_size, got fusion_dim={fusion_dim}, "
                            f"patch_size={patch_size}")
        self.n_classes = n_classes
        self.patch_size = patch_size
        self.peakl = peakl
        self.focal_gamma = focal_gamma
        self.faithful_focal = faithful_focal
        self.cls_weight = cls_weight
        self.reg_weight = reg_weight

        self.audio_proj = nn.Linear(dims["audio"], fusion_dim)
        self.text_proj = nn.Linear(dims["text"], fusion_dim)
        n_patches = (fusion_dim // patch_size) ** 2
        self.patch_embed = nn.Linear(patch_size * patch_size, mixer_dim)
        # Token mixing mixes across patches per channel: a Linear on the patch axis (the original's
        # kernel-1 Conv1d over patches as channels, with the same parameters).
        self.blocks = nn.Sequential(*[
            nn.Sequential(
                _PreNormResidual(mixer_dim, nn.Sequential(
                    _Transpose(), _feed_forward(n_patches, token_expansion, dropout), _Transpose())),
                _PreNormResidual(mixer_dim, _feed_forward(mixer_dim, channel_expansion, dropout)),
            ) for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(mixer_dim)
        self.out = nn.Linear(mixer_dim, n_classes + 2)

    def _patches(self, image: Tensor) -> Tensor:
        """``(batch, F, F) -> (batch, (F/P)^2, P*P)``, patches in row-major order, each flattened
        row-major (the original's ``b c (h p1) (w p2) -> b (h w) (p1 p2 c)`` with one channel)."""
        b, f, _ = image.shape
        n, p = f // self.patch_size, self.patch_size
        return image.reshape(b, n, p, n, p).permute(0, 1, 3, 2, 4).reshape(b, n * n, p * p)

    def forward(self, batch: Batch) -> HeadOutput:
        """Audio ``(batch, frames, d_audio)`` and text ``(batch, tokens, d_text)`` -> logits
        ``(batch, K)`` and valence/arousal ``(batch, 2)``."""
        audio, text = self.frames(batch, "audio"), self.frames(batch, "text")
        pooled_audio = masked_mean(self.audio_proj(audio.x), audio.mask)  # (batch, F)
        cls_text = self.text_proj(text.x[:, 0])                           # (batch, F)
        image = pooled_audio.unsqueeze(2) * cls_text.unsqueeze(1)        # (batch, F, F): a_i * t_j
        tokens = self.blocks(self.patch_embed(self._patches(image)))     # (batch, patches, mixer_dim)
        out = self.out(self.norm(tokens).mean(1))                        # (batch, K + 2)
        return HeadOutput(logits=out[:, :self.n_classes], regression=out[:, self.n_classes:])

    def loss(self, out: HeadOutput, batch: Batch) -> Tensor:
        """``cls_weight * focal + reg_weight * MSE`` (the MSE over known valence/arousal only)."""
        if self.peakl and batch.soft is not None:
            targets = peak_labels(batch.soft.to(out.logits.dtype))
        else:
            targets = F.one_hot(batch.y, self.n_classes).to(out.logits.dtype)
        loss = self.cls_weight * focal_loss(out.logits, targets, self.focal_gamma, self.faithful_focal)
        if batch.va is not None:
            loss = loss + self.reg_weight * masked_mse(out.regression, batch.va)
        return loss
