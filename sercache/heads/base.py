"""The contract every head follows, and the helpers they share (masked pooling, attention).

A head is a ``torch.nn.Module`` that

* declares the stream roles it reads (``roles``: ``"audio"``, ``"text"``, ``"mfcc"``), which the
  CLI maps to cache streams (``--audio-stream ssl``, ``--text asr`` -> ``text_asr``...);
* takes the data-derived sizes (``dims`` per role, ``n_classes``) plus every hyperparameter as
  an explicit keyword argument with a default, so ``inspect.signature`` lists them and the
  resolved configuration is serialisable as it stands;
* maps a :class:`Batch` to a :class:`HeadOutput` (logits, optional valence/arousal, optional
  auxiliary loss) with explicit padding masks: padding never changes an unpadded item's output;
* carries its published training defaults in ``train_defaults`` (optimiser, lr, batch size...).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sercache.errors import SercacheError


class HeadError(SercacheError, ValueError):
    """A head's hyperparameters or inputs that it cannot work with (the message names them and the fix)."""


@dataclass
class StreamBatch:
    """One role's padded frames. ``x``: ``(batch, frames, dim)`` (or ``(batch, layers, frames, dim)``
    for multi-layer roles); ``mask``: ``(batch, frames)`` bool, True on real frames."""

    x: Tensor
    mask: Tensor

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(-1)


@dataclass
class Batch:
    """What a head sees.

    Attributes:
        streams: role -> padded frames.
        y: ``(batch,)`` class indices.
        soft: ``(batch, classes)`` soft label distributions (annotator votes), when loaded.
        va: ``(batch, 2)`` valence and arousal scaled to [0, 1] (NaN where unknown), when loaded.
        chars: ``(batch, chars)`` gold-transcript character ids (0 = padding), when loaded.
        char_lengths: ``(batch,)`` their lengths.
        utt_ids: the utterance ids, in batch order.
    """

    streams: dict[str, StreamBatch]
    y: Tensor
    soft: Tensor | None = None
    va: Tensor | None = None
    chars: Tensor | None = None
    char_lengths: Tensor | None = None
    utt_ids: list[str] = field(default_factory=list)

    def to(self, device: torch.device) -> Batch:
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch({k: StreamBatch(mv(s.x), mv(s.mask)) for k, s in self.streams.items()}, mv(self.y),
                     mv(self.soft), mv(self.va), mv(self.chars), mv(self.char_lengths), self.utt_ids)


@dataclass
class HeadOutput:
    logits: Tensor                    # (batch, classes)
    regression: Tensor | None = None  # (batch, 2): valence, arousal in the scaled [0, 1] range
    aux_loss: Tensor | None = None    # already weighted; added to the main loss when training


#: The stream roles of the heads in this package: the stream each reads by default and the help of its train
#: option (--audio-stream...). A head module with a new role declares it the same way (see mmer.py's text_aug);
#: the literal is read without importing torch (sercache.head_catalog).
STREAM_ROLES = {
    "audio": {"default": "ssl", "help": "Stream for the audio role (default ssl). Pooled heads (linear, mlp, svm, "
              "logreg) take several, comma-separated: --audio-stream mfcc,logmel,egemaps."},
    "text": {"default": "text_asr", "help": "Stream for the text role (overrides --text)."},
    "mfcc": {"default": "mfcc", "help": "Stream for the mfcc role (default mfcc)."},
}


#: Training defaults every head may override (keys of :class:`sercache.training.train_config.TrainConfig`).
BASE_TRAIN_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0, "batch_size": 16, "epochs": 30, "patience": 8,
    "schedule": "none", "gamma": 0.95, "min_lr": 1e-6, "grad_clip": 5.0, "mixup_alpha": 0.0,
}


class Head(nn.Module):
    """Base class: subclasses set ``name``, ``roles`` and implement ``forward``."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    roles: ClassVar[tuple[str, ...]] = ("audio",)
    multi_layer_roles: ClassVar[tuple[str, ...]] = ()  # roles loaded with every stored layer
    needs: ClassVar[frozenset[str]] = frozenset()       # extra targets: "soft", "va", "chars"
    regression: ClassVar[bool] = False                  # predicts valence/arousal (reports CCC)
    # Reads utterance statistics, not frames: each role arrives as (batch, 1, dim), and may join
    # several streams (see sercache.training.pooled). Such heads take a ``pooling`` keyword.
    pooled_input: ClassVar[bool] = False
    # Fitted in closed form (scikit-learn) rather than by epochs of gradient steps (see classical.py).
    closed_form: ClassVar[bool] = False
    # The same data gives the same model whatever the seed: `train` runs one seed unless told more.
    deterministic: ClassVar[bool] = False
    train_defaults: ClassVar[dict[str, Any]] = {}
    # Reads every frame role through :meth:`frames`, so ``--layer all`` (or ``2,3,4``) can give it a learned
    # mix of several stored layers (:meth:`mix_layers`). A head that reads ``batch.streams`` itself leaves it off.
    mixes_layers: ClassVar[bool] = False

    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """Every keyword the head takes beyond the data-derived ``dims`` and ``n_classes``."""
        sig = inspect.signature(cls.__init__)
        return {n: p.default for n, p in sig.parameters.items()
                if n not in ("self", "dims", "n_classes") and p.kind == p.KEYWORD_ONLY}

    @classmethod
    def check_hyperparameters(cls, values: dict[str, Any]) -> None:
        """Refuse values of the wrong type or out of range before any fold (not in a worker, mid-run)."""
        defaults = cls.hyperparameters()
        for key, value in values.items():
            rule = _hyperparameter_rule(key, defaults.get(key), value)
            if rule:
                raise HeadError(f"--set {key}={value!r}: {rule} (head {cls.name!r}; its defaults: "
                                + ", ".join(f"{k}={v!r}" for k, v in defaults.items()) + ")")

    @classmethod
    def required_roles(cls, hyperparameters: dict[str, Any]) -> tuple[str, ...]:
        """The roles a head built with these hyperparameters reads (most heads: ``roles``)."""
        return cls.roles

    @classmethod
    def resolved_train_defaults(cls) -> dict[str, Any]:
        return {**BASE_TRAIN_DEFAULTS, **cls.train_defaults}

    @classmethod
    def describe(cls) -> str:
        """What ``sercache heads NAME`` prints: the streams it reads, its hyperparameters, how it trains."""
        reads = (f"  reads: {', '.join(cls.roles)}"
                 + (f" (all stored layers of: {', '.join(cls.multi_layer_roles)})" if cls.multi_layer_roles else "")
                 + (f"; also uses: {', '.join(sorted(cls.needs))}" if cls.needs else "")
                 + ("; --layer all (or 2,3,4): a learned mix of those layers' frames" if cls.mixes_layers else ""))
        return "\n".join([f"{cls.name}: {cls.summary}", reads, "  hyperparameters (--set KEY=VALUE): "
                          + ", ".join(f"{k}={v!r}" for k, v in cls.hyperparameters().items()),
                          f"  {cls.training_description()}"])

    @classmethod
    def training_description(cls) -> str:
        return "training defaults: " + ", ".join(f"{k}={v}" for k, v in cls.resolved_train_defaults().items())

    def forward(self, batch: Batch) -> HeadOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def mix_layers(self, counts: dict[str, int]) -> None:
        """Read each of these roles as a learned softmax-weighted sum of its ``counts[role]`` stored layers.

        The weights start at zero (an equal mix) and train with the head, as ``wsum``'s and SUPERB's
        featurizer do: the mix replaces choosing one layer by hand. Called right after construction, so
        a checkpoint rebuilds the same parameters; weights left at their zero start use no random numbers,
        so the head's own initial weights are those of an unmixed run with the same seed.
        """
        if not self.mixes_layers:
            raise HeadError(f"head {self.name!r} reads one stored layer per role; give --layer one layer number")
        self.layer_mix = nn.ParameterDict({role: nn.Parameter(torch.zeros(n)) for role, n in counts.items()})

    def frames(self, batch: Batch, role: str) -> StreamBatch:
        """``role``'s frames as ``(batch, frames, dim)``: the stream itself, or its layers mixed (:meth:`mix_layers`)."""
        stream = batch.streams[role]
        mix = self._layer_mix()
        if mix is None or role not in mix:
            return stream
        weights = mix[role]
        if stream.x.dim() != 4 or stream.x.shape[1] != len(weights):
            raise HeadError(f"{self.name} was built to mix {len(weights)} layers of {role!r}, and the batch gives "
                            f"{tuple(stream.x.shape)}; the features must come from the run's streams and layers")
        return StreamBatch(mix_of_layers(weights, stream.x), stream.mask)

    def layer_weights_of(self) -> dict[str, list[float]]:
        """The learned share of each mixed layer, per role (empty when no role is mixed)."""
        mix = self._layer_mix()
        return {} if mix is None else {r: w.softmax(0).tolist() for r, w in mix.items()}

    def _layer_mix(self) -> nn.ParameterDict | None:
        # a submodule set after construction lives in _modules only (no class attribute may shadow it)
        return self._modules.get("layer_mix")  # type: ignore[return-value]

    def loss(self, out: HeadOutput, batch: Batch) -> Tensor:
        """Cross-entropy on the labels, plus any auxiliary loss the head computed."""
        loss = F.cross_entropy(out.logits, batch.y)
        return loss if out.aux_loss is None else loss + out.aux_loss

    def training_step(self, batch: Batch) -> Tensor:
        """One batch's loss in training mode (heads with input mixing, e.g. mixup, override this)."""
        return self.loss(self(batch), batch)

    def predict(self, batch: Batch) -> HeadOutput:
        """Evaluation-time output (defaults to ``forward``)."""
        return self(batch)


# ----------------------------------------------------------------------------- shared pieces
class PooledHead(Head):
    """Public base of the heads that read one vector per utterance and role (``linear``, ``mlp``, ``svm``...).

    The head owns its pooling: a subclass takes ``pooling`` (one of :attr:`POOLINGS`) and ``with_text`` as
    keywords and passes them here; the data loader asks the head which statistics stored at extraction make
    an utterance's vector (:meth:`pooling_of`, :meth:`statistics`; :mod:`sercache.training.pooled`). Batches
    then arrive as ``(batch, 1, dim)`` per role; given frames instead, :meth:`pooled` averages them, so the head
    also runs on any frame batch.
    """

    roles = ("audio",)
    pooled_input = True
    #: pooling -> the per-utterance statistics (``pooled_<name>`` fields) joined, in order, per layer.
    POOLINGS: ClassVar[dict[str, tuple[str, ...]]] = {"meanstd": ("mean", "std"), "mean": ("mean",)}

    def __init__(self, dims: dict[str, int], *, with_text: bool, pooling: str = "meanstd") -> None:
        super().__init__()
        self.with_text = with_text
        self.pooling = pooling
        self.width = dims["audio"] + (dims["text"] if with_text else 0)

    @classmethod
    def required_roles(cls, hyperparameters: dict[str, Any]) -> tuple[str, ...]:
        return ("audio", "text") if hyperparameters.get("with_text") else ("audio",)

    @classmethod
    def pooling_of(cls, hyperparameters: dict[str, Any]) -> str:
        """The pooling these hyperparameters choose (the head's own default where they name none)."""
        return hyperparameters.get("pooling", cls.hyperparameters().get("pooling", "meanstd"))

    @classmethod
    def statistics(cls, pooling: str) -> tuple[str, ...]:
        """The stored statistics an utterance's vector joins for ``pooling`` (``("mean", "std")``...)."""
        return cls.POOLINGS[pooling]

    def pooled(self, batch: Batch) -> Tensor:
        """``(batch, width)``: each read role's vector (or the masked mean of its frames), concatenated."""
        roles = ("audio", "text") if self.with_text else ("audio",)
        return torch.cat([masked_mean(batch.streams[r].x, batch.streams[r].mask) for r in roles], dim=-1)


def mix_of_layers(weights: Tensor, x: Tensor) -> Tensor:
    """``(batch, layers, frames, dim) -> (batch, frames, dim)``: the layers summed with ``softmax(weights)``."""
    return torch.einsum("l,bltd->btd", weights.softmax(0).to(x.dtype), x)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean over frames ``(batch, frames, dim) -> (batch, dim)``, ignoring padding."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Max over real frames ``(batch, frames, dim) -> (batch, dim)``."""
    return x.masked_fill(~mask.unsqueeze(-1), torch.finfo(x.dtype).min).amax(1)


def attend(query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None, scale: float | None = None) -> Tensor:
    """Scaled dot-product attention ``softmax(q k^T / sqrt(d)) v`` with a key padding mask.

    Args:
        query: ``(batch, tq, d)``; key: ``(batch, tk, d)``; value: ``(batch, tk, dv)``.
        key_mask: ``(batch, tk)`` bool, True on real keys (None: attend to every key).
    """
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask.unsqueeze(1), torch.finfo(scores.dtype).min)
    return torch.matmul(scores.softmax(-1), value)


#: Attention scores (query rows x keys, over the batch) :func:`attend_rows` computes at once: 2**24 float32
#: scores are 64 MB. A 2-hour recording is 360 000 frames at 50 Hz: its frames x frames scores would be 518 GB,
#: and 512 text tokens x its frames 737 MB per copy (the mask and the softmax make two more).
EVAL_SCORE_ELEMENTS = 1 << 24


def attend_rows(query: Tensor, key: Tensor, value: Tensor, key_mask: Tensor | None,
                scale: float | None = None) -> Tensor:
    """:func:`attend`, a block of query rows at a time: at most :data:`EVAL_SCORE_ELEMENTS` scores at once (one
    row when a row alone has more).

    Each query row's softmax reads only its own scores, so the result is the whole product's, row for row.
    For evaluation of long inputs (``sercache predict`` of a recording); training calls :func:`attend`.
    """
    rows = max(1, EVAL_SCORE_ELEMENTS // max(1, query.shape[0] * key.shape[1]))
    if query.shape[1] <= rows:
        return attend(query, key, value, key_mask, scale)
    out = query.new_empty(*query.shape[:-1], value.shape[-1])
    for start in range(0, query.shape[1], rows):
        out[:, start:start + rows] = attend(query[:, start:start + rows], key, value, key_mask, scale)
    return out


#: Characters of gold transcripts for CTC targets (MMER's auxiliary loss). Id 0 is the CTC blank
#: (and the padding of ``Batch.chars``). Other alphabets are spelled with these letters (ä -> AE, é -> E) and
#: what remains outside is dropped: see sercache.training.targets.transcript_chars.
CHAR_VOCAB = ("<blank>", " ", "'", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


_COUNTS = ("hidden", "heads", "ffn_dim", "fusion_dim", "mixer_dim", "depth", "patch_size", "attn_hidden", "ff_mult",
           "n_layers", "max_iter", "segment_frames", "hop_frames", "input_proj")


def _hyperparameter_rule(key: str, default: Any, value: Any) -> str:
    """What is wrong with ``value`` for ``key`` ("" when nothing), from the default's type and the name."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool) and not isinstance(value, bool):
        return "give true or false"
    if value is None:
        return ""
    if isinstance(default, (int, float)) and not isinstance(default, bool) and not number:
        return "give a number"
    if "dropout" in key and not (number and 0 <= value < 1):
        return "a dropout probability is at least 0 and below 1"
    if key in _COUNTS and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return "give a whole number of at least 1"
    if key.endswith("_seconds") or key in ("frame_rate", "temperature"):
        if not (number and value > 0):
            return "give a positive number"
    weight = key.endswith("_weight") and key != "class_weight"  # class_weight: "balanced" or None
    if weight or key in ("mixup_alpha", "focal_gamma", "token_expansion", "channel_expansion"):
        if not (number and value >= 0):
            return "give a number of at least 0"
    if key == "C":
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in values):
            return "give a positive number, or a list of them (a grid chosen on validation)"
    return ""
