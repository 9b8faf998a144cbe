"""GLAM (GLobal-Aware Multi-scale, Zhu & Li, ICASSP 2022) and its two CNN baselines, APCNN and MHCNN.

What the paper did: 26 MFCCs (librosa defaults, 16 kHz) of 1.8 s audio segments taken every 0.2 s
(1.6 s overlap), so each segment is a ``(1, 26, 57)`` image. A multi-scale residual CNN
(parallel 3x3 and 5x5 convolutions with shortcuts) feeds a one-layer gMLP that treats the 128
channels as the sequence axis (the "global-aware fusion"), then a linear classifier. Every segment
carries its utterance's label during training (Adam 1e-3, weight decay 1e-6, batch 32, 50 epochs,
ExponentialLR(0.95) down to 1e-6, mixup with alpha 0.5); an utterance's prediction is the mean of
its segments' logits. Baselines from the same code: APCNN (CNN + attention pooling) and MHCNN
(CNN + 4-head 1x1-conv attention + global average pooling).

What we reproduce: the three networks layer for layer (904,078 / 93,573 / 155,636 parameters for a
26x57 input and 4 classes), and each reference's training recipe as the default:

* GLAM: 1.8 s segments every 0.2 s, Adam 1e-3 (weight decay 1e-6), batches of 32 segments,
  ExponentialLR(0.95), mixup 0.5 on segments and one-hot labels, MFCCs not z-scored;
* MHCNN: 2 s segments every 1 s, no mixup, StepLR(10, 0.1) (Adam 1e-3, batches of 32 segments);
* APCNN: 2 s segments every 1 s, SGD lr 0.05 (momentum 0.9, Nesterov, weight decay 1e-4),
  batches of 128 segments, no mixup;

and utterance logits as the mean of segment logits. Segment lengths and hops are in seconds,
turned into frames with the input stream's frame rate (set by ``sercache train``).

Where we differ:

* segments are windows of the cached MFCC frame stream (``segment_frames`` frames every
  ``hop_frames``), not MFCCs recomputed on cut waveforms, so the frames at segment edges come from
  the whole-utterance analysis rather than librosa's centre padding of each cut;
* every utterance is kept: shorter ones are zero-padded to one segment (the original dropped them)
  and the last window is aligned to the utterance's end so no frame is lost (the original dropped
  the tail);
* the hop is fractional in frames (0.2 s = 6.25 MFCC frames): each window starts at the nearest
  frame to ``k x hop``, so the mean hop is exact;
* APCNN's paper fed spectrograms; MFCC stays its default input here because a spectrogram
  window costs ~40x more on a CPU (``benchmarks/glam_step.py``); ``--mfcc-stream spectrogram``
  (after ``sercache extract --streams spectrogram``) gives the paper's input;
* ``input_proj`` optionally maps each frame to a smaller size first, so the CNNs also run on SSL
  frames (the design's ``input_stream`` use);
* the original picked its best epoch on the test split; model selection on validation only is
  the trainer's business.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sercache.heads import register
from sercache.heads.base import HeadError
from sercache.heads.segmented import (
    APCNN_TRAIN_DEFAULTS,
    GLAM_TRAIN_DEFAULTS,
    MFCC_FRAME_RATE,
    MHCNN_TRAIN_DEFAULTS,
    SegmentHead,
    segment_windows,
)

__all__ = ["GLAM_TRAIN_DEFAULTS", "APCNNHead", "GLAMHead", "MHCNNHead", "segment_windows"]


def conv_bn_relu(c_in: int, c_out: int, kernel: int | tuple[int, int],
                 padding: int | tuple[int, int]) -> nn.Sequential:
    """Conv2d -> BatchNorm2d -> ReLU, the unit every network here is built from."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.BatchNorm2d(c_out), nn.ReLU())


# ----------------------------------------------------------------------------- GLAM
class ResMultiConv(nn.Module):
    """Multi-scale residual block: ``[conv3x3(x) + x ; conv5x5(x) + x]`` -> BN -> ReLU.

    Maps ``(N, C, H, W) -> (N, 2C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv5 = nn.Conv2d(channels, channels, 5, padding=2)
        self.bn = nn.BatchNorm2d(2 * channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(torch.cat((self.conv3(x) + x, self.conv5(x) + x), 1)))


class SpatialGatingUnit(nn.Module):
    """gMLP's gate: ``u * act(W · LayerNorm(v) + b)``, ``W`` mixing along the sequence axis.

    Maps ``(N, seq_len, 2d) -> (N, seq_len, d)``. ``W`` starts near 0 and ``b`` at 1 so the unit
    starts close to the identity on ``u`` (the gMLP paper's initialisation).
    """

    def __init__(self, dim: int, seq_len: int, act: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim // 2)
        self.proj = nn.Conv1d(seq_len, seq_len, 1)  # a Linear over the sequence axis
        eps = 1e-3 / seq_len
        nn.init.uniform_(self.proj.weight, -eps, eps)
        nn.init.ones_(self.proj.bias)
        self.act = act

    def forward(self, x: Tensor) -> Tensor:
        u, v = x.chunk(2, dim=-1)
        return u * self.act(self.proj(self.norm(v)))


class GMLPBlock(nn.Module):
    """One pre-norm residual gMLP block: ``x + W_out(SGU(GELU(W_in(LayerNorm(x)))))``.

    Maps ``(N, seq_len, dim) -> (N, seq_len, dim)``.
    """

    def __init__(self, dim: int, seq_len: int, ff_mult: int, act: nn.Module) -> None:
        super().__init__()
        hidden = dim * ff_mult
        self.norm = nn.LayerNorm(dim)
        self.proj_in = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.sgu = SpatialGatingUnit(hidden, seq_len, act)
        self.proj_out = nn.Linear(hidden // 2, dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.proj_out(self.sgu(self.proj_in(self.norm(x))))


_GATE_ACTS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "identity": nn.Identity}


class GLAMNet(nn.Module):
    """GLAM on one segment image: ``(N, 1, height, width) -> (N, n_classes)``.

    For a 26x57 input: stem (16, 52, 57) -> ResMultiConv (32, 52, 57) -> pool (32, 26, 28) ->
    ResMultiConv (64, 26, 28) -> pool (64, 13, 14) -> ResMultiConv (128, 13, 14) -> conv5
    (128, 13, 14) -> gMLP over (128, 182) -> ReLU -> Linear(23296 -> n_classes).
    """

    def __init__(self, height: int, width: int, n_classes: int, *, ff_mult: int, gmlp_act: str,
                 dropout: float) -> None:
        super().__init__()
        self.conv1a = conv_bn_relu(1, 16, (3, 1), (1, 0))
        self.conv1b = conv_bn_relu(1, 16, (1, 3), (0, 1))
        self.body = nn.Sequential(
            ResMultiConv(16), nn.MaxPool2d(2), ResMultiConv(32), nn.MaxPool2d(2), ResMultiConv(64),
            conv_bn_relu(128, 128, 5, 2),
        )
        # The stem doubles the height (concatenation along frequency); each 2x2 max-pool floors
        # both axes. Computed rather than traced so BatchNorm statistics stay untouched.
        spatial = ((2 * height) // 4) * (width // 4)
        if spatial == 0:
            raise HeadError(f"a {height}x{width} segment is too small for GLAM (needs height >= 2, width >= 4)")
        if gmlp_act not in _GATE_ACTS:
            raise HeadError(f"gmlp_act must be one of {sorted(_GATE_ACTS)}, not {gmlp_act!r}")
        self.gmlp = GMLPBlock(spatial, seq_len=128, ff_mult=ff_mult, act=_GATE_ACTS[gmlp_act]())
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(128 * spatial, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat((self.conv1a(x), self.conv1b(x)), 2)   # concatenate along frequency
        x = self.body(x).flatten(2)                           # (N, 128, h*w): channels as sequence
        x = F.relu(self.gmlp(x)).flatten(1)
        return self.fc(self.dropout(x))


@register
class GLAMHead(SegmentHead):
    """GLAM: multi-scale residual CNN + one-layer gMLP over channels, on overlapping MFCC segments.

    Args:
        dims: ``dims["mfcc"]``, the frame dim (26 MFCCs in the paper).
        n_classes: number of emotion classes.
        segment_seconds: segment length (1.8 s: 57 frames of the MFCC stream).
        hop_seconds: hop between segments (0.2 s, i.e. 1.6 s overlap).
        frame_rate: frames per second of the input stream (``sercache train`` sets it from the stream).
        segment_frames, hop_frames: give the window in frames instead (override the seconds).
        input_proj: optional per-frame ``Linear(dim -> input_proj)`` before segmenting (for SSL
            frames); None uses the frames as they are.
        mixup_alpha: Beta(alpha, alpha) mixup on segments in ``training_step``; 0 disables.
        ff_mult: gMLP expansion (hidden = ff_mult x spatial size; 4 in the original).
        gmlp_act: activation of the spatial gate, ``"tanh"`` (original) or ``"identity"``.
        dropout: dropout before the classifier (the original defines 0.5 but never applies it).
    """

    name: ClassVar[str] = "glam"
    summary: ClassVar[str] = "GLAM (ICASSP 2022): multi-scale CNN + gMLP global-aware fusion on MFCC segments"

    def __init__(self, dims: dict[str, int], n_classes: int, *, segment_seconds: float = 1.8, hop_seconds: float = 0.2,
                 frame_rate: float = MFCC_FRAME_RATE, segment_frames: int | None = None, hop_frames: float | None = None,
                 input_proj: int | None = None, mixup_alpha: float = 0.5, ff_mult: int = 4,
                 gmlp_act: str = "tanh", dropout: float = 0.0) -> None:
        super().__init__(dims, n_classes, segment_seconds=segment_seconds, hop_seconds=hop_seconds,
                         frame_rate=frame_rate, segment_frames=segment_frames, hop_frames=hop_frames,
                         input_proj=input_proj, mixup_alpha=mixup_alpha)
        self.net = GLAMNet(self.height, self.segment_frames, n_classes, ff_mult=ff_mult, gmlp_act=gmlp_act,
                           dropout=dropout)


# ----------------------------------------------------------------------------- baselines
class AttentionCNNBody(nn.Module):
    """The baselines' shared CNN: ``(N, 1, height, width) -> (N, 80, (height-1)//4, (width-1)//4)``.

    Stem: Conv2d(1->8, (10,2), pad (4,0)) and Conv2d(1->8, (2,8), pad (0,3)), each BN-ReLU,
    concatenated on channels; then 3x3 convs 16->32 (pool) ->48 (pool) ->64 ->80, each BN-ReLU.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1a = conv_bn_relu(1, 8, (10, 2), (4, 0))
        self.conv1b = conv_bn_relu(1, 8, (2, 8), (0, 3))
        self.body = nn.Sequential(
            conv_bn_relu(16, 32, 3, 1), nn.MaxPool2d(2), conv_bn_relu(32, 48, 3, 1), nn.MaxPool2d(2),
            conv_bn_relu(48, 64, 3, 1), conv_bn_relu(64, 80, 3, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(torch.cat((self.conv1a(x), self.conv1b(x)), 1))


def _check_baseline_size(height: int, width: int) -> None:
    """Fail at construction, not at the first batch, when two 2x2 pools would leave nothing."""
    if (height - 1) // 4 < 1 or (width - 1) // 4 < 1:
        raise HeadError(f"a {height}x{width} segment is too small for the baseline CNN (needs >= 5x5)")


class APCNNNet(nn.Module):
    """CNN + attention pooling: ``(N, 1, height, width) -> (N, n_classes)``.

    A top-down 1x1 conv gives one map per class, softmax-normalised across classes at each
    position; it weights a bottom-up 1x1 conv map, and the product is averaged over (H, W).
    """

    def __init__(self, n_classes: int, *, dropout: float) -> None:
        super().__init__()
        self.cnn = AttentionCNNBody()
        self.dropout = nn.Dropout(dropout)
        self.top_down = nn.Conv2d(80, n_classes, 1)
        self.bottom_up = nn.Conv2d(80, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.dropout(self.cnn(x))
        return (self.top_down(x).softmax(1) * self.bottom_up(x)).mean((2, 3))


class MHCNNNet(nn.Module):
    """CNN + multi-head 1x1-conv attention: ``(N, 1, height, width) -> (N, n_classes)``.

    Per head, ``softmax_channels(Q ⊙ K) ⊙ V`` with Q/K/V 1x1 convs 80->attn_hidden; heads are
    concatenated along the height, then ReLU, global average pooling and ``Linear(attn_hidden -> C)``.
    """

    def __init__(self, n_classes: int, *, heads: int, attn_hidden: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attn_hidden = attn_hidden
        self.cnn = AttentionCNNBody()
        # One conv holds every head's Q, K and V: the same parameters as 3 x heads separate 1x1 convs.
        self.qkv = nn.Conv2d(80, 3 * heads * attn_hidden, 1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(attn_hidden, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cnn(x)
        n, _, h, w = x.shape
        q, k, v = self.qkv(x).view(n, 3, self.heads, self.attn_hidden, h, w).unbind(1)
        attn = (q * k).softmax(2) * v                       # (N, heads, attn_hidden, H, W)
        # Global average pooling of the heads' concatenation along height = mean over heads and (H, W).
        pooled = F.relu(attn).mean((1, 3, 4))
        return self.fc(self.dropout(pooled))


@register
class APCNNHead(SegmentHead):
    """APCNN baseline: CNN + attention pooling on overlapping MFCC segments.

    Args:
        dims: ``dims["mfcc"]``, the frame dim.
        n_classes: number of classes (= number of top-down attention maps).
        segment_seconds, hop_seconds, frame_rate, segment_frames, hop_frames, input_proj, mixup_alpha:
            as for ``glam`` (defaults: 2 s every 1 s, no mixup, as the APCNN reference).
        dropout: dropout on the final feature map (none in the original).
    """

    name: ClassVar[str] = "apcnn"
    summary: ClassVar[str] = "GLAM paper baseline: CNN + attention pooling on MFCC segments"
    train_defaults: ClassVar[dict[str, Any]] = APCNN_TRAIN_DEFAULTS

    def __init__(self, dims: dict[str, int], n_classes: int, *, segment_seconds: float = 2.0, hop_seconds: float = 1.0,
                 frame_rate: float = MFCC_FRAME_RATE, segment_frames: int | None = None, hop_frames: float | None = None,
                 input_proj: int | None = None, mixup_alpha: float = 0.0, dropout: float = 0.0) -> None:
        super().__init__(dims, n_classes, segment_seconds=segment_seconds, hop_seconds=hop_seconds,
                         frame_rate=frame_rate, segment_frames=segment_frames, hop_frames=hop_frames,
                         input_proj=input_proj, mixup_alpha=mixup_alpha)
        _check_baseline_size(self.height, self.segment_frames)
        self.net = APCNNNet(n_classes, dropout=dropout)


@register
class MHCNNHead(SegmentHead):
    """MHCNN baseline: CNN + multi-head attention + global average pooling on MFCC segments.

    Args:
        dims: ``dims["mfcc"]``, the frame dim.
        n_classes: number of classes.
        segment_seconds, hop_seconds, frame_rate, segment_frames, hop_frames, input_proj, mixup_alpha:
            as for ``glam`` (defaults: 2 s every 1 s, no mixup, as the MHCNN reference).
        heads: attention heads (4 in the original).
        attn_hidden: Q/K/V channels per head (64 in the original).
        dropout: dropout before the classifier (the original defines 0.5 but never applies it).
    """

    name: ClassVar[str] = "mhcnn"
    summary: ClassVar[str] = "GLAM paper baseline: CNN + 4-head 1x1-conv attention on MFCC segments"
    train_defaults: ClassVar[dict[str, Any]] = MHCNN_TRAIN_DEFAULTS

    def __init__(self, dims: dict[str, int], n_classes: int, *, segment_seconds: float = 2.0, hop_seconds: float = 1.0,
                 frame_rate: float = MFCC_FRAME_RATE, segment_frames: int | None = None, hop_frames: float | None = None,
                 input_proj: int | None = None, mixup_alpha: float = 0.0, heads: int = 4,
                 attn_hidden: int = 64, dropout: float = 0.0) -> None:
        super().__init__(dims, n_classes, segment_seconds=segment_seconds, hop_seconds=hop_seconds,
                         frame_rate=frame_rate, segment_frames=segment_frames, hop_frames=hop_frames,
                         input_proj=input_proj, mixup_alpha=mixup_alpha)
        _check_baseline_size(self.height, self.segment_frames)
        self.net = MHCNNNet(n_classes, heads=heads, attn_hidden=attn_hidden, dropout=dropout)
