"""``sercache extract`` end to end on a synthetic IEMOCAP tree with tiny random models."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import sercache
from sercache.cli import cli
from sercache.features.asr_report import transcripts, wer_by_shard
from sercache.store.errors import IncompleteStreamError
from tests.conftest import extract_args

STREAMS = ("ssl", "asr", "text_asr", "text_gold", "mfcc")


def run_cli(*args: str) -> click.testing.Result:  # noqa: F821
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def stream_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of a stream file (strings as str), for byte-level comparisons."""
    out = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            out[name] = obj.asstr()[()] if h5py.check_string_dtype(obj.dtype) else obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def assert_same_stream(a: Path, b: Path) -> None:
    x, y = stream_arrays(a), stream_arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape, k
        assert np.array_equal(x[k], y[k]) or (x[k].dtype.kind == "f" and np.array_equal(x[k], y[k], equal_nan=True)), k


@pytest.fixture(scope="module")
def extracted(extracted_cache) -> Path:
    return extracted_cache


def test_every_stream_is_extracted_and_readable(extracted, small_corpus):
    from sercache.extract.manifests import read_corpus

    manifest = read_corpus("iemocap", small_corpus).table
    cache = sercache.open_cache(extracted)
    assert sorted(cache.utterances.utt_id) == sorted(manifest.utt_id)
    assert cache.shards == [f"Session{k}" for k in range(1, 6)]
    for name in STREAMS:
        info = cache.streams[name]
        assert info.complete and info.n_failed == 0
        assert cache.utt_ids(name) == cache.utterances.utt_id.tolist()
    ssl = cache.streams["ssl"]
    assert ssl.layers == [0, 1, 2] and ssl.pooled_layers == [0, 1, 2] and ssl.dim == 32 and ssl.dtype == "float16"
    u = cache.utterances.iloc[7]
    x = cache.frames("ssl", u.utt_id, layer=1)
    assert x.shape == (int((u.num_samples - 400) // 320 + 1), 32)
    frames, offsets = cache.load("ssl", cache.utterances.utt_id.tolist(), layer=2, verify=True)
    assert offsets[-1] == frames.shape[0] and len(offsets) == len(cache.utterances) + 1
    assert cache.pooled("ssl", layer=0).shape == (80, 32)
    np.testing.assert_allclose(cache.pooled("ssl", layer=2)[7], x.astype(np.float32).mean(0) * 0 + cache.frames(
        "ssl", u.utt_id, layer=2).astype(np.float32).mean(0), atol=2e-3)
    mfcc = cache.frames("mfcc", u.utt_id)
    assert mfcc.shape == (int(u.num_samples // 512 + 1), 26) and mfcc.dtype == np.float32
    # the text streams encode what the ASR heard and what the gold transcript says
    asr = transcripts(cache, "asr").set_index("utt_id")
    text_asr = cache.per_utterance("text_asr", "text", [u.utt_id])[0]
    assert text_asr == asr.loc[u.utt_id, "text"].lower()
    assert cache.per_utterance("text_gold", "text", [u.utt_id])[0] == u.transcript.lower()
    assert cache.frames("text_gold", u.utt_id, name="token")[0] == "[CLS]"
    assert set(wer_by_shard(cache, "asr").shard) == set(cache.shards)


def test_info_and_verify(extracted):
    info = run_cli("cache", "info", str(extracted))
    assert info.exit_code == 0
    for name in STREAMS:
        assert f"\n{name:>9} " in info.output or f" {name} " in info.output
    assert "ASR word error rate" in info.output and "problems: none" in info.output
    verify = run_cli("cache", "verify", str(extracted))
    assert verify.exit_code == 0 and "OK" in verify.output


def test_rerun_skips_finished_work(extracted, small_corpus, models):
    before = {p: p.stat().st_mtime_ns for p in extracted.glob("*/*.h5") if p.name != "utterances.h5"}
    result = run_cli(*extract_args(small_corpus, extracted, models, "--layers", "all"))
    assert result.exit_code == 0
    assert result.output.count("already complete") == 25
    assert before == {p: p.stat().st_mtime_ns for p in before}


@pytest.mark.parametrize("change,expect", [
    (("--layers", "1"), "layers: stored [0, 1, 2], asked [1]"),
    (("--layers", "all", "--dtype", "float32"), "dtype: stored float16, asked float32"),
    (("--layers", "all", "--chunk-seconds", "20"), "chunk_seconds"),
])
def test_changed_settings_are_refused(extracted, small_corpus, models, tmp_path, change, expect):
    out = tmp_path / "cache"
    shutil.copytree(extracted, out)
    result = run_cli(*extract_args(small_corpus, out, models, *change, streams="ssl"))
    assert result.exit_code == 2
    assert expect in result.output and "--overwrite" in result.output and "--stream-name" in result.output


@pytest.mark.slow
def test_other_model_refused_then_side_by_side_or_overwritten(extracted, small_corpus, models, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(extracted, out)
    args = ["extract", str(small_corpus), "--corpus", "iemocap", "--out", str(out), "--streams", "ssl",
            "--ssl-model", str(models["ssl_group"]), "--no-progress"]
    refused = run_cli(*args)
    assert refused.exit_code == 2 and "model: stored" in refused.output
    side = run_cli(*args, "--stream-name", "ssl=hubert_group")
    assert side.exit_code == 0, side.output
    cache = sercache.open_cache(out)
    assert {"ssl", "hubert_group"} <= set(cache.streams)
    assert cache.streams["hubert_group"].provenance["identity"]["model"] == str(models["ssl_group"])
    assert cache.streams["ssl"].provenance["identity"]["model"] == str(models["ssl"])
    replaced = run_cli(*args, "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert sercache.open_cache(out).streams["ssl"].provenance["identity"]["model"] == str(models["ssl_group"])


def test_text_asr_without_asr_is_refused_before_work(small_corpus, models, tmp_path):
    result = run_cli(*extract_args(small_corpus, tmp_path / "c", models, streams="text_asr"))
    assert result.exit_code == 2 and "add asr to --streams" in result.output
    assert not list((tmp_path / "c").glob("*/text_asr.h5"))


@pytest.mark.parametrize(("option", "value", "streams"), [
    ("--batch-seconds", "-5", "mfcc"), ("--chunk-seconds", "0.01", "ssl"), ("--chunk-overlap", "40", "ssl"),
    ("--mfcc-coefficients", "-3", "mfcc"), ("--mfcc-coefficients", "0", "mfcc"),
    ("--mfcc-coefficients", "1000", "mfcc"), ("--flush-seconds", "-1", "mfcc"),
    ("--text-layers", "99", "text_gold"), ("--layers", "99", "ssl")])
def test_bad_values_are_refused_by_their_own_option_before_work(small_corpus, models, tmp_path, option, value,
                                                                 streams):
    out = tmp_path / "c"
    result = run_cli(*extract_args(small_corpus, out, models, option, value, streams=streams))
    assert result.exit_code == 2, result.output
    assert f"{option} {value}" in result.output or f"{option} {value!r}" in result.output, result.output
    assert not list(out.glob("*/*.h5"))


def test_the_recorded_command_replays_the_same_work(small_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli("-v", "extract", str(small_corpus), "--corpus", "iemocap", "--out", "rel-cache", "--session", "1",
                     "--streams", "mfcc", "--no-progress")
    assert result.exit_code == 0, result.output
    out = tmp_path / "rel-cache"
    (out / "Session1" / "mfcc.h5").unlink()
    verify = run_cli("cache", "verify", str(out))
    assert verify.exit_code == 1
    # -v is not taken for the subcommand; the out path is absolute; defaults, model ids included, are spelled out
    hint = next(line for line in verify.output.splitlines() if "re-extract it:" in line)
    assert f"re-extract it: sercache extract {small_corpus} --corpus iemocap --out {out} --session 1" in hint, hint
    assert "--ssl-model facebook/hubert-large-ls960-ft" in hint and "--mfcc-coefficients 26" in hint
    assert "--no-progress" not in hint and hint.endswith("--overwrite")


@pytest.mark.slow
def test_model_loading_bars_stay_quiet_without_verbose(small_corpus, models, tmp_path):
    import subprocess
    import sys

    args = extract_args(small_corpus, tmp_path / "c", models, "--session", "1", streams="ssl,asr,text_asr")
    proc = subprocess.run([sys.executable, "-m", "sercache", *args], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode == 0, proc.stderr
    assert "Loading weights" not in proc.stderr and "Loading weights" not in proc.stdout


def test_unknown_stream_lists_valid_ones(small_corpus, models, tmp_path):
    result = run_cli(*extract_args(small_corpus, tmp_path / "c", models, streams="ssl,wavlm"))
    assert result.exit_code == 2 and "unknown stream 'wavlm'" in result.output and "text_gold" in result.output


def test_sessions_and_shards(small_corpus, models, tmp_path):
    one = run_cli(*extract_args(small_corpus, tmp_path / "s2", models, "--session", "2", streams="mfcc"))
    assert one.exit_code == 0
    assert sercache.open_cache(tmp_path / "s2").shards == ["Session2"]

    out = tmp_path / "sharded"
    for i in (1, 2):
        assert run_cli(*extract_args(small_corpus, out, models, "--shard", f"{i}/2", streams="mfcc")).exit_code == 0
    cache = sercache.open_cache(out)
    assert len(cache.shards) == 10 and all("-shard" in s for s in cache.shards)
    ids = cache.utterances.groupby("shard").utt_id.apply(set)
    assert sum(len(s) for s in ids) == 80 == len(set().union(*ids))  # disjoint, complete
    first = set(cache.utterances.loc[cache.utterances.shard.str.endswith("shard1of2"), "utt_id"])
    again = tmp_path / "again"
    run_cli(*extract_args(small_corpus, again, models, "--shard", "1/2", streams="mfcc"))
    assert set(sercache.open_cache(again).utterances.utt_id) == first  # deterministic slice
    mixed = run_cli(*extract_args(small_corpus, out, models, streams="mfcc"))
    assert mixed.exit_code == 2 and "already in shard" in mixed.output


def test_bad_audio_is_recorded_and_the_rest_extracted(small_corpus, models, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(small_corpus / "Session1", corpus / "Session1")
    victim = sorted((corpus / "Session1" / "sentences" / "wav").rglob("*.wav"))[3]
    victim.write_bytes(b"this is not audio")
    result = run_cli(*extract_args(corpus, tmp_path / "c", models, streams="ssl,mfcc"))
    assert result.exit_code == 0, result.output
    cache = sercache.open_cache(tmp_path / "c")
    assert victim.stem not in cache.utt_ids("ssl") and len(cache.utt_ids("ssl")) == 15
    err = cache.errors[cache.errors.utt_id == victim.stem]
    assert set(err.stream) == {"", "ssl", "mfcc"} and (err.path == str(victim)).all()
    assert err.reason.str.contains("not readable as audio").all()
    info = run_cli("cache", "info", str(tmp_path / "c"))
    assert victim.stem in info.output and "not readable as audio" in info.output
    strict = run_cli(*extract_args(corpus, tmp_path / "c2", models, "--strict", streams="mfcc"))
    assert strict.exit_code == 1, strict.output
    assert "--strict" in strict.output and victim.stem in strict.output and "not readable as audio" in strict.output


@pytest.mark.slow
def test_killed_extraction_resumes_to_identical_cache(small_corpus, models, tmp_path):
    """SIGKILL mid-run leaves a cache that never reads as complete; rerunning finishes it byte-identically."""
    ref = tmp_path / "ref"
    assert run_cli(*extract_args(small_corpus, ref, models, "--session", "1", streams="ssl")).exit_code == 0
    out = tmp_path / "killed"
    args = [sys.executable, "-m", "sercache", *extract_args(small_corpus, out, models, "--session", "1",
                                                             "--flush-seconds", "0", streams="ssl")]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staging = out / "Session1" / ".staging" / "ssl"
    deadline = time.monotonic() + 120
    while len(list(staging.glob("seg-*.h5"))) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list(staging.glob("seg-*.h5"))) >= 3, "the run ended before it could be interrupted"
    cache = sercache.open_cache(out)
    assert not cache.streams["ssl"].complete and cache.streams["ssl"].in_progress == ["Session1"]
    with pytest.raises(IncompleteStreamError):
        cache.load("ssl", cache.utterances.utt_id.tolist())
    assert run_cli("cache", "verify", str(out)).exit_code == 1
    assert subprocess.run(args, capture_output=True).returncode == 0
    assert_same_stream(out / "Session1" / "ssl.h5", ref / "Session1" / "ssl.h5")
    assert not staging.exists()
    assert run_cli("cache", "verify", str(out)).exit_code == 0


@pytest.mark.parametrize("left", ["segments", "empty folder"])
def test_a_rerun_removes_what_a_kill_after_publishing_left_in_staging(small_corpus, tmp_path, left):
    """A kill after a stream's file is published, before (or while) its staging is removed: the stream is whole,
    and the rerun, which has nothing to extract, removes the leftovers and the then-empty .staging."""
    out = tmp_path / "cache"
    args = ["extract", str(small_corpus), "--corpus", "iemocap", "--out", str(out), "--session", "1", "--streams",
            "mfcc", "--no-progress"]
    assert run_cli(*args).exit_code == 0
    staging = out / "Session1" / ".staging"
    assert not staging.exists()
    (staging / "mfcc").mkdir(parents=True)  # as the kill left it
    if left == "segments":
        (staging / "mfcc" / "seg-000000.h5").write_bytes(b"merged already")
    rerun = run_cli(*args)
    assert rerun.exit_code == 0 and "already complete" in rerun.output, rerun.output
    assert not staging.exists()


def test_provenance_records_local_models_as_absolute_paths(small_corpus, models, tmp_path, monkeypatch):
    monkeypatch.chdir(models["ssl"].parent)
    out = tmp_path / "c"
    result = run_cli("extract", str(small_corpus), "--corpus", "iemocap", "--out", str(out), "--session", "1",
                     "--streams", "ssl", "--ssl-model", models["ssl"].name, "--no-progress")
    assert result.exit_code == 0, result.output
    identity = sercache.open_cache(out).streams["ssl"].provenance["identity"]
    assert identity["model"] == str(models["ssl"].resolve())
    info = run_cli("cache", "info", str(out))
    assert "NaN" not in info.output and " 32.0 " not in info.output
