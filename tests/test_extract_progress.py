"""What an extraction tells its user on the way: the order streams run in, what `-v` logs, and what
`cache info` shows of a stream still in progress (its staged, not yet merged, utterances)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from sercache.cli import cli
from sercache.extract.options import ExtractOptions
from sercache.features.streams import run_order
from sercache.store.manifest import write_manifest
from sercache.store.records import ExtractionProblem
from sercache.store.staging import stream_progress
from tests.test_store import make_record, manifest, write_stream


def test_streams_run_in_the_order_given_a_stream_after_the_one_it_reads():
    assert run_order(("mfcc", "ssl")) == ("mfcc", "ssl")
    assert run_order(("text_asr", "egemaps", "asr")) == ("asr", "text_asr", "egemaps")
    assert ExtractOptions("r", "csv", "o", streams=("egemaps", "whisper", "ssl")).streams == ("egemaps", "whisper", "ssl")
    assert ExtractOptions("r", "csv", "o", streams=("text_asr", "mfcc", "asr")).streams == ("asr", "text_asr", "mfcc")
    help_text = CliRunner().invoke(cli, ["extract", "--help"], terminal_width=200).output
    assert "run in this order" in help_text


def test_cache_info_counts_the_staged_utterances_of_a_stream_in_progress(tmp_path):
    rng = np.random.default_rng(0)
    s1, s2 = ["a0", "a1"], ["b0", "b1", "b2", "b3"]
    write_manifest(tmp_path, "S1", manifest(s1, "S1"), [], {})
    write_manifest(tmp_path, "S2", manifest(s2, "S2", seed=1), [], {})
    write_stream(tmp_path, "S1", [make_record(u, 3, rng) for u in s1], s1)  # finished
    failed = [ExtractionProblem("b3", "/audio/b3.wav", "audio", "not readable as audio")]
    write_stream(tmp_path, "S2", [make_record(u, 3, rng) for u in s2[:2]], s2, problems=failed, finalize=False)
    write_stream(tmp_path, "S1", [make_record("a0", 3, rng)], s1, stream="wavlm", finalize=False)  # only staged

    progress = stream_progress(tmp_path)
    ssl, wavlm = progress["ssl"], progress["wavlm"]
    assert (ssl.stored, ssl.finished_shards, ssl.staged, ssl.staged_shards, ssl.staged_failed) == (2, ["S1"], 2,
                                                                                                   ["S2"], 1)
    assert (wavlm.stored, wavlm.staged, wavlm.kept) == (0, 1, 1) and wavlm.staged_bytes > 0

    summary = json.loads(CliRunner().invoke(cli, ["cache", "info", str(tmp_path), "--json"]).output)
    streams = {s["stream"]: s for s in summary["streams"]}
    assert (streams["ssl"]["stored"], streams["ssl"]["staged"]) == (2, 2)
    assert (streams["wavlm"]["stored"], streams["wavlm"]["staged"]) == (0, 1)
    text = CliRunner().invoke(cli, ["cache", "info", str(tmp_path)]).output
    header = next(line for line in text.splitlines() if line.lstrip().startswith("stream "))
    assert "staged" in header.split()
    assert "ssl: 2 more utterances extracted in unfinished shards" in text
    assert "wavlm: 1 more utterances extracted in unfinished shards" in text


def write_csv_corpus(root: Path) -> Path:
    """Three clips, one of them not audio at all."""
    root.mkdir()
    rng = np.random.default_rng(1)
    for name in ("one", "two"):
        sf.write(root / f"{name}.wav", (0.1 * rng.standard_normal(8000)).astype("float32"), 16000)
    (root / "broken.wav").write_bytes(b"this is no wav file")
    (root / "manifest.csv").write_text("utt_id,path,label\none,one.wav,neu\ntwo,two.wav,ang\nbroken,broken.wav,sad\n")
    return root


def test_verbose_extract_logs_models_stream_timing_and_skipped_utterances_in_the_order_given(models, tmp_path):
    root = write_csv_corpus(tmp_path / "corpus")
    out = tmp_path / "cache"
    proc = subprocess.run([sys.executable, "-m", "sercache", "-v", "extract", str(root), "--corpus", "csv", "--out",
                           str(out), "--streams", "mfcc,ssl", "--ssl-model", str(models["ssl"]), "--no-progress"],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    log = [line for line in proc.stderr.splitlines() if line.startswith("INFO sercache")]
    said = "\n".join(log)
    assert "streams, in the order they run: mfcc, ssl" in said
    assert "read csv corpus" in said and "3 utterances" in said
    assert f"loaded {models['ssl']} (HubertModel" in said
    assert "all/ssl: broken skipped in audio: not readable as audio" in said
    starts = [i for i, line in enumerate(log) if "utterances to extract" in line]
    assert [log[i].split(": ")[1].split(":")[0] for i in starts] == ["all/mfcc", "all/ssl"]  # mfcc first, as asked
    assert sum("all/mfcc: 2 stored, 1 failed" in line for line in log) == 1
    assert sum("all/ssl: 2 stored, 1 failed" in line and "audio-s/s" in line for line in log) == 1
    table = proc.stdout.splitlines()
    assert [line.split()[1] for line in table[1:3]] == ["mfcc", "ssl"]
    quiet = subprocess.run([sys.executable, "-m", "sercache", "extract", str(root), "--corpus", "csv", "--out",
                            str(out), "--streams", "mfcc,ssl", "--ssl-model", str(models["ssl"]), "--no-progress"],
                           capture_output=True, text=True)
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr and "already complete" in quiet.stdout
