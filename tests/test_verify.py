"""``cache verify`` and ``cache info``: every kind of damage is found and named, never raised.

Each test damages one thing in an otherwise sound cache and checks that the problem names
its shard, stream and (where it has one) utterance, and that nothing else is reported.
Caches are built in ``tmp_path`` with numpy through the store API.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from sercache.features.cache_info import cache_summary, format_summary
from sercache.store import ExtractionProblem, StreamWriter, UtteranceFeatures, atomic
from sercache.store.layout import stream_path
from sercache.store.manifest import register_streams, write_manifest
from sercache.store.verify import VerifyProblem, verify_cache

SR = 16_000
CONV = {"kind": "conv", "kernels": [10, 3, 3, 3, 3, 2, 2], "strides": [5, 2, 2, 2, 2, 2, 2]}
SHARDS = {"S1": ["s1_a", "s1_b", "s1_c", "s1_d"], "S2": ["s2_a", "s2_b", "s2_c"]}
FAILED = "s1_c"  # recorded as failed in every stream: never a verify problem
COMMAND = "sercache extract /corpus --corpus iemocap --out CACHE --session {s}"
HYPS = {"s1_a": ("HELLO WORLD", "HELLO WORD", 1, 2), "s1_b": ("A B C D", "A B C D", 0, 4),
        "s1_d": ("", "UH", 0, 0), "s2_a": ("ONE TWO THREE", "ONE THREE", 1, 3),
        "s2_b": ("YES", "NO", 1, 1), "s2_c": ("FOUR FIVE SIX SEVEN", "FOR FIVE SICK SEVEN", 2, 4)}


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Power-loss durability is not under test here, and fsync dominates the run time on slow disks."""
    monkeypatch.setattr(atomic, "fsync_path", lambda path: None)


def hubert_frames(n_samples: int) -> int:
    """Frames of HuBERT's conv front end (400-sample receptive field, 320 hop); short audio is padded."""
    return (max(n_samples, 400) - 400) // 320 + 1


def n_samples_of(utt: str) -> int:
    return 400 + 977 * (sum(map(ord, utt)) % 29)  # 400 (one frame) .. ~1.75 s, deterministic


def ssl_record(utt: str, rng: np.random.Generator, n_frames: int | None = None) -> UtteranceFeatures:
    ns = n_samples_of(utt)
    t = hubert_frames(ns) if n_frames is None else n_frames
    return UtteranceFeatures(utt, {"layer_2": rng.standard_normal((t, 6)).astype(np.float16)}, {
        "pooled_mean": rng.standard_normal((3, 6)).astype(np.float16),
        "pooled_std": rng.random((3, 6)).astype(np.float16), "n_samples": np.int64(ns)})


def asr_record(utt: str, rng: np.random.Generator) -> UtteranceFeatures:
    ref, hyp, errors, ref_words = HYPS[utt]
    tokens = list(hyp.replace(" ", "|")) or []
    ns = n_samples_of(utt)
    return UtteranceFeatures(
        utt, {"token": np.array(tokens, dtype=object), "confidence": rng.random(len(tokens)).astype(np.float32)},
        {"text": hyp, "wer": np.float32(errors / ref_words if ref_words else np.nan),
         "word_errors": np.int32(errors), "ref_words": np.int32(ref_words),
         "n_frames": np.int32(hubert_frames(ns)), "n_samples": np.int64(ns)})


def write_stream(cache: Path, shard: str, stream: str, records: list[UtteranceFeatures], *, kind: str = "ssl",
                 finalize: bool = True) -> None:
    ids = SHARDS[shard]
    w = StreamWriter(cache, shard, stream, {"identity": {"kind": kind, "layers": [2] if kind == "ssl" else []},
                                            "details": {}}, ids, flush_bytes=1)
    if FAILED in ids:
        w.add_problem(ExtractionProblem(FAILED, f"/audio/{FAILED}.wav", "audio", "unreadable audio"))
    for i, r in enumerate(records[::-1]):  # out of manifest order, two per segment
        w.add(r)
        if i % 2:
            w.end_batch()
    if finalize:
        w.finalize({"layers": [2] if kind == "ssl" else [], "pooled_layers": [0, 1, 2] if kind == "ssl" else [],
                    "frame_rate": 50.0, "frame_rule": CONV})


def write_shard_manifest(cache: Path, shard: str, ids: list[str] | None = None) -> None:
    ids = SHARDS[shard] if ids is None else ids
    n = np.array([n_samples_of(u) for u in ids])
    write_manifest(cache, shard, pd.DataFrame({
        "utt_id": ids, "label": "neu", "session": shard, "duration_s": n / SR, "num_samples": n, "sample_rate": SR,
        "transcript": [HYPS.get(u, ("x",))[0] for u in ids], "audio_sha1": "0" * 40,
        "path": [f"/audio/{u}.wav" for u in ids]}), [], {"corpus": "test"})


def build(cache: Path, *, asr: bool = False, seed: int = 0,
          ssl: dict[str, dict[str, int]] | None = None) -> dict[str, UtteranceFeatures]:
    """A sound two-shard cache with an ``ssl`` stream (and an ``asr`` one); ``ssl`` overrides frame counts."""
    rng = np.random.default_rng(seed)
    records = {}
    for shard, ids in SHARDS.items():
        streams = ["ssl", "asr"] if asr else ["ssl"]
        register_streams(cache, shard, streams, COMMAND.format(s=shard))
        write_shard_manifest(cache, shard)
        recs = [ssl_record(u, rng, (ssl or {}).get(u)) for u in ids if u != FAILED]
        records.update({r.utt_id: r for r in recs})
        write_stream(cache, shard, "ssl", recs)
        if asr:
            write_stream(cache, shard, "asr", [asr_record(u, rng) for u in ids if u != FAILED], kind="asr")
    return records


def where(problems: list[VerifyProblem]) -> set[tuple[str, str, str]]:
    return {(p.shard, p.stream, p.utt_id) for p in problems}


def row_of(path: Path, utt: str) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        ids = f["utt_ids"].asstr()[()].tolist()
        i = ids.index(utt)
        return i, int(f["offsets"][i])


def flip_byte(path: Path, dataset: str, row: int) -> None:
    """XOR the lowest bit of the first stored byte of ``dataset[row]`` (float16: stays finite)."""
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        pos = ds.id.get_offset() + row * ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    with open(path, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)[0]
        fh.seek(pos)
        fh.write(bytes([b ^ 0x01]))


# ---------------------------------------------------------------------------- sound
def test_sound_cache_has_no_problems(tmp_path: Path) -> None:
    build(tmp_path, asr=True)
    assert verify_cache(tmp_path) == []
    assert verify_cache(tmp_path, ["ssl"], checksums=False) == []


def test_frame_rule_matches_hubert() -> None:
    from sercache.store.verify import _expected_frames

    for n in (0, 1, 399, 400, 719, 720, 721, 16_000, 12_345, 48_000):
        assert _expected_frames(CONV, n) == hubert_frames(n), n
    assert _expected_frames(CONV, 16_000) == 49
    assert _expected_frames({"kind": "stft", "hop": 160}, 16_000) == 101
    assert _expected_frames({}, 16_000) == -1


# ---------------------------------------------------------------------------- bytes
def test_flipped_frame_bytes_name_the_utterance(tmp_path: Path) -> None:
    build(tmp_path)
    path = stream_path(tmp_path, "S2", "ssl")
    _, start = row_of(path, "s2_b")
    flip_byte(path, "frames/layer_2", start)
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "ssl", "s2_b")}
    assert all("frames/layer_2: checksum mismatch" in p.problem for p in problems)
    assert "S2/ssl: s2_b: frames/layer_2: checksum mismatch" in str(problems[0])
    assert "--session S2 --overwrite" in problems[0].problem  # the fix names the recorded command
    assert verify_cache(tmp_path, checksums=False) == []  # the protection is the checksum


def test_flipped_per_utterance_bytes_name_the_utterance(tmp_path: Path) -> None:
    build(tmp_path)
    path = stream_path(tmp_path, "S1", "ssl")
    i, _ = row_of(path, "s1_d")
    flip_byte(path, "per_utterance/pooled_mean", i)
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "ssl", "s1_d")}
    assert "per_utterance/pooled_mean: checksum mismatch" in problems[0].problem


# ---------------------------------------------------------------------------- files
def test_truncated_stream_file_is_a_problem_not_an_exception(tmp_path: Path) -> None:
    build(tmp_path)
    path = stream_path(tmp_path, "S1", "ssl")
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "ssl", "")}
    assert str(path) in problems[0].problem and "truncated" in problems[0].problem


@pytest.mark.parametrize("obj", ["/", "frames/layer_2", "per_utterance/pooled_std", "checksums/frames/layer_2"])
def test_damaged_metadata_is_a_problem_not_an_exception(tmp_path: Path, obj: str) -> None:
    build(tmp_path)
    path = stream_path(tmp_path, "S1", "ssl")
    with h5py.File(path, "r") as f:
        header = h5py.h5o.get_info(f[obj].id).addr  # this object's header, guarded by a metadata checksum
    with open(path, "r+b") as fh:
        fh.seek(header + 9)
        b = fh.read(1)[0]
        fh.seek(header + 9)
        fh.write(bytes([b ^ 0xFF]))
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "ssl", "")}
    assert str(path) in problems[0].problem


def test_missing_shard_is_named(tmp_path: Path) -> None:
    build(tmp_path)
    shutil.rmtree(tmp_path / "S2")
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "", "")}
    assert "shard missing" in problems[0].problem and "--session S2" in problems[0].problem


def test_interrupted_or_missing_stream_is_named(tmp_path: Path) -> None:
    build(tmp_path)
    rng = np.random.default_rng(1)
    register_streams(tmp_path, "S1", ["wavlm", "mfcc"], COMMAND.format(s="S1"))
    write_stream(tmp_path, "S1", "wavlm", [ssl_record(u, rng) for u in ("s1_a", "s1_b")], finalize=False)
    problems = {(p.shard, p.stream): p.problem for p in verify_cache(tmp_path)}
    assert set(problems) == {("S1", "wavlm"), ("S1", "mfcc")}
    assert "not finished" in problems["S1", "wavlm"] and "interrupted" in problems["S1", "wavlm"]
    # (the repair command names this test's folder, whose name holds "interrupted": check the state only)
    assert problems["S1", "mfcc"].startswith("stream not finished: missing;")
    assert verify_cache(tmp_path, ["ssl"]) == []


def test_unreadable_manifest_is_named(tmp_path: Path) -> None:
    build(tmp_path)
    (tmp_path / "S1" / "utterances.h5").write_bytes(b"not hdf5")
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "", "")} and "manifest unreadable" in problems[0].problem


def test_not_a_directory(tmp_path: Path) -> None:
    problems = verify_cache(tmp_path / "nope")
    assert len(problems) == 1 and "not a directory" in problems[0].problem


# ---------------------------------------------------------------------------- structure
def test_offsets_past_the_frames_are_named(tmp_path: Path) -> None:
    build(tmp_path)
    path = stream_path(tmp_path, "S2", "ssl")
    with h5py.File(path, "r+") as f:
        f["offsets"][-1] = f["offsets"][-1] + 3
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "ssl", "")}
    assert "frames/layer_2 holds" in problems[0].problem and "offsets end at" in problems[0].problem


def test_decreasing_offsets_are_named(tmp_path: Path) -> None:
    build(tmp_path)
    path = stream_path(tmp_path, "S2", "ssl")
    with h5py.File(path, "r+") as f:
        off = f["offsets"][()]
        off[1], off[2] = off[2], off[1] - 1
        f["offsets"][...] = off
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "ssl", "")} and "offsets are malformed" in problems[0].problem


def test_per_utterance_rows_disagreeing_with_utterances_are_named(tmp_path: Path) -> None:
    build(tmp_path)
    path = stream_path(tmp_path, "S1", "ssl")
    with h5py.File(path, "r+") as f:
        data = f["per_utterance/n_samples"][()]
        del f["per_utterance/n_samples"]
        f["per_utterance"].create_dataset("n_samples", data=data[:-1])
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "ssl", "")} and "per_utterance/n_samples holds 2 rows" in problems[0].problem


def test_file_not_marked_complete_is_named(tmp_path: Path) -> None:
    build(tmp_path)
    with h5py.File(stream_path(tmp_path, "S1", "ssl"), "r+") as f:
        f.attrs["complete"] = False
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "ssl", "")} and "not marked complete" in problems[0].problem


def test_manifest_utterance_neither_stored_nor_failed(tmp_path: Path) -> None:
    build(tmp_path)
    write_shard_manifest(tmp_path, "S1", SHARDS["S1"] + ["s1_new"])  # the manifest grew after extraction
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "ssl", "s1_new")}
    assert "neither stored nor recorded as failed" in problems[0].problem


def test_stored_utterance_outside_the_manifest(tmp_path: Path) -> None:
    build(tmp_path)
    write_shard_manifest(tmp_path, "S2", ["s2_a", "s2_c"])
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "ssl", "s2_b")} and "not in the shard's manifest" in problems[0].problem


# ---------------------------------------------------------------------------- values
def test_nan_frames_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    for shard in SHARDS:
        write_shard_manifest(tmp_path, shard)
    recs = [ssl_record(u, rng) for u in SHARDS["S1"] if u != FAILED]
    recs[1].frames["layer_2"][-1, 3] = np.nan  # s1_b: checksummed as written, so only the NaN check sees it
    recs[2].per_utterance["pooled_std"][0, 0] = np.inf  # s1_d
    write_stream(tmp_path, "S1", "ssl", recs)
    for shard in SHARDS:
        register_streams(tmp_path, shard, ["ssl"] if shard == "S1" else [], COMMAND.format(s=shard))
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S1", "ssl", "s1_b"), ("S1", "ssl", "s1_d")}
    by_utt = {p.utt_id: p.problem for p in problems}
    assert "frames/layer_2 holds NaN/inf" in by_utt["s1_b"]
    assert "per_utterance/pooled_std holds NaN/inf" in by_utt["s1_d"]


def test_frame_counts_disagreeing_with_audio_are_named(tmp_path: Path) -> None:
    n = n_samples_of("s2_c")
    build(tmp_path, ssl={"s2_c": hubert_frames(n) + 1, "s1_a": max(hubert_frames(n_samples_of("s1_a")) - 1, 0)})
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "ssl", "s2_c"), ("S1", "ssl", "s1_a")}
    msg = {p.utt_id: p.problem for p in problems}
    assert msg["s2_c"] == f"{hubert_frames(n) + 1} frames stored, {hubert_frames(n)} expected for {n} samples"


def test_audio_length_disagreeing_with_manifest_is_named(tmp_path: Path) -> None:
    build(tmp_path)
    ids = SHARDS["S2"]
    n = np.array([n_samples_of(u) for u in ids])
    n[1] += SR // 10  # the manifest says s2_b is 0.1 s longer than what was encoded
    write_manifest(tmp_path, "S2", pd.DataFrame({
        "utt_id": ids, "label": "neu", "session": "S2", "duration_s": n / SR, "num_samples": n, "sample_rate": SR,
        "transcript": "", "audio_sha1": "", "path": ""}), [], {})
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "ssl", "s2_b")} and "manifest says" in problems[0].problem


def test_text_stream_with_too_few_tokens_is_named(tmp_path: Path) -> None:
    write_shard_manifest(tmp_path, "S2")
    w = StreamWriter(tmp_path, "S2", "text_asr", {"identity": {"kind": "text"}, "details": {}}, SHARDS["S2"])
    for u, tokens in (("s2_a", ["[CLS]", "hi", "[SEP]"]), ("s2_b", ["[CLS]"]), ("s2_c", ["[CLS]", "[SEP]"])):
        w.add(UtteranceFeatures(u, {"layer_1": np.zeros((len(tokens), 4), np.float16),
                                    "token": np.array(tokens, dtype=object)}, {"text": "hi"}))
    w.finalize({"layers": [1], "pooled_layers": [], "frame_rate": 0.0})
    register_streams(tmp_path, "S2", ["text_asr"], COMMAND.format(s="S2"))
    problems = verify_cache(tmp_path)
    assert where(problems) == {("S2", "text_asr", "s2_b")} and "fewer than 2 tokens" in problems[0].problem


# ---------------------------------------------------------------------------- info
def test_info_reports_corpus_wer_per_shard(tmp_path: Path) -> None:
    build(tmp_path, asr=True)
    summary = cache_summary(tmp_path)
    json.dumps(summary)  # plain data
    rows = {r["shard"]: r for r in summary["wer"]["asr"]}
    assert set(rows) == {"S1", "S2"}
    for shard, ids in SHARDS.items():
        hyps = [HYPS[u] for u in ids if u != FAILED]
        errors, words = sum(h[2] for h in hyps), sum(h[3] for h in hyps)
        assert rows[shard]["word_errors"] == errors and rows[shard]["ref_words"] == words
        assert rows[shard]["wer"] == pytest.approx(errors / words)
        # corpus-level (total errors / total words), not the mean of per-utterance WERs
        assert rows[shard]["wer"] != pytest.approx(np.mean([h[2] / h[3] for h in hyps if h[3]]))
        assert rows[shard]["utterances"] == sum(1 for h in hyps if h[3] > 0)
    assert rows["S1"]["wer"] == pytest.approx(1 / 6) and rows["S2"]["wer"] == pytest.approx(4 / 8)

    streams = {s["stream"]: s for s in summary["streams"]}
    assert streams["asr"]["kind"] == "asr" and streams["asr"]["complete"]
    assert streams["ssl"]["layers"] == [2] and streams["ssl"]["dim"] == 6 and streams["ssl"]["stored"] == 6
    assert streams["ssl"]["failed"] == 1 and streams["ssl"]["pooled_layers"] == "0-2"
    assert {(e["stream"], e["utt_id"]) for e in summary["errors"]} == {("ssl", FAILED), ("asr", FAILED)}

    text = format_summary(summary)
    assert "ASR word error rate (asr, per shard; total 35.7%)" in text  # 5 errors / 14 words
    assert "16.7%" in text and "50.0%" in text
    assert "problems: 2 (2 errors, 0 warnings)" in text and "unreadable audio" in text


def test_damaged_registry_is_named_not_raised(tmp_path):
    import sercache
    from sercache.store.manifest import write_manifest
    from sercache.store.verify import verify_cache

    write_manifest(tmp_path, "all", pd.DataFrame({"utt_id": ["u1"], "duration_s": [1.0]}), [], {})
    (tmp_path / "sercache.json").write_text("{not json")
    problems = verify_cache(tmp_path)
    assert len(problems) == 1 and "sercache.json is damaged" in problems[0].problem
    assert sercache.open_cache(tmp_path).utterances.utt_id.tolist() == ["u1"]
