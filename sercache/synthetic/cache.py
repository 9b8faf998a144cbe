"""Write IEMOCAP-shaped feature caches directly (no encoders), with a planted class signal.

For benchmarks (cache reads, training speed at IEMOCAP scale) and for end-to-end learning
tests: each stream's frames are Gaussian noise plus ``signal`` times a class-specific unit
direction, so a head that keeps labels and features aligned learns it, and one that
scrambles them cannot. Written through the real store writer, so the result is a normal cache.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sercache._typing import Pathlike
from sercache.store.frames import WAV2VEC2_CONV, expected_frames
from sercache.store.manifest import register_streams, write_manifest
from sercache.store.records import UtteranceFeatures
from sercache.store.writer import StreamWriter

MFCC_RULE = {"kind": "stft", "hop": 512, "center": True}  # sercache.features.spectral's MFCC framing
WHISPER_RULE = {"kind": "hop", "hop": 320}  # sercache.features.streams.whisper's trimmed frames
OPENSMILE_RULE = {"kind": "window", "window": 960, "hop": 160, "extra": 1}  # sercache.features.opensmile's LLDs
#: frames per second of audio (text: tokens)
KIND_DEFAULTS = {"ssl": 50.0, "whisper": 50.0, "mfcc": 31.25, "opensmile": 100.0, "text": 2.5}
FRAME_RULES = {"ssl": WAV2VEC2_CONV, "whisper": WHISPER_RULE, "mfcc": MFCC_RULE, "opensmile": OPENSMILE_RULE}


@dataclass
class SyntheticStream:
    """One stream to synthesise.

    Attributes:
        name: stream name in the cache.
        kind: ``ssl`` (frames at 50/s), ``whisper`` (50/s, Whisper's framing), ``mfcc`` (31.25/s),
            ``opensmile`` (100/s LLDs plus ``2 * dim`` per-utterance ``functionals``, as eGeMAPS streams) or
            ``text`` (tokens; ~2.5 per audio second + 2).
        dim: feature dimension.
        layers: stored layers (the signal is strongest in the last; earlier layers get less).
        dtype: storage dtype.
        signal: norm of the class direction added to every frame (noise has unit variance per dim).
        outliers: massive activations, as real encoders have them (whisper-base's layers 4 and 5 reach
            |x| ~ 480 in one to three dimensions, mostly on the sixth frame from the end of one EmoDB clip
            in ten to one in five): in ``outlier_layers``, every other utterance has one frame, the sixth
            from its end, at ``+-outliers`` (the sign alternating by dimension) in its first ``outlier_dims``
            dimensions. They carry no class information.
        outlier_layers: the layers that have them.
        outlier_dims: how many dimensions.
    """

    name: str
    kind: str
    dim: int
    layers: tuple[int, ...] = (0,)
    dtype: str = "float16"
    signal: float = 1.0
    outliers: float = 0.0
    outlier_layers: tuple[int, ...] = ()
    outlier_dims: int = 2


def frames_for(kind: str, duration_s: float) -> int:
    if kind == "text":
        return 2 + max(1, int(round(KIND_DEFAULTS["text"] * duration_s)))
    return expected_frames(FRAME_RULES[kind], int(round(duration_s * 16000)))  # as n_samples


def manifest_from_rows(rows: Iterable[dict]) -> pd.DataFrame:
    """Rows like ``iemocap-4class.jsonl`` (utt_id, session, speaker, gender, dialog_type, duration_s, emotion)."""
    from sercache.corpora.base import make_table

    out = []
    for r in rows:
        d = dict(r)
        d.setdefault("label", d.get("emotion", ""))
        d["session"] = str(d.get("session", ""))
        d.setdefault("corpus", "synthetic")
        d.setdefault("path", f"{d['utt_id']}.wav")
        d.setdefault("sample_rate", 16000)
        d.setdefault("num_samples", int(round(float(d["duration_s"]) * 16000)))
        d.setdefault("channels", 1)
        out.append(d)
    return make_table(out)


def write_synthetic_cache(out: Pathlike, manifest: pd.DataFrame, streams: list[SyntheticStream], *,
                          label_column: str = "label", seed: int = 0, shard_by: str = "session",
                          flush_mb: float = 256.0) -> Path:
    """Write ``manifest`` and ``streams`` into a cache at ``out`` (one shard per session)."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    labels = sorted(set(manifest[label_column]))
    directions = {s.name: {lab: _unit(rng, s.dim) for lab in labels} for s in streams}
    functionals = {s.name: {lab: _unit(rng, 2 * s.dim) for lab in labels} for s in streams if s.kind == "opensmile"}
    shards = ("Session" + manifest[shard_by].astype(str)) if shard_by else pd.Series("all", index=manifest.index)
    for shard, rows in manifest.groupby(shards, sort=True):
        rows = rows.reset_index(drop=True)
        write_manifest(out, shard, rows, [], {"corpus": "synthetic"})
        register_streams(out, shard, [s.name for s in streams], "synthetic")
        for s in streams:
            prov = {"identity": {"kind": s.kind if s.kind != "text" else "text", "synthetic": True, "dim": s.dim,
                                 "layers": list(s.layers), "dtype": s.dtype, "signal": s.signal, "seed": seed,
                                 **_text_source(s)},
                    "details": {}}
            writer = StreamWriter(out, shard, s.name, prov, rows.utt_id.tolist(), flush_bytes=int(flush_mb * 2**20))
            for r in rows.itertuples():
                n = frames_for(s.kind, float(r.duration_s))
                direction = directions[s.name][getattr(r, label_column)]
                frames, pooled_mean, pooled_std = {}, [], []
                for li, layer in enumerate(s.layers):
                    strength = s.signal * (li + 1) / len(s.layers)
                    x = rng.standard_normal((n, s.dim), dtype=np.float32)
                    x += strength * direction
                    if s.outliers and layer in s.outlier_layers and r.Index % 2 == 0:
                        _add_outliers(x, s.outliers, s.outlier_dims)
                    if s.kind == "text":  # like BERT's [CLS], the first token summarises the sentence
                        x[0] = x.mean(0)
                    frames[f"layer_{layer}"] = x.astype(s.dtype)
                    pooled_mean.append(x.mean(0))
                    pooled_std.append(x.std(0))
                if s.kind == "text":
                    frames["token"] = np.array(["[CLS]"] + [f"w{i}" for i in range(n - 2)] + ["[SEP]"], dtype=object)
                    frames["word_index"] = np.array([-1] + list(range(n - 2)) + [-1], dtype=np.int32)
                per_utt = {"pooled_mean": np.stack(pooled_mean).astype(s.dtype),
                           "pooled_std": np.stack(pooled_std).astype(s.dtype)}
                if s.kind != "text":
                    per_utt["n_samples"] = np.int64(round(float(r.duration_s) * 16000))
                if s.kind == "opensmile":
                    per_utt["functionals"] = (rng.standard_normal(2 * s.dim, dtype=np.float32)
                                              + s.signal * functionals[s.name][getattr(r, label_column)])
                writer.add(UtteranceFeatures(r.utt_id, frames, per_utt))
                writer.end_batch()
            attrs = {"layers": list(s.layers), "pooled_layers": list(s.layers),
                     "frame_rate": 0.0 if s.kind == "text" else KIND_DEFAULTS[s.kind]}
            if s.kind in FRAME_RULES:
                attrs["frame_rule"] = FRAME_RULES[s.kind]
            if s.kind == "opensmile":
                attrs["finite_fields"] = ["functionals"]
            writer.finalize(attrs)
    return out


def _add_outliers(x: np.ndarray, size: float, dims: int) -> None:
    """A massive activation in ``x``'s first ``dims`` dimensions, in place (see SyntheticStream.outliers)."""
    x[max(len(x) - 6, 0), :dims] = np.where(np.arange(dims) % 2, -size, size)


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def _text_source(stream: SyntheticStream) -> dict[str, str]:
    """A text stream named as extraction names them (text_asr, text_gold) records its source, as they do."""
    source = stream.name.rpartition("_")[2]
    return {"source": source} if stream.kind == "text" and source in ("asr", "gold") else {}
