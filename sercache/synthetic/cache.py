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
KIND_DEFAULTS = {"ssl": 50.0, "mfcc": 31.25, "text": 2.5}  # frames per second of audio (text: tokens)


@dataclass
class SyntheticStream:
    """One stream to synthesise.

    Attributes:
        name: stream name in the cache.
        kind: ``ssl`` (frames at 50/s), ``mfcc`` (31.25/s) or ``text`` (tokens; ~2.5 per audio second + 2).
        dim: feature dimension.
        layers: stored layers (the signal is strongest in the last; earlier layers get less).
        dtype: storage dtype.
        signal: norm of the class direction added to every frame (noise has unit variance per dim).
    """

    name: str
    kind: str
    dim: int
    layers: tuple[int, ...] = (0,)
    dtype: str = "float16"
    signal: float = 1.0


def frames_for(kind: str, duration_s: float) -> int:
    if kind == "text":
        return 2 + max(1, int(round(KIND_DEFAULTS["text"] * duration_s)))
    rule = MFCC_RULE if kind == "mfcc" else WAV2VEC2_CONV
    return expected_frames(rule, int(duration_s * 16000))


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
    shards = ("Session" + manifest[shard_by].astype(str)) if shard_by else pd.Series("all", index=manifest.index)
    for shard, rows in manifest.groupby(shards, sort=True):
        rows = rows.reset_index(drop=True)
        write_manifest(out, shard, rows, [], {"corpus": "synthetic"})
        register_streams(out, shard, [s.name for s in streams], "synthetic")
        for s in streams:
            prov = {"identity": {"kind": s.kind if s.kind != "text" else "text", "synthetic": True, "dim": s.dim,
                                 "layers": list(s.layers), "dtype": s.dtype, "signal": s.signal, "seed": seed},
                    "details": {}}
            writer = StreamWriter(out, shard, s.name, prov, rows.utt_id.tolist(), flush_bytes=int(flush_mb * 2**20))
            for r in rows.itertuples(index=False):
                n = frames_for(s.kind, float(r.duration_s))
                direction = directions[s.name][getattr(r, label_column)]
                frames, pooled_mean, pooled_std = {}, [], []
                for li, layer in enumerate(s.layers):
                    strength = s.signal * (li + 1) / len(s.layers)
                    x = rng.standard_normal((n, s.dim), dtype=np.float32)
                    x += strength * direction
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
                writer.add(UtteranceFeatures(r.utt_id, frames, per_utt))
                writer.end_batch()
            attrs = {"layers": list(s.layers), "pooled_layers": list(s.layers),
                     "frame_rate": 0.0 if s.kind == "text" else (50.0 if s.kind == "ssl" else 31.25)}
            if s.kind == "ssl":
                attrs["frame_rule"] = WAV2VEC2_CONV
            elif s.kind == "mfcc":
                attrs["frame_rule"] = MFCC_RULE
            writer.finalize(attrs)
    return out


def _unit(rng: np.random.Generator, dim: int) -> np.ndarray:
    v = rng.standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)
