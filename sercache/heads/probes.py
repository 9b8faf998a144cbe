"""Standard probes on frozen features: ``linear`` and ``mlp`` on utterance statistics, ``wsum`` on frames
(SUPERB / EmoBox / emotion2vec style)."""
from __future__ import annotations

import torch
from torch import nn

from sercache.heads import register
from sercache.heads.base import Batch, Head, HeadError, HeadOutput, PooledHead, masked_mean, mix_of_layers

#: Training defaults of the pooled probes: an epoch is a few milliseconds (see benchmarks/small_heads.py),
#: so they may run long and stop on validation UA; weight decay because their inputs can be
#: thousands of statistics for a few hundred utterances. Refit on training + validation: measured
#: better inside the training speakers of every EmoDB fold (benchmarks/selection_study.py).
POOLED_TRAIN_DEFAULTS = {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64, "epochs": 200,
                         "patience": 20, "refit": True}


_PooledProbe = PooledHead  # the name older code imports; new pooled heads subclass PooledHead


@register
class LinearProbe(PooledHead):
    """Utterance statistics of one or several streams -> linear.

    Point ``--audio-stream`` at any stream, or several joined by commas (``mfcc,logmel,egemaps``):
    each contributes its mean+std over time of the chosen layer (``pooling="mean"`` for the mean
    only), or its functionals for openSMILE streams. ``--layer 2,3,4`` or ``all`` concatenate several
    layers' statistics; ``--layer select`` chooses them per fold on validation (training/roles.py).
    ``with_text`` adds the text stream's statistics.

    Args:
        pooling: ``"meanstd"`` or ``"mean"`` (how frame streams are summarised per utterance).
        with_text: also read the text role.
        dropout: on the input statistics.
    """

    name = "linear"
    summary = "utterance statistics (mean+std, or openSMILE functionals) of one or more streams -> linear"
    train_defaults = POOLED_TRAIN_DEFAULTS

    def __init__(self, dims: dict[str, int], n_classes: int, *, pooling: str = "meanstd", with_text: bool = False,
                 dropout: float = 0.0) -> None:
        super().__init__(dims, with_text=with_text, pooling=pooling)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.width, n_classes)

    def forward(self, batch: Batch) -> HeadOutput:
        return HeadOutput(self.classifier(self.dropout(self.pooled(batch))))


@register
class MLPProbe(PooledHead):
    """Utterance statistics (as ``linear``) -> Linear(dim -> hidden) -> ReLU -> dropout -> linear.

    Args:
        pooling: ``"meanstd"`` or ``"mean"``.
        hidden: hidden units.
        dropout: before the classifier (and on the input, ``input_dropout``).
        input_dropout: dropout on the input statistics.
        with_text: also read the text role.
    """

    name = "mlp"
    summary = "utterance statistics of one or more streams -> one hidden ReLU layer -> linear"
    train_defaults = POOLED_TRAIN_DEFAULTS

    def __init__(self, dims: dict[str, int], n_classes: int, *, pooling: str = "meanstd", hidden: int = 256,
                 dropout: float = 0.3, input_dropout: float = 0.1, with_text: bool = False) -> None:
        super().__init__(dims, with_text=with_text, pooling=pooling)
        self.net = nn.Sequential(nn.Dropout(input_dropout), nn.Linear(self.width, hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, batch: Batch) -> HeadOutput:
        return HeadOutput(self.net(self.pooled(batch)))


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
            raise HeadError(f"wsum was built for {len(self.layer_weights)} layers, got {s.x.shape[1]}")
        pooled = masked_mean(torch.relu(self.proj(mix_of_layers(self.layer_weights, s.x))), s.mask)
        return HeadOutput(self.classifier(self.dropout(pooled)))

    @property
    def layer_distribution(self) -> list[float]:
        """The learned softmax weight of each stored layer (which layers the probe relies on)."""
        return self.layer_weights.softmax(0).tolist()
