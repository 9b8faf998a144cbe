"""The store split by job: the I/O engine's threaded piecewise reads, and the feature reports above the store.

Caches are built in ``tmp_path`` with the store's own writer (the helpers of test_store and test_verify).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sercache.store.io_engine as io_engine
from sercache.features import cache_info
from sercache.features.asr_report import transcripts, wer_by_shard
from sercache.store import CacheCorruptError, atomic, info, open_cache
from sercache.store.io_engine import ReadEngine
from tests.test_store import build_two_shards
from tests.test_store import flip_byte as flip_store_byte
from tests.test_verify import build as build_with_asr

STORE = Path(__file__).resolve().parents[1] / "sercache" / "store"
#: a fold in storage order with runs, a jump back, and the zero-frame s1_u2 inside a run
IDS = ["s2_u3", "s1_u0", "s1_u1", "s1_u2", "s1_u3", "s2_u0", "s2_u1", "s1_u4"]


@pytest.fixture(autouse=True)
def _no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "fsync_path", lambda path: None)


@pytest.fixture
def tiny_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """16-byte read pieces and two threads, so a few utterances take the threaded path a fold takes."""
    monkeypatch.setattr(io_engine, "RAW_PIECE", 16)
    monkeypatch.setattr(io_engine, "READ_THREADS", 2)
    monkeypatch.setattr(io_engine, "READ_STREAMS", 3)


def test_threaded_piecewise_reads_match_the_records_and_h5py(tmp_path: Path, tiny_pieces: None) -> None:
    records = build_two_shards(tmp_path)
    expected = np.concatenate([records[u].frames["layer_7"] for u in IDS])
    with open_cache(tmp_path) as cache:
        out, offsets = cache.load("ssl", IDS, layer=7, verify=True)
        assert cache._io._stream_pool is not None  # the pieces went through the read streams
        np.testing.assert_array_equal(out, expected)
        assert offsets.tolist() == np.concatenate([[0], np.cumsum([len(records[u].frames["layer_7"])
                                                                   for u in IDS])]).tolist()
        through_h5py = np.empty_like(out)
        engine = ReadEngine(direct=False)
        engine.read_rows(cache._index["ssl"], cache._positions("ssl", IDS), offsets, "layer_7", through_h5py)
        engine.close()
        np.testing.assert_array_equal(through_h5py, expected)


def test_large_reads_are_cut_into_consecutive_spans_of_about_equal_bytes() -> None:
    buf = memoryview(bytearray(100))
    reads = [(3, 0, buf[0:30]), (3, 30, buf[30:60]), (4, 0, buf[60:70]), (4, 10, buf[70:100])]
    spans = io_engine.split_spans(reads, 3)
    assert [job for span in spans for job in span] == reads  # output order kept, nothing lost or repeated
    assert [[job[1] for job in span] for span in spans] == [[0], [30, 0], [10]]
    assert io_engine.split_spans(reads, 8) == [[job] for job in reads]  # never more spans than reads
    assert io_engine.split_spans([], 4) == []


def test_each_read_stream_reads_through_its_own_description_of_the_same_file(
        tmp_path: Path, tiny_pieces: None, monkeypatch: pytest.MonkeyPatch) -> None:
    records = build_two_shards(tmp_path)
    expected = np.concatenate([records[u].frames["layer_7"] for u in IDS])
    reopened: list[str] = []
    real_open = io_engine.os.open

    def recording_open(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if str(path).startswith("/proc/self/fd/"):
            reopened.append(str(path))
        return real_open(path, *args, **kwargs)

    with open_cache(tmp_path) as cache:
        cache.load("ssl", IDS, layer=7)  # opens the shard files
        for path in (tmp_path / "S1" / "ssl.h5", tmp_path / "S2" / "ssl.h5"):
            replacement = path.with_suffix(".new")
            replacement.write_bytes(path.read_bytes()[:4096])  # a rewrite lands by rename ...
            replacement.replace(path)
        monkeypatch.setattr(io_engine.os, "open", recording_open)
        out, _ = cache.load("ssl", IDS, layer=7)
    np.testing.assert_array_equal(out, expected)  # ... and the open cache still reads the files it opened
    if Path("/proc/self/fd").is_dir():
        assert len(reopened) >= 3  # every stream (READ_STREAMS = 3 here) reopened its file


def test_threaded_checksums_name_the_damaged_utterance(tmp_path: Path, tiny_pieces: None) -> None:
    build_two_shards(tmp_path)
    with open_cache(tmp_path) as cache:
        k, i = cache._locate("ssl")["s1_u3"]
        row = int(cache._index["ssl"][k].offsets[i])
    flip_store_byte(tmp_path / "S1" / "ssl.h5", "frames/layer_7", row)
    with open_cache(tmp_path) as cache:
        cache.load("ssl", IDS, layer=7)  # unchecked, the damage goes unseen
        with pytest.raises(CacheCorruptError, match="frames of s1_u3 \\(shard S1\\) fail their checksum"):
            cache.load("ssl", IDS, layer=7, verify=True)


def test_the_store_imports_nothing_above_it() -> None:
    above = ("sercache.features", "sercache.extract", "sercache.heads", "sercache.training", "sercache.runs",
             "sercache.sweep", "sercache.splits", "sercache.cli")
    for path in sorted(STORE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not [n for n in names if n.startswith(above)], f"{path.name} imports {names}"


def test_cache_info_composes_the_wer_above_the_store(tmp_path: Path) -> None:
    build_with_asr(tmp_path, asr=True)
    store_part = info.cache_summary(tmp_path)
    summary = cache_info.cache_summary(tmp_path)
    assert "wer" not in store_part and list(summary) == ["path", "utterances", "shards", "streams", "wer", "errors",
                                                         "error_counts"]
    assert {k: v for k, v in summary.items() if k != "wer"} == store_part
    with open_cache(tmp_path) as cache:
        assert summary["wer"] == {"asr": wer_by_shard(cache, "asr").to_dict("records")}
        assert len(transcripts(cache, "asr")) == cache.streams["asr"].n_utterances
    assert "word error rate" not in info.format_summary(store_part)
    text = cache_info.format_summary(summary)
    assert text.index("provenance:") < text.index("ASR word error rate (asr") < text.index("problems: 2")


def test_the_feature_reports_need_no_torch(tmp_path: Path) -> None:
    build_with_asr(tmp_path, asr=True)
    code = ("import sys\n"
            "from sercache.features.cache_info import cache_summary, format_summary\n"
            "from sercache.features.asr_report import transcripts\n"
            "import sercache\n"
            f"text = format_summary(cache_summary({str(tmp_path)!r}))\n"
            "assert 'ASR word error rate' in text, text\n"
            f"assert len(transcripts(sercache.open_cache({str(tmp_path)!r}), 'asr'))\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
