"""Frame rules: how many frames a stream holds for ``n`` samples of audio (torch-free).

A stream records its rule in its attributes (``frame_rule``: a small JSON dict) when it is
written; ``cache verify`` checks every stored utterance against it, and the extractors and
synthetic writers compute their own frame counts with the same functions, so the rule is
written once. The rules are about sample arithmetic only; what a stream's frames mean is the
feature side's business (sercache.features.streams).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

#: wav2vec2/HuBERT/WavLM's convolutional front end: 400-sample receptive field, 320-sample stride.
WAV2VEC2_CONV = {"kind": "conv", "kernels": [10, 3, 3, 3, 3, 2, 2], "strides": [5, 2, 2, 2, 2, 2, 2]}


def receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    rf = 1
    for k, s in zip(reversed(kernels), reversed(strides)):
        rf = (rf - 1) * s + k
    return rf


def conv_frames(n_samples: int, kernels: Sequence[int], strides: Sequence[int], *, pad_short: bool = False) -> int:
    """Frames out of a stack of unpadded 1-d convolutions; ``pad_short``: audio shorter than the
    receptive field is zero-padded to one frame (as the extractors do), else it gives 0."""
    n = max(int(n_samples), receptive_field(kernels, strides)) if pad_short else int(n_samples)
    for k, s in zip(kernels, strides):
        n = (n - int(k)) // int(s) + 1
        if n <= 0:
            return 0
    return n


def stft_frames(n_samples: int, hop: int) -> int:
    """A centred STFT (librosa's ``center=True``): one frame per hop, plus one."""
    return 1 + int(n_samples) // int(hop)


def window_frames(n_samples: int, window: int, hop: int, extra: int = 0) -> int:
    """One frame per full window at each hop, plus ``extra`` frames emitted beyond the last full
    window; audio shorter than one window is zero-padded to one."""
    return (max(int(n_samples), int(window)) - int(window)) // int(hop) + 1 + int(extra)


def hop_frames(n_samples: int, hop: int) -> int:
    """One frame per started hop, ``ceil(n / hop)`` (at least one): an encoder whose input is padded
    to a fixed length and whose frames are trimmed back to the real audio."""
    return max(1, -(-int(n_samples) // int(hop)))


#: Rule kind -> frames for ``n`` samples under that rule's parameters.
RULES: dict[str, Callable[[dict[str, Any], int], int]] = {
    "conv": lambda r, n: conv_frames(n, r["kernels"], r["strides"], pad_short=True),
    "stft": lambda r, n: stft_frames(n, r["hop"]),
    "window": lambda r, n: window_frames(n, r["window"], r["hop"], r.get("extra", 0)),
    "hop": lambda r, n: hop_frames(n, r["hop"]),
}


def expected_frames(rule: dict[str, Any], n_samples: int) -> int:
    """Frames the rule says ``n_samples`` give; -1 when the rule is missing or of an unknown kind."""
    compute = RULES.get(str((rule or {}).get("kind")))
    return compute(rule, int(n_samples)) if compute else -1
