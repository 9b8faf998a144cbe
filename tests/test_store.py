"""The HDF5 feature store: write, resume, compact, read back, refuse what is not whole.

Every cache here is built in ``tmp_path`` with numpy through the store's own API
(``write_manifest`` + ``StreamWriter``); nothing reads ../shared, and nothing imports torch.
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from sercache.features.asr_report import transcripts
from sercache.store import (
    CacheCorruptError,
    CacheError,
    CacheLockedError,
    ExtractionProblem,
    IncompleteStreamError,
    StaleCacheError,
    StreamWriter,
    UtteranceFeatures,
    atomic,
    open_cache,
)
from sercache.store.layout import STAGING_DIR, staging_dir, stream_path
from sercache.store.lock import ShardLock
from sercache.store.manifest import register_streams, write_manifest

SR = 16_000
LAYERS = [3, 7]
POOLED = list(range(8))


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Power-loss durability is not under test here, and fsync dominates the run time on slow disks."""
    monkeypatch.setattr(atomic, "fsync_path", lambda path: None)


# ---------------------------------------------------------------------------- helpers
def manifest(ids: list[str], session: str, seed: int = 0, n_samples: list[int] | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = rng.integers(400, 3 * SR, size=len(ids)) if n_samples is None else np.asarray(n_samples)
    return pd.DataFrame({
        "utt_id": ids, "label": rng.choice(["ang", "hap", "neu", "sad"], size=len(ids)), "session": session,
        "duration_s": n / SR, "num_samples": n, "sample_rate": SR, "transcript": [f"words of {u}" for u in ids],
        "audio_sha1": [f"{i:040x}" for i in range(len(ids))], "path": [f"/audio/{u}.wav" for u in ids],
    })


def provenance(layers: list[int] = LAYERS, **details: object) -> dict:
    return {"identity": {"kind": "ssl", "layers": list(layers)}, "details": dict(details)}


def stream_attrs(layers: list[int] = LAYERS, pooled: list[int] = POOLED, conv: bool = True) -> dict:
    attrs = {"layers": list(layers), "pooled_layers": list(pooled), "frame_rate": 50.0}
    if conv:  # HuBERT's framing; without it verify does not check frame counts (a 0-frame record is fine)
        attrs["frame_rule"] = {"kind": "conv", "kernels": [10, 3, 3, 3, 3, 2, 2], "strides": [5, 2, 2, 2, 2, 2, 2]}
    return attrs


def make_record(utt: str, n_frames: int, rng: np.random.Generator, dtype: str = "float16",
                tail: tuple[int, ...] = (4,), layers: list[int] = LAYERS) -> UtteranceFeatures:
    frames = {f"layer_{k}": rng.standard_normal((n_frames, *tail)).astype(dtype) for k in layers}
    frames["token"] = np.array([f"{utt}-t{i}" + ("é日" if i % 3 == 0 else "") for i in range(n_frames)], dtype=object)
    per = {
        "pooled_mean": rng.standard_normal((len(POOLED), 5)).astype(dtype),
        "pooled_std": rng.random((len(POOLED), 5)).astype(dtype),
        "n_samples": np.int64(400 + 320 * max(n_frames - 1, 0)),
        "score": np.float32(rng.random()),
        "note": f"note for {utt} ✓",
        "vec": rng.standard_normal(3).astype(np.float32),
    }
    return UtteranceFeatures(utt, frames, per)


def write_stream(cache: Path, shard: str, records: list[UtteranceFeatures], expected: list[str], *,
                 stream: str = "ssl", problems: list[ExtractionProblem] = (), batch: int = 2,
                 layers: list[int] = LAYERS, finalize: bool = True, conv: bool = True) -> StreamWriter:
    """Add ``records`` in the given order, ``batch`` at a time, each batch flushed as a segment."""
    w = StreamWriter(cache, shard, stream, provenance(layers), expected, flush_bytes=1)
    for p in problems:
        w.add_problem(p)
    for i in range(0, len(records), batch):
        for r in records[i:i + batch]:
            w.add(r)
        w.end_batch()
    if finalize:
        w.finalize(stream_attrs(layers, conv=conv))
    return w


def build_two_shards(cache: Path, *, dtype: str = "float16", tail: tuple[int, ...] = (4,), seed: int = 0,
                     ) -> dict[str, UtteranceFeatures]:
    """Shards S1 (5 utterances, one with zero frames) and S2 (4), records added out of order."""
    rng = np.random.default_rng(seed)
    shards = {"S1": [f"s1_u{i}" for i in range(5)], "S2": [f"s2_u{i}" for i in range(4)]}
    records = {}
    for k, (shard, ids) in enumerate(shards.items()):
        recs = [make_record(u, 0 if u == "s1_u2" else int(rng.integers(1, 9)), rng, dtype, tail) for u in ids]
        n_samples = [int(r.per_utterance["n_samples"]) for r in recs]
        write_manifest(cache, shard, manifest(ids, shard, seed + k, n_samples), [], {"corpus": "test"})
        records.update({r.utt_id: r for r in recs})
        order = list(rng.permutation(len(recs)))
        write_stream(cache, shard, [recs[i] for i in order], ids, conv=False)
        register_streams(cache, shard, ["ssl"], f"test build {shard}")  # as extraction does: verify needs it
    return records


def all_datasets(path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def all_attrs(path: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: object) -> None:
            for k, v in obj.attrs.items():
                out[f"{name}@{k}"] = v
        visit("/", f)
        f.visititems(visit)
    return out


def flip_byte(path: Path, dataset: str, row: int, byte: int = 0) -> None:
    """XOR the lowest bit of one stored byte of ``dataset[row]`` (a contiguous dataset), in place."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        assert ds.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS
        base = ds.id.get_offset()
        row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    pos = base + row * row_bytes + byte
    with open(path, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)[0]
        fh.seek(pos)
        fh.write(bytes([b ^ 0x01]))


# ---------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize("tail", [(), (1,), (6,), (2, 3)], ids=["1d", "dim1", "dim6", "2x3"])
def test_round_trip(tmp_path: Path, dtype: str, tail: tuple[int, ...]) -> None:
    records = build_two_shards(tmp_path, dtype=dtype, tail=tail)
    order = ["s1_u0", "s1_u1", "s1_u2", "s1_u3", "s1_u4", "s2_u0", "s2_u1", "s2_u2", "s2_u3"]
    with open_cache(tmp_path) as cache:
        assert cache.shards == ["S1", "S2"]
        assert cache.utterances.utt_id.tolist() == order
        info = cache.streams["ssl"]
        assert info.complete and info.shards == ["S1", "S2"] and info.in_progress == [] and info.missing_shards == []
        assert info.layers == LAYERS and info.pooled_layers == POOLED and info.default_layer == 7
        assert info.dtype == dtype and info.dim == (tail[0] if tail else 1) and info.frame_rate == 50.0
        assert info.n_utterances == 9 and info.n_failed == 0 and info.kind == "ssl"
        assert set(info.frame_fields) == {"layer_3", "layer_7", "token"}
        assert cache.utt_ids("ssl") == order

        # .frames: one utterance, every layer, the default layer, the ragged text field
        for u, r in records.items():
            for k in LAYERS:
                got = cache.frames("ssl", u, layer=k)
                assert got.dtype == np.dtype(dtype) and got.shape == (r.n_frames, *tail)
                np.testing.assert_array_equal(got, r.frames[f"layer_{k}"])
            np.testing.assert_array_equal(cache.frames("ssl", u), r.frames["layer_7"])
            assert list(cache.frames("ssl", u, name="token")) == list(r.frames["token"])

        # .load: manifest order, reversed, a subset across both shards, one utterance, none
        for ids in (order, order[::-1], ["s2_u1", "s1_u0", "s1_u2", "s1_u3", "s2_u0", "s2_u1"], ["s1_u4"]):
            for k in LAYERS:
                out, offsets = cache.load("ssl", ids, layer=k, verify=True)
                assert out.dtype == np.dtype(dtype) and out.flags.c_contiguous and out.base is None
                assert offsets.dtype == np.int64 and offsets.shape == (len(ids) + 1,) and offsets[0] == 0
                assert offsets[-1] == len(out) == sum(records[u].n_frames for u in ids)
                assert np.all(np.diff(offsets) == [records[u].n_frames for u in ids])
                for j, u in enumerate(ids):
                    np.testing.assert_array_equal(out[offsets[j]:offsets[j + 1]], records[u].frames[f"layer_{k}"])
            toks, toff = cache.load("ssl", ids, name="token", verify=True)
            assert toks.dtype == object and np.array_equal(toff, offsets)
            assert [list(toks[toff[j]:toff[j + 1]]) for j in range(len(ids))] == \
                [list(records[u].frames["token"]) for u in ids]
        out, offsets = cache.load("ssl", [])
        assert out.shape == (0, *tail) and offsets.tolist() == [0]

        # .load(out=): each layer into its slice of one preallocated block, sized by frame_counts
        ids = ["s2_u1", "s1_u0", "s2_u3", "s1_u4"]
        counts = cache.frame_counts("ssl", ids)
        assert counts.tolist() == [records[u].n_frames for u in ids]
        block = np.full((len(LAYERS), int(counts.sum()) + 1, *tail), -1, dtype=dtype)
        for i, k in enumerate(LAYERS):
            filled, _ = cache.load("ssl", ids, layer=k, verify=True, out=block[i, :-1])
            assert np.shares_memory(filled, block)
            np.testing.assert_array_equal(block[i, :-1], cache.load("ssl", ids, layer=k)[0])
        assert (block[:, -1] == -1).all()  # nothing written past the requested rows
        for bad in (block[0], block[0, :-2], block[0, :-1].astype(np.float64),
                    np.empty((int(counts.sum()), 2, *tail), dtype)[:, 0]):  # strided
            with pytest.raises(ValueError, match="out= must be"):
                cache.load("ssl", ids, layer=3, out=bad)

        # per-utterance scalars, strings and fixed-shape arrays, in any order
        ids = ["s2_u3", "s1_u1", "s2_u0"]
        np.testing.assert_array_equal(cache.per_utterance("ssl", "n_samples"),
                                      [records[u].per_utterance["n_samples"] for u in order])
        assert cache.per_utterance("ssl", "score", ids).dtype == np.float32
        np.testing.assert_array_equal(cache.per_utterance("ssl", "score", ids),
                                      [records[u].per_utterance["score"] for u in ids])
        assert list(cache.per_utterance("ssl", "note", ids)) == [records[u].per_utterance["note"] for u in ids]
        np.testing.assert_array_equal(cache.per_utterance("ssl", "vec", ids),
                                      np.stack([records[u].per_utterance["vec"] for u in ids]))

        # .pooled: (n_utt, dim) float32 of any pooled layer, mean / std / both
        for layer in (None, 0, 5):
            li = POOLED.index(7 if layer is None else layer)
            mean = cache.pooled("ssl", layer=layer)
            std = cache.pooled("ssl", layer=layer, how="std", utt_ids=ids)
            both = cache.pooled("ssl", layer=layer, how="meanstd", utt_ids=ids)
            assert mean.shape == (9, 5) and mean.dtype == np.float32
            assert std.shape == (3, 5) and both.shape == (3, 10) and both.dtype == np.float32
            np.testing.assert_array_equal(mean, [records[u].per_utterance["pooled_mean"][li].astype(np.float32)
                                                 for u in order])
            np.testing.assert_array_equal(std, [records[u].per_utterance["pooled_std"][li].astype(np.float32)
                                                for u in ids])
            np.testing.assert_array_equal(both[:, :5], cache.pooled("ssl", layer=layer, utt_ids=ids))
            np.testing.assert_array_equal(both[:, 5:], std)
        assert cache.pooled("ssl", utt_ids=[]).shape == (0, 5)


def test_reader_argument_errors(tmp_path: Path) -> None:
    build_two_shards(tmp_path)
    with open_cache(tmp_path) as cache:
        with pytest.raises(KeyError, match="layer 4 is not stored.*stored: \\[3, 7\\].*pooled statistics exist"):
            cache.frames("ssl", "s1_u0", layer=4)
        with pytest.raises(KeyError, match="layer 9 is not stored.*stored: \\[3, 7\\]"):
            cache.load("ssl", ["s1_u0"], layer=9)
        with pytest.raises(KeyError, match="layer 9 is not pooled.*pooled: \\[0, 1"):
            cache.pooled("ssl", layer=9)
        with pytest.raises(ValueError, match="how="):
            cache.pooled("ssl", how="max")
        with pytest.raises(KeyError, match="no frame field 'tokens'.*token"):
            cache.frames("ssl", "s1_u0", name="tokens")
        with pytest.raises(KeyError, match="no per-utterance field 'text'"):
            cache.per_utterance("ssl", "text")
        with pytest.raises(KeyError, match="unknown utterance id 'nope'"):
            cache.frames("ssl", "nope")
        with pytest.raises(KeyError, match="no stream 'mfcc'.*\\['ssl'\\]"):
            cache.frames("mfcc", "s1_u0")
        with pytest.raises(KeyError, match="not an ASR stream"):
            transcripts(cache, "ssl")


def test_final_file_follows_manifest_order_and_failures_are_recorded(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ids = [f"u{i}" for i in range(8)]
    write_manifest(tmp_path, "S1", manifest(ids, "S1"),
                   [ExtractionProblem("u5", "/audio/u5.wav", "manifest", "transcript decoded as latin-1",
                                      severity="warning")], {})
    records = {u: make_record(u, int(rng.integers(1, 6)), rng) for u in ids if u not in ("u2", "u5")}
    problems = [ExtractionProblem("u5", "/audio/u5.wav", "audio", "unreadable audio: bad RIFF header"),
                ExtractionProblem("u2", "/audio/u2.wav", "ssl", "out of memory even alone"),
                ExtractionProblem("u6", "/audio/u6.wav", "audio", "clipped", severity="warning")]
    added = ["u7", "u0", "u4", "u1", "u6", "u3"]
    write_stream(tmp_path, "S1", [records[u] for u in added], ids, problems=problems, batch=4)
    stored = [u for u in ids if u in records]

    with h5py.File(stream_path(tmp_path, "S1", "ssl"), "r") as f:
        assert f["utt_ids"].asstr()[()].tolist() == stored
        offsets = f["offsets"][()]
        assert np.diff(offsets).tolist() == [records[u].n_frames for u in stored]
        assert f["frames/layer_7"].shape[0] == offsets[-1]
        for j, u in enumerate(stored):
            np.testing.assert_array_equal(f["frames/layer_7"][offsets[j]:offsets[j + 1]], records[u].frames["layer_7"])
        assert f.attrs["complete"] and f.attrs["n_stored"] == 6 and f.attrs["n_failed"] == 2
        assert f.attrs["n_expected"] == 8
    assert not (tmp_path / "S1" / STAGING_DIR).exists()

    with open_cache(tmp_path) as cache:
        assert cache.utt_ids("ssl") == stored
        assert cache.streams["ssl"].n_failed == 2 and cache.streams["ssl"].complete
        err = cache.errors.set_index(["utt_id", "stream", "stage"])
        assert err.loc[("u2", "ssl", "ssl"), "reason"] == "out of memory even alone"
        assert err.loc[("u5", "ssl", "audio"), "severity"] == "error"
        assert err.loc[("u5", "", "manifest"), "severity"] == "warning"
        assert err.loc[("u6", "ssl", "audio"), "severity"] == "warning"
        assert set(cache.errors.shard) == {"S1"}
        np.testing.assert_array_equal(cache.frames("ssl", "u6"), records["u6"].frames["layer_7"])  # warning: stored
        with pytest.raises(IncompleteStreamError, match="u2 has no 'ssl' features: out of memory even alone"):
            cache.frames("ssl", "u2")
        # the stream's error, not the manifest's earlier warning about the same utterance, is the reason
        with pytest.raises(IncompleteStreamError, match="u5 has no 'ssl' features: unreadable audio"):
            cache.load("ssl", ["u0", "u5"])
        with pytest.raises(IncompleteStreamError, match="u2"):
            cache.pooled("ssl", utt_ids=["u1", "u2"])


def test_writer_refuses_inconsistent_work(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    ids = ["a", "b", "c"]
    w = StreamWriter(tmp_path, "S1", "ssl", provenance(), ids)
    w.add(make_record("a", 3, rng))
    w.flush()
    with pytest.raises(CacheError, match="a is already stored"):
        w.add(make_record("a", 3, rng))
    w.add(make_record("b", 3, rng, tail=(5,)))
    with pytest.raises(CacheError, match="layout"):
        w.flush()
    w2 = StreamWriter(tmp_path, "S1", "ssl", provenance(), ids)
    with pytest.raises(CacheError, match="not finished: 2 utterances left \\(first: b\\)"):
        w2.finalize(stream_attrs())
    assert not stream_path(tmp_path, "S1", "ssl").exists()
    w3 = StreamWriter(tmp_path, "S1", "ssl", provenance(), ["b", "c"])  # manifest shrank: "a" is foreign now
    w3.add(make_record("b", 1, rng))
    w3.add(make_record("c", 1, rng))
    with pytest.raises(CacheError, match="outside this shard's manifest"):
        w3.finalize(stream_attrs())
    assert not stream_path(tmp_path, "S1", "ssl").exists()


def test_stream_where_every_utterance_failed(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    write_manifest(tmp_path, "S1", manifest(["a", "b"], "S1"), [], {})
    write_manifest(tmp_path, "S2", manifest(["c"], "S2"), [], {})
    write_stream(tmp_path, "S1", [], ["a", "b"], problems=[ExtractionProblem("a", "", "audio", "unreadable"),
                                                          ExtractionProblem("b", "", "audio", "unreadable")])
    write_stream(tmp_path, "S2", [make_record("c", 4, rng)], ["c"])
    with open_cache(tmp_path) as cache:
        info = cache.streams["ssl"]
        assert info.complete and info.n_utterances == 1 and info.n_failed == 2 and info.dim == 4
        assert cache.utt_ids("ssl") == ["c"]
        assert cache.load("ssl", ["c"])[0].shape == (4, 4)
        with pytest.raises(IncompleteStreamError, match="unreadable"):
            cache.frames("ssl", "a")


# ---------------------------------------------------------------------------- resume
def test_resume_after_crash_is_byte_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    ids = [f"u{i:02d}" for i in range(11)]
    records = {u: make_record(u, int(rng.integers(1, 7)), rng) for u in ids if u != "u03"}
    failure = ExtractionProblem("u03", "/audio/u03.wav", "audio", "unreadable")
    order = ["u05", "u01", "u00", "u03", "u08", "u02", "u10", "u04", "u09", "u06", "u07"]
    batches = [order[i:i + 2] for i in range(0, len(order), 2)]

    def run_batches(w: StreamWriter, todo: list[list[str]]) -> None:
        for batch in todo:
            for u in batch:
                w.add_problem(failure) if u == "u03" else w.add(records[u])
            w.end_batch()

    ref = tmp_path / "ref"
    w = StreamWriter(ref, "S1", "ssl", provenance(device="cuda:0"), ids, flush_bytes=1)
    run_batches(w, batches)
    w.finalize(stream_attrs())

    crashed = tmp_path / "crashed"
    w = StreamWriter(crashed, "S1", "ssl", provenance(device="cuda:0"), ids, flush_bytes=1)
    run_batches(w, batches[:3])
    for u in batches[3]:  # added, never flushed: lost with the process
        w.add(records[u])
    del w
    staging = staging_dir(crashed, "S1", "ssl")
    torn = staging / "seg-000004.h5.tmp"  # a segment write killed half-way
    torn.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    assert not stream_path(crashed, "S1", "ssl").exists()

    # details (device) may change between runs; only identity must match
    w = StreamWriter(crashed, "S1", "ssl", provenance(device="cpu"), ids, flush_bytes=1)
    flushed = [u for b in batches[:3] for u in b]
    assert w.done_ids == set(flushed) - {"u03"} and w.failed_ids == {"u03"}
    assert w.remaining_ids == [u for u in ids if u not in flushed]
    assert not torn.exists()
    with pytest.raises(CacheError, match="already stored"):
        w.add(records["u05"])
    run_batches(w, batches[3:])
    w.finalize(stream_attrs())
    assert not staging.exists() and not (crashed / "S1" / STAGING_DIR).exists()

    a, b = all_datasets(stream_path(ref, "S1", "ssl")), all_datasets(stream_path(crashed, "S1", "ssl"))
    assert sorted(a) == sorted(b) and "frames/layer_7" in a and "checksums/frames/token" in a
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        if a[name].dtype == object:
            assert a[name].tolist() == b[name].tolist(), name
        else:
            assert a[name].tobytes() == b[name].tobytes(), name
    attrs_a, attrs_b = all_attrs(stream_path(ref, "S1", "ssl")), all_attrs(stream_path(crashed, "S1", "ssl"))
    for attrs in (attrs_a, attrs_b):
        attrs.pop("/@created")
        attrs.pop("/@provenance")  # holds the details (device), which legitimately differ
    assert attrs_a.keys() == attrs_b.keys()
    assert all(np.array_equal(attrs_a[k], attrs_b[k]) for k in attrs_a)


def test_unreadable_staged_segment_is_redone(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    ids = ["a", "b", "c"]
    recs = {u: make_record(u, 2, rng) for u in ids}
    w = StreamWriter(tmp_path, "S1", "ssl", provenance(), ids)
    w.add(recs["a"])
    w.flush()
    w.add(recs["b"])
    w.flush()
    segs = sorted(staging_dir(tmp_path, "S1", "ssl").glob("seg-*.h5"))
    assert len(segs) == 2
    segs[1].write_bytes(b"garbage")
    w = StreamWriter(tmp_path, "S1", "ssl", provenance(), ids)
    assert w.done_ids == {"a"} and w.remaining_ids == ["b", "c"]
    w.add(recs["b"])
    w.add(recs["c"])
    w.finalize(stream_attrs())
    write_manifest(tmp_path, "S1", manifest(ids, "S1"), [], {})
    with open_cache(tmp_path) as cache:
        for u in ids:
            np.testing.assert_array_equal(cache.frames("ssl", u), recs[u].frames["layer_7"])


def test_staged_work_with_other_identity_is_refused_or_discarded(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    ids = ["a", "b"]
    w = StreamWriter(tmp_path, "S1", "ssl", provenance([3, 7]), ids)
    w.add(make_record("a", 2, rng))
    w.flush()
    staging = staging_dir(tmp_path, "S1", "ssl")
    with pytest.raises(StaleCacheError, match="layers: stored \\[3, 7\\], asked \\[1\\]"):
        StreamWriter(tmp_path, "S1", "ssl", provenance([1]), ids)
    assert len(list(staging.glob("seg-*.h5"))) == 1  # refused: nothing was touched
    w = StreamWriter(tmp_path, "S1", "ssl", provenance([1]), ids, overwrite=True)
    assert w.done_ids == set() and w.remaining_ids == ids
    assert list(staging.glob("seg-*.h5")) == []
    assert json.loads((staging / "provenance.json").read_text())["identity"]["layers"] == [1]
    for u in ids:
        w.add(make_record(u, 2, rng, layers=[1]))
    w.finalize(stream_attrs([1]))
    with h5py.File(stream_path(tmp_path, "S1", "ssl"), "r") as f:
        assert sorted(f["frames"]) == ["layer_1", "token"]
        assert json.loads(f.attrs["provenance"])["identity"]["layers"] == [1]


# ---------------------------------------------------------------------------- partial streams
def test_staged_stream_is_not_a_finished_stream(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    s1, s2 = ["a0", "a1"], ["b0", "b1", "b2"]
    write_manifest(tmp_path, "S1", manifest(s1, "S1"), [], {})
    write_manifest(tmp_path, "S2", manifest(s2, "S2"), [], {})
    write_stream(tmp_path, "S1", [make_record(u, 3, rng) for u in s1], s1)
    write_stream(tmp_path, "S2", [make_record(u, 3, rng) for u in s2[:2]], s2, finalize=False)  # interrupted
    # a second stream that was only ever staged, in S1
    write_stream(tmp_path, "S1", [make_record("a0", 3, rng)], s1, stream="wavlm", finalize=False)
    assert not stream_path(tmp_path, "S2", "ssl").exists()

    with open_cache(tmp_path) as cache:
        ssl = cache.streams["ssl"]
        assert not ssl.complete and ssl.shards == ["S1"] and ssl.in_progress == ["S2"]
        assert ssl.missing_shards == ["S2"] and ssl.n_utterances == 2
        assert cache.utt_ids("ssl") == s1
        assert cache.load("ssl", s1)[1].tolist() == [0, 3, 6]
        with pytest.raises(IncompleteStreamError, match="b0: shard S2 has no finished 'ssl' stream.*in progress"):
            cache.load("ssl", ["a0", "b0"])
        with pytest.raises(IncompleteStreamError, match="S2"):
            cache.frames("ssl", "b2")

        wavlm = cache.streams["wavlm"]
        assert not wavlm.complete and wavlm.in_progress == ["S1"] and wavlm.shards == []
        assert cache.utt_ids("wavlm") == []
        for call in (lambda: cache.load("wavlm", ["a0"]), lambda: cache.load("wavlm", ["a0"], layer=7),
                     lambda: cache.frames("wavlm", "a0", name="token"), lambda: cache.pooled("wavlm")):
            with pytest.raises(IncompleteStreamError, match="wavlm"):
                call()


# ---------------------------------------------------------------------------- damage
def test_load_verify_names_damaged_utterance(tmp_path: Path) -> None:
    records = build_two_shards(tmp_path)
    path = stream_path(tmp_path, "S2", "ssl")
    with h5py.File(path, "r") as f:
        row = int(f["offsets"][2])  # first frame of s2_u2
    flip_byte(path, "frames/layer_7", row)
    with open_cache(tmp_path) as cache:
        out, _ = cache.load("ssl", ["s2_u2"], layer=7)  # without verify, damage goes unnoticed
        assert not np.array_equal(out, records["s2_u2"].frames["layer_7"])
        with pytest.raises(CacheCorruptError, match="s2_u2 \\(shard S2\\).*checksum"):
            cache.load("ssl", ["s1_u0", "s2_u2", "s2_u3"], layer=7, verify=True)
        cache.load("ssl", ["s1_u0", "s2_u1", "s2_u3"], layer=7, verify=True)  # neighbours are fine
        cache.load("ssl", ["s2_u2"], layer=3, verify=True)  # so is the other layer


def test_open_cache_errors(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="is not a directory"):
        open_cache(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CacheError, match="holds no shard.*sercache cache"):
        open_cache(tmp_path / "empty")

    cache = tmp_path / "dup"
    write_manifest(cache, "Session1", manifest(["x", "y"], "Session1"), [], {})
    write_manifest(cache, "Session2", manifest(["z", "y"], "Session2"), [], {})
    with pytest.raises(CacheError, match="utterance y is in several shards.*Session1.*Session2"):
        open_cache(cache)


def test_open_cache_names_an_unreadable_stream_file(tmp_path: Path) -> None:
    build_two_shards(tmp_path)
    path = stream_path(tmp_path, "S2", "ssl")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(CacheCorruptError, match=f"{path}.*cache verify"):
        open_cache(tmp_path)


def test_open_cache_names_an_unreadable_manifest(tmp_path: Path) -> None:
    build_two_shards(tmp_path)
    (tmp_path / "S2" / "utterances.h5").write_bytes(b"\0" * 64)
    with pytest.raises(CacheCorruptError, match="S2/utterances.h5 cannot be read.*shard S2"):
        open_cache(tmp_path)


def test_open_cache_names_a_damaged_stream_file(tmp_path: Path) -> None:
    build_two_shards(tmp_path)
    path = stream_path(tmp_path, "S1", "ssl")
    with h5py.File(path, "r") as f:
        header = h5py.h5o.get_info(f["frames/layer_3"].id).addr
    with open(path, "r+b") as fh:  # break the dataset's object header (its metadata checksum fails)
        fh.seek(header + 9)
        b = fh.read(1)[0]
        fh.seek(header + 9)
        fh.write(bytes([b ^ 0xFF]))
    with pytest.raises(CacheCorruptError, match=f"{path} cannot be read"):
        open_cache(tmp_path)


def test_shards_in_natural_order_and_registry_free(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    for s in ("Session10", "Session2", "Session1"):
        write_manifest(tmp_path, s, manifest([f"{s}_a"], s), [], {})
        write_stream(tmp_path, s, [make_record(f"{s}_a", 2, rng)], [f"{s}_a"])
    register_streams(tmp_path, "Session1", ["ssl"], "sercache extract x")
    with open_cache(tmp_path) as cache:
        assert cache.shards == ["Session1", "Session2", "Session10"]
        assert cache.utt_ids("ssl") == ["Session1_a", "Session2_a", "Session10_a"]
        assert "Session1" in cache.registry["shards"]


def test_shards_made_with_other_settings_are_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    write_manifest(tmp_path, "S1", manifest(["a"], "S1"), [], {})
    write_manifest(tmp_path, "S2", manifest(["b"], "S2"), [], {})
    write_stream(tmp_path, "S1", [make_record("a", 2, rng)], ["a"])
    write_stream(tmp_path, "S2", [make_record("b", 2, rng, layers=[3])], ["b"], layers=[3])
    with open_cache(tmp_path) as cache:
        assert "layers" in cache.streams["ssl"].inconsistent
        with pytest.raises(CacheError, match="shards S1 and S2 of stream 'ssl' differ: layers"):
            cache.load("ssl", ["a"], layer=3)


def test_store_pickles_for_worker_processes(tmp_path: Path) -> None:
    records = build_two_shards(tmp_path)
    with open_cache(tmp_path) as cache:
        cache.frames("ssl", "s1_u0")  # opens a file handle, which must not travel
        clone = pickle.loads(pickle.dumps(cache))
    out, off = clone.load("ssl", ["s2_u3", "s1_u0"])
    np.testing.assert_array_equal(out[off[1]:], records["s1_u0"].frames["layer_7"])
    clone.close()


# ---------------------------------------------------------------------------- isolation, locking
def test_store_imports_neither_torch_nor_transformers(tmp_path: Path) -> None:
    build_two_shards(tmp_path)
    code = ("import sys, sercache, sercache.store; sercache.open_cache\n"
            "import sercache.store.verify, sercache.store.info, sercache.store.lock, sercache.store.writer\n"
            f"c = sercache.open_cache({str(tmp_path)!r}); c.load('ssl', c.utt_ids('ssl')); c.pooled('ssl')\n"
            "assert not sercache.store.verify.verify_cache(c.path)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


LOCK_HOLDER = """
import sys, time
from sercache.store.lock import ShardLock
with ShardLock(sys.argv[1], sys.argv[2]):
    print("locked", flush=True)
    time.sleep(120)
"""

LOCK_CONTENDER = """
import sys, time
from sercache.store.errors import CacheLockedError
from sercache.store.lock import ShardLock
t = time.monotonic()
try:
    with ShardLock(sys.argv[1], sys.argv[2]):
        print("ACQUIRED")
except CacheLockedError as e:
    print(f"LOCKED {time.monotonic() - t:.3f} {e}")
"""


def test_shard_lock_refuses_a_second_writer(tmp_path: Path) -> None:
    with ShardLock(tmp_path, "S1") as lock:
        info = json.loads(lock.path.read_text())
        assert info["pid"] == os.getpid()
        res = subprocess.run([sys.executable, "-c", LOCK_CONTENDER, str(tmp_path), "S1"],
                             capture_output=True, text=True, timeout=60)
        assert res.stdout.startswith("LOCKED"), res.stdout + res.stderr
        assert float(res.stdout.split()[1]) < 1.0  # non-blocking: fails at once
        assert f"pid {os.getpid()} on " in res.stdout and str(tmp_path / "S1") in res.stdout
        res = subprocess.run([sys.executable, "-c", LOCK_CONTENDER, str(tmp_path), "S2"],  # other shard: fine
                             capture_output=True, text=True, timeout=60)
        assert res.stdout.startswith("ACQUIRED"), res.stdout + res.stderr
    with ShardLock(tmp_path, "S1"):  # released on exit, and reusable
        pass


def test_shard_lock_dies_with_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(tmp_path), "S1"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t = time.monotonic()
        with pytest.raises(CacheLockedError, match=f"pid {holder.pid} on .*Wait for it"):
            ShardLock(tmp_path, "S1").__enter__()
        assert time.monotonic() - t < 1.0
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        holder.stdout.close()
    with ShardLock(tmp_path, "S1") as lock:  # the kernel released the flock of the killed process
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
