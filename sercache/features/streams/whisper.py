"""``whisper``: the encoder of any Whisper model, at its full window or at the length of the audio.

The encoder emits one frame per 320 samples (mel hop 160 x conv stride 2, 50 frames/s); frame ``j``
is centred on mel frame ``2j``, which is real audio while ``2j < ceil(n / 160)``, so ``ceil(n / 320)``
frames are kept (store/frames.py's ``hop`` rule, checked by ``cache verify``). Two ``--whisper-window``
modes compute them:

* ``full``: as Whisper was trained and published, every input zero-padded to the model's window
  (30 s: 3000 mel frames; transformers' WhisperEncoder refuses any other length), encoded, and the
  padding's frames dropped. The kept frames saw the padding through attention, and a 2 s clip
  costs as much as a 30 s one.
* ``audio``: only the real audio is encoded: the log-mel cut to ``2 * ceil(n / 320)`` frames, the
  positional embeddings sliced to match, run through the encoder's own modules. Clips of similar
  length share a batch: the mel beyond each clip is zeroed (what the convolutions' own zero
  padding sees) and attention ignores those keys, so a batched clip equals the same clip alone.
  The features differ from ``full``'s (no padding attended to); benchmarks/whisper_window.py
  measures the speed and the accuracy of both.

Longer audio is encoded in overlapping chunks of ``--chunk-seconds`` (at most the window) on the
320-sample frame grid and stitched like the wav2vec2 encoders' (features/encoder.py plan_chunks):
each frame comes from the chunk where it is furthest from an edge, and pooled statistics of all
layers are merged chunk by chunk. Stored like ``ssl``: the ``--whisper-layers`` frame by frame,
mean/std of every hidden state (0 = conv front end + positions, then each layer).

This file is the whole stream kind: it registers it (``register_stream``) when the registry imports it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from sercache.features.base import STORAGE_DTYPES, AudioItem, BatchPolicy, Extractor, ExtractResult
from sercache.features.streams import register_stream
from sercache.features.streams.base import ExtractError, Runtime, StreamConfig, StreamKind, StreamOption
from sercache.store.frames import hop_frames
from sercache.store.records import UtteranceFeatures

DEFAULT_WHISPER_MODEL = "openai/whisper-large-v3"
SAMPLE_RATE = 16_000
#: ``--whisper-window`` modes (see the module docstring); streams recorded before the option existed are ``full``.
WINDOWS = ("audio", "full")
#: padded audio seconds per batch on the CPU in ``audio`` mode: batching there is exact, and several times faster
#: than one clip at a time on short clips (benchmarks/whisper_window.py measures both)
CPU_AUDIO_BATCH_SECONDS = 64.0


@dataclass
class WhisperStreamConfig(StreamConfig):
    model: str = DEFAULT_WHISPER_MODEL
    layers: str | list[int] | None = None
    dtype: str = "float16"
    precision: str = "fp32"
    chunk_seconds: float = 30.0
    overlap_seconds: float = 5.0
    window: str = "audio"


@dataclass(frozen=True)
class FrameGrid:
    """Whisper's output framing for plan_chunks: ``stride`` samples per frame, trimmed counts."""

    stride: int

    def n_frames(self, n_samples: int) -> int:
        return hop_frames(n_samples, self.stride)


class WhisperExtractor(Extractor):
    """Selected hidden states of a Whisper encoder, plus mean/std pooled statistics of all of them."""

    kind = "whisper"
    input = "audio"

    def __init__(self, c: WhisperStreamConfig, rt: Runtime) -> None:
        from transformers import WhisperFeatureExtractor

        from sercache.features.encoder import PRECISIONS
        from sercache.features.models import ModelError, _config, model_reference, resolve_layers, weights_fingerprint

        self.model_name = model = model_reference(c.model)
        self.config = _config(model, "--whisper-model")
        if self.config.model_type != "whisper":
            raise ModelError(f"--whisper-model {model!r} is a {self.config.model_type!r} model, not Whisper; give "
                             "a Whisper checkpoint such as openai/whisper-large-v3")
        self.fe = WhisperFeatureExtractor.from_pretrained(model)
        if c.window not in WINDOWS:
            raise ExtractError(f"--whisper-window {c.window!r}: use one of {', '.join(WINDOWS)}")
        if c.precision not in PRECISIONS or c.dtype not in STORAGE_DTYPES:
            raise ExtractError(f"precision {c.precision!r} / dtype {c.dtype!r}: use {sorted(PRECISIONS)} / "
                               f"{sorted(STORAGE_DTYPES)}")
        self.window_samples = int(self.fe.n_samples)
        self.grid = FrameGrid(int(self.fe.hop_length) * 2)  # conv2 halves the mel frame rate
        if c.chunk_seconds * SAMPLE_RATE > self.window_samples or c.overlap_seconds >= c.chunk_seconds:
            raise ExtractError(f"--chunk-seconds {c.chunk_seconds:g}: {model!r} encodes at most "
                               f"{self.window_samples / SAMPLE_RATE:g} s at once; use at most that, with --chunk-overlap "
                               f"({c.overlap_seconds:g} s) below it")
        n_layers = int(self.config.encoder_layers)
        self.layers = resolve_layers(c.layers, n_layers, model, option="--whisper-layers")
        self.pooled_layers = list(range(n_layers + 1))
        self.c, self.device = c, rt.device
        cpu_default = CPU_AUDIO_BATCH_SECONDS if c.window == "audio" else 0.0
        self.batch_seconds = float(rt.batch_seconds if rt.batch_seconds is not None
                                   else 200.0 if str(rt.device).startswith("cuda") else cpu_default)
        self.dtype = STORAGE_DTYPES[c.dtype]
        self.frame_rate = SAMPLE_RATE / self.grid.stride
        self.fingerprint = weights_fingerprint(model)
        self.encoder: Any = None

    def identity(self) -> dict[str, Any]:
        c = self.c
        return {"kind": self.kind, "model": self.model_name, "weights": self.fingerprint, "model_type": "whisper",
                "precision": c.precision, "sample_rate": SAMPLE_RATE, "chunk_seconds": float(c.chunk_seconds),
                "overlap_seconds": float(c.overlap_seconds), "hidden_size": int(self.config.d_model),
                "layers": self.layers, "dtype": c.dtype, "window_samples": self.window_samples,
                "n_mels": int(self.fe.feature_size), "trim": "ceil(n / 320) frames", "window": c.window}

    def details(self) -> dict[str, Any]:
        return dict(super().details(), device=str(self.device), batch_seconds=self.batch_seconds)

    def stream_attrs(self) -> dict[str, Any]:
        return dict(super().stream_attrs(), frame_rule={"kind": "hop", "hop": self.grid.stride})

    def batch_policy(self) -> BatchPolicy:
        # full: every input is padded to the window anyway; audio: padding is masked out exactly
        return BatchPolicy(budget_seconds=self.batch_seconds, pad_safe=True,
                           max_items=1 if self.batch_seconds <= 0 else 64, chunk_seconds=self.c.chunk_seconds)

    def load(self) -> None:
        if self.encoder is None:
            from transformers import WhisperModel

            model = WhisperModel.from_pretrained(self.model_name, trust_remote_code=False)
            self.encoder = model.get_encoder().eval().to(self.device)

    def close(self) -> None:
        self.encoder = None

    def forward(self, waves: list[np.ndarray]) -> list[list[Any]]:
        """Encoded in the stream's window mode and trimmed: per wave, every hidden state ``(frames, dim)``."""
        import torch

        from sercache.features.encoder import PRECISIONS

        self.load()
        counts = [self.grid.n_frames(len(w)) for w in waves]
        mel = self.log_mel(waves, counts).to(self.device)
        autocast = (contextlib.nullcontext() if self.c.precision == "fp32" else
                    torch.autocast(device_type=torch.device(self.device).type, dtype=PRECISIONS[self.c.precision]))
        with torch.inference_mode(), autocast:
            if self.c.window == "full":
                hidden = self.encoder(mel, output_hidden_states=True).hidden_states
            else:
                hidden = encode_audio_only(self.encoder, mel, counts)
        return [[h[i, :n].float().cpu() for h in hidden] for i, n in enumerate(counts)]

    def log_mel(self, waves: list[np.ndarray], counts: list[int]) -> Any:
        """``(batch, n_mels, frames)``: the whole window's log-mel (``full``), or enough of it for ``counts`` frames.

        In ``audio`` mode the audio is zero-padded only to ``320 * max(counts) + 400`` samples: every
        kept mel frame's STFT window (400 samples) then sees the same zeros as at the full window, and
        the log-mel's floor (its maximum - 8) comes from the real audio either way, so the kept
        frames equal the full window's (tests/test_whisper.py) for a fraction of the cost.
        """
        if self.c.window == "full":
            return self.fe(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        length = min(self.grid.stride * max(counts) + int(self.fe.n_fft), self.window_samples)
        return self.fe(waves, sampling_rate=SAMPLE_RATE, return_tensors="pt", max_length=length).input_features

    def _long(self, wave: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
        import torch

        from sercache.features.encoder import RunningStats, plan_chunks

        chunks = plan_chunks(len(wave), int(self.c.chunk_seconds * SAMPLE_RATE),
                             int(self.c.overlap_seconds * SAMPLE_RATE), self.grid)  # type: ignore[arg-type]
        total, stats = self.grid.n_frames(len(wave)), RunningStats()
        kept = {k: torch.empty((total, int(self.config.d_model))) for k in self.layers}
        for ch in chunks:
            out = self.forward([wave[ch.start: ch.stop]])[0]
            part = [o[ch.keep_from - ch.first_frame: ch.keep_to - ch.first_frame] for o in out]
            stats.update(part)
            for k in self.layers:
                kept[k][ch.keep_from: ch.keep_to] = part[k]
        mean, std = stats.result(self.dtype)
        return {f"layer_{k}": t.numpy().astype(self.dtype) for k, t in kept.items()}, mean, std

    def extract(self, items: list[AudioItem]) -> ExtractResult:
        import torch

        from sercache.features.base import pooled_stats

        result = ExtractResult()
        short = [it for it in items if len(it.samples) <= self.c.chunk_seconds * SAMPLE_RATE]
        encoded = dict(zip((it.utt_id for it in short), self.forward([it.samples for it in short]))) if short else {}
        for it in items:
            if it.utt_id in encoded:
                hidden = encoded[it.utt_id]
                mean, std = pooled_stats(torch.stack(hidden), self.dtype)
                frames = {f"layer_{k}": hidden[k].numpy().astype(self.dtype) for k in self.layers}
            else:
                frames, mean, std = self._long(it.samples)
            result.records.append(UtteranceFeatures(
                it.utt_id, frames, {"pooled_mean": mean, "pooled_std": std, "n_samples": np.int64(len(it.samples))}))
        return result


def encode_audio_only(encoder: Any, mel: Any, counts: list[int]) -> tuple[Any, ...]:
    """Every hidden state of a WhisperEncoder over only the first ``counts[i]`` frames of each input.

    The same computation as ``WhisperEncoder.forward`` (conv front end, positions, layers, final
    layer norm on the last state), which refuses anything shorter than the window. Frame ``j``
    comes from mel frames ``2j - 1 .. 2j + 1``, so zeroing each input's mel beyond ``2 * counts[i]``
    gives its real frames exactly what an unpadded forward's zero padding would, and a key mask
    keeps attention off the batch's padding.

    Args:
        mel: ``(batch, n_mels, mel frames)`` log-mel, at least ``2 * max(counts)`` frames.
        counts: real encoder frames per input.

    Returns:
        ``(batch, max(counts), dim)`` hidden states 0 (front end + positions) .. N (after the layer norm).
    """
    import torch
    from torch.nn.functional import gelu

    longest = max(counts)
    mel = mel[..., : 2 * longest]
    real = torch.tensor(counts, device=mel.device)[:, None]
    if min(counts) < longest:
        mel = mel * (torch.arange(2 * longest, device=mel.device)[None, :] < 2 * real)[:, None, :]
    x = gelu(encoder.conv2(gelu(encoder.conv1(mel)))).permute(0, 2, 1)
    states = [x + encoder.embed_positions.weight[:longest]]
    mask = None
    if min(counts) < longest:
        keep = (torch.arange(longest, device=mel.device)[None, :] < real)[:, None, None, :]  # (batch, 1, 1, keys)
        # sdpa takes a boolean mask (True: attend); eager attention adds its mask to the scores
        mask = keep if encoder.config._attn_implementation == "sdpa" else \
            torch.zeros(keep.shape, device=mel.device).masked_fill(~keep, torch.finfo(torch.float32).min)
    for layer in encoder.layers:
        states.append(layer(states[-1], mask))
    states[-1] = encoder.layer_norm(states[-1])
    return tuple(states)


def check_window(f: Any, index: Any, bad: Any) -> None:
    """``cache verify``: a whisper stream records a window mode this sercache knows (none: ``full``)."""
    identity = dict(index.attrs.get("provenance") or {}).get("identity", {})
    if identity.get("kind") == "whisper" and identity.get("window", "full") not in WINDOWS:
        bad("", f"records --whisper-window {identity['window']!r}, which this sercache does not know (known: "
                f"{', '.join(WINDOWS)}); it was written by another version: update sercache, or re-extract with --overwrite")


register_stream(StreamKind(
    "whisper", "Whisper encoder hidden states", WhisperStreamConfig, WhisperExtractor, order=70,
    model_option="--whisper-model", implied={"window": "full"}, verify=(check_window,), options=(
        StreamOption("whisper_model", DEFAULT_WHISPER_MODEL, "HF id or local folder of a Whisper model (its "
                     "encoder is used).", flag="--whisper-model", field="model"),
        StreamOption("whisper_layers", None, "Whisper encoder layers to store frame by frame (as --layers). "
                     "Default: last.", flag="--whisper-layers", field="layers"),
        StreamOption("whisper_window", "audio", "audio: encode only the real audio (fast; clips batched by "
                     "length); full: pad every clip to the model's 30 s window, as Whisper was trained.",
                     flag="--whisper-window", field="window", check=(lambda v: v in WINDOWS, "audio or full")))),)
