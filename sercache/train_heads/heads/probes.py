"""Standard probes on frozen features: ``linear`` and ``wsum`` (SUPERB / EmoBox / emotion2vec style)."""
from __future__ import annotations

import torch
from torch import nn

from sercache.train_heads.heads import register
from sercache.train_heads.heads.base import Batch, Head, HeadOutput, masked_mean


@register
class LinearProbe(Head):
    """Masked mean pool of the audio stream (and the text stream, with ``with_text``) -> linear.

    Point ``--audio-stream`` at any frame stream (``ssl``, ``mfcc``, ``wavlm_large``...).
    For a scikit-learn logistic regression on pooled statistics, see ``FeatureStore.pooled``.
    """

    name = "linear"
    summary = "masked mean pooling -> linear (one stream, or audio+text concatenated)"
    roles = ("audio",)
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 50, "patience": 8}

    def __init__(self, dims: dict[str, int], n_classes: int, *, with_text: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.with_text = with_text
        width = dims["audio"] + (dims["text"] if with_text else 0)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, n_classes)

    @classmethod
    def required_roles(cls, hyperparameters: dict) -> tuple[str, ...]:
        return ("audio", "text") if hyperparameters.get("with_text") else ("audio",)

    def forward(self, batch: Batch) -> HeadOutput:
        pooled = [masked_mean(batch.streams["audio"].x, batch.streams["audio"].mask)]
        if self.with_text:
            pooled.append(masked_mean(batch.streams["text"].x, batch.streams["text"].mask))
        return HeadOutput(self.classifier(self.dropout(torch.cat(pooled, dim=-1))))


@register
class WeightedSumProbe(Head):
    """Softmax-weighted sum of the stored layers (weights start at zero) -> Linear -> ReLU -> mean -> Linear.

    The standard frozen-SSL baseline (SUPERB's featurizer + EmoBox/emotion2vec downstream). Needs
    a stream with several layers (``sercache extract --layers all``).
    """

    name = "wsum"
    summary = "softmax layer weights (zero-init) -> Linear(d->hidden) -> ReLU -> masked mean -> linear"
    roles = ("audio",)
    multi_layer_roles = ("audio",)
    train_defaults = {"optimizer": "adam", "lr": 5e-4, "batch_size": 32, "epochs": 50, "patience": 8}

    def __init__(self, dims: dict[str, int], n_classes: int, *, n_layers: int = 2, hidden: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(n_layers))
        self.proj = nn.Linear(dims["audio"], hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, n_classes)

    def forward(self, batch: Batch) -> HeadOutput:
        s = batch.streams["audio"]  # x: (batch, layers, frames, dim)
        if s.x.shape[1] != len(self.layer_weights):
            raise ValueError(f"wsum was built for {len(self.layer_weights)} layers, got {s.x.shape[1]}")
        w = self.layer_weights.softmax(0)
        mixed = torch.einsum("l,bltd->btd", w, s.x)
        pooled = masked_mean(torch.relu(self.proj(mixed)), s.mask)
        return HeadOutput(self.classifier(self.dropout(pooled)))

    @property
    def layer_distribution(self) -> list[float]:
        """The learned softmax weight of each stored layer (which layers the probe relies on)."""
        return self.layer_weights.softmax(0).tolist()
