"""Reliability: bad input is handled or recorded (never fatal to the rest), and writers never collide."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from click.testing import CliRunner

import sercache
from sercache.cli import cli
from sercache.synthetic.corpus import SynthUtterance, speechlike, write_iemocap_tree
from tests.conftest import extract_args

STREAMS = "ssl,asr,text_asr,text_gold,mfcc"


def _wav(corpus: Path, utt: str) -> Path:
    return corpus / f"Session{int(utt[3:5])}" / "sentences" / "wav" / utt.rsplit("_", 1)[0] / f"{utt}.wav"


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory) -> Path:
    """A Session-1 tree where almost every utterance is a problem case (see CASES)."""
    root = tmp_path_factory.mktemp("bad") / "IEMOCAP"
    ids = [f"Ses01F_impro01_{s}{k:03d}" for k in range(9) for s in "FM"]
    write_iemocap_tree(root, [SynthUtterance(u, ["neu", "sad", "ang", "hap"][i % 4], 1.0, "hello there")
                              for i, u in enumerate(ids)])
    rng = np.random.default_rng(0)
    cases = dict(zip(["missing", "zero_length", "truncated", "not_audio", "nan", "silence", "stereo", "rate_8k",
                      "rate_44k", "rate_48k", "short", "long", "ok1", "ok2"], ids))
    _wav(root, cases["missing"]).unlink()
    sf.write(_wav(root, cases["zero_length"]), np.zeros(0, np.float32), 16000)
    p = _wav(root, cases["truncated"])
    p.write_bytes(p.read_bytes()[:30])
    _wav(root, cases["not_audio"]).write_text("this is not audio\n" * 20)
    x = speechlike("neu", 1.0, rng=rng)
    x[100:120] = np.nan
    x[500] = np.inf
    sf.write(_wav(root, cases["nan"]), x, 16000, subtype="FLOAT")
    sf.write(_wav(root, cases["silence"]), np.zeros(16000, np.float32), 16000)
    sf.write(_wav(root, cases["stereo"]), np.stack([speechlike("ang", 1.0, rng=rng)] * 2, axis=1), 16000)
    for case, rate in (("rate_8k", 8000), ("rate_44k", 44100), ("rate_48k", 48000)):
        sf.write(_wav(root, cases[case]), speechlike("hap", 1.0, sample_rate=rate, rng=rng), rate)
    sf.write(_wav(root, cases["short"]), speechlike("sad", 0.1, rng=rng), 16000)
    sf.write(_wav(root, cases["long"]), speechlike("neu", 120.0, rng=rng), 16000)
    # metadata problems: a non-UTF-8 transcript, a malformed label line, a duplicate id, an unknown code
    eva = root / "Session1" / "dialog" / "EmoEvaluation"
    trans = root / "Session1" / "dialog" / "transcriptions" / "Ses01F_impro01.txt"
    trans.write_bytes(trans.read_bytes().replace(b"hello there", "h\xe9llo there".encode("latin-1"), 1))
    text = (eva / "Ses01F_impro01.txt").read_text().splitlines()
    bad_line = next(i for i, line in enumerate(text) if ids[-1] in line)
    text[bad_line] = text[bad_line].replace("[", "(", 1)  # a broken block header: that block is skipped
    unknown = next(i for i, line in enumerate(text) if ids[-2] in line and line.startswith("["))
    text[unknown] = text[unknown].replace("\tneu\t", "\tzzz\t").replace("\tsad\t", "\tzzz\t").replace(
        "\tang\t", "\tzzz\t").replace("\that\t", "\tzzz\t").replace("\thap\t", "\tzzz\t")
    (eva / "Ses01F_impro01.txt").write_text("\n".join(text) + "\n")
    (eva / "Ses01F_impro02.txt").write_text(
        "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
        f"[1.0000 - 2.0000]\t{cases['ok1']}\tang\t[2.0000, 3.0000, 3.0000]\nC-E1:\tAnger;\t()\n\n")
    root.joinpath("cases.txt").write_text("\n".join(f"{k} {v}" for k, v in cases.items())
                                          + f"\nmalformed {ids[-1]}\nunknown {ids[-2]}\n")
    return root


@pytest.fixture(scope="module")
def bad_extracted(bad_corpus, models, tmp_path_factory) -> tuple[Path, dict[str, str], click.testing.Result]:  # noqa: F821
    out = tmp_path_factory.mktemp("bad-cache") / "cache"
    result = CliRunner().invoke(cli, extract_args(bad_corpus, out, models, "--chunk-seconds", "30", streams=STREAMS),
                                catch_exceptions=False)
    cases = dict(line.split() for line in (bad_corpus / "cases.txt").read_text().splitlines())
    return out, cases, result


def _errors(cache: Path, utt: str) -> pd.DataFrame:
    e = sercache.open_cache(cache).errors
    return e[e.utt_id == utt]


def test_run_succeeds_and_records_without_strict(bad_extracted):
    out, cases, result = bad_extracted
    assert result.exit_code == 0, result.output
    info = CliRunner().invoke(cli, ["cache", "info", str(out), "--errors", "-1"]).output
    for case in ("missing", "zero_length", "truncated", "not_audio", "nan"):
        assert cases[case] in info
    assert "file not found" in info and "NaN/inf" in info


@pytest.mark.parametrize("case,reason", [
    ("missing", "file not found"), ("zero_length", "zero-length"), ("truncated", "not readable as audio"),
    ("not_audio", "not readable as audio"), ("nan", "NaN/inf"),
])
def test_unusable_audio_is_recorded_per_stream_with_path(bad_extracted, bad_corpus, case, reason):
    out, cases, _ = bad_extracted
    utt = cases[case]
    cache = sercache.open_cache(out)
    err = _errors(out, utt)
    for stream in ("ssl", "asr", "mfcc"):
        assert utt not in cache.utt_ids(stream)
        row = err[err.stream == stream]
        assert len(row) == 1 and row.severity.iloc[0] == "error" and reason in row.reason.iloc[0], (stream, err)
        assert row.path.iloc[0] == str(_wav(bad_corpus, utt))
    assert "no ASR transcript" in err[err.stream == "text_asr"].reason.iloc[0]
    assert utt in cache.utt_ids("text_gold")  # the gold transcript needs no audio


@pytest.mark.parametrize("case,seconds", [("stereo", 1.0), ("rate_8k", 1.0), ("rate_44k", 1.0), ("rate_48k", 1.0),
                                          ("short", 0.1), ("long", 120.0), ("silence", 1.0)])
def test_unusual_audio_is_handled(bad_extracted, case, seconds):
    """Downmixed, resampled, chunked or simply encoded: stored with the right frame count."""
    out, cases, _ = bad_extracted
    utt = cases[case]
    cache = sercache.open_cache(out)
    n = int(round(seconds * 16000))
    assert cache.frames("ssl", utt).shape[0] == (n - 400) // 320 + 1
    assert cache.frames("mfcc", utt).shape[0] == 1 + n // 512
    assert utt in cache.utt_ids("asr") and utt in cache.utt_ids("text_asr")
    errors = _errors(out, utt)
    if case == "silence":
        assert set(errors.severity) == {"warning"} and errors.reason.str.contains("silent").all()
    elif case == "long":  # 2 minutes of (random) ASR text outgrow the tiny BERT's 128 positions: noted
        assert (errors.stream == "text_asr").all() and errors.reason.str.contains("truncated").all(), errors
    else:
        assert errors.empty, errors


def test_non_utf8_transcript_is_decoded_and_noted(bad_extracted, bad_corpus):
    out, cases, _ = bad_extracted
    cache = sercache.open_cache(out)
    e = cache.errors[cache.errors.reason.str.contains("not valid UTF-8")]
    assert len(e) == 1 and e.path.iloc[0].endswith("transcriptions/Ses01F_impro01.txt") and e.line.iloc[0] >= 1
    assert (cache.utterances.transcript == "héllo there").sum() == 1


def test_malformed_label_line_duplicate_and_unknown_code(bad_extracted):
    out, cases, _ = bad_extracted
    cache = sercache.open_cache(out)
    e = cache.errors
    malformed = e[e.reason.str.contains("malformed EmoEvaluation line")]
    assert len(malformed) == 1 and malformed.line.iloc[0] > 2 and malformed.path.iloc[0].endswith("Ses01F_impro01.txt")
    assert cases["malformed"] not in set(cache.utterances.utt_id)
    dup = e[e.reason.str.contains("duplicate utterance id")]
    assert dup.utt_id.tolist() == [cases["ok1"]] and dup.path.iloc[0].endswith("Ses01F_impro02.txt")
    unknown = e[e.reason.str.contains("unknown emotion code 'zzz'")]
    assert unknown.utt_id.tolist() == [cases["unknown"]] and unknown.severity.iloc[0] == "warning"
    assert cases["unknown"] in cache.utt_ids("ssl")  # kept and extracted; no preset maps it for training


def test_every_other_utterance_is_extracted(bad_extracted):
    out, cases, _ = bad_extracted
    cache = sercache.open_cache(out)
    bad = {cases[c] for c in ("missing", "zero_length", "truncated", "not_audio", "nan")}
    expected = set(cache.utterances.utt_id) - bad
    for stream in ("ssl", "asr", "mfcc", "text_asr"):
        assert set(cache.utt_ids(stream)) == expected, stream
    assert CliRunner().invoke(cli, ["cache", "verify", str(out)]).exit_code == 0


def test_strict_stops_with_the_reason(bad_corpus, models, tmp_path):
    result = CliRunner().invoke(cli, extract_args(bad_corpus, tmp_path / "c", models, "--strict", streams="mfcc"))
    assert result.exit_code != 0 and "--strict:" in result.output and "Ses01F_impro01_" in result.output


def test_nothing_extractable_exits_non_zero(models, tmp_path):
    root = write_iemocap_tree(tmp_path / "corpus", [SynthUtterance("Ses01F_impro01_F000", "neu", 1.0)])
    _wav(root, "Ses01F_impro01_F000").write_text("broken")
    result = CliRunner().invoke(cli, extract_args(root, tmp_path / "c", models, streams="mfcc"))
    assert result.exit_code == 1 and "nothing could be extracted" in result.output


@pytest.mark.parametrize("option,value,message", [
    ("--ssl-model", "text", "is a 'bert' model, not a speech encoder"),
    ("--asr-model", "ssl", "has no CTC head"),
    ("--asr-model", "text", "is a 'bert' model, neither CTC nor Whisper"),
    ("--asr-language", "de", "--asr-language 'de' applies to Whisper models"),
    ("--layers", "7", "layer 7 is beyond"),
    ("--streams", "ssl,wavlm", "unknown stream 'wavlm'; valid streams: ssl, asr, text_asr, text_gold, mfcc, logmel"),
])
def test_wrong_models_and_options_fail_before_any_work(small_corpus, models, tmp_path, option, value, message):
    args = extract_args(small_corpus, tmp_path / "c", models)
    value = str(models[value]) if value in models else value
    if option in args:
        args[args.index(option) + 1] = value
    else:
        args += [option, value]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "c").exists()  # nothing was written


# ------------------------------------------------------------------------- concurrent writers
WAITER = textwrap.dedent("""
    import os, sys, time
    import torch, transformers  # pay the import cost before the signal, so the lock is tried at once
    import sercache.cli
    go = sys.argv[1]
    while not os.path.exists(go):
        time.sleep(0.02)
    start = time.perf_counter()
    try:
        sercache.cli.cli(sys.argv[2:], standalone_mode=False)
        code = 0
    except SystemExit as exc:
        code = exc.code
    print("ELAPSED", time.perf_counter() - start)
    sys.exit(code)
""")


@pytest.mark.slow
def test_second_writer_on_a_shard_refuses_at_once(small_corpus, models, tmp_path):
    out = tmp_path / "cache"
    args = extract_args(small_corpus, out, models, "--session", "1", "--flush-seconds", "0",
                        streams="ssl,asr,text_asr,text_gold,mfcc,logmel")
    go = tmp_path / "go"
    waiter = subprocess.Popen([sys.executable, "-c", WAITER, str(go), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    first = subprocess.Popen([sys.executable, "-m", "sercache", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    lock = out / "Session1" / ".lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text().strip()):
        time.sleep(0.01)
    go.write_text("go")  # the first writer holds the lock now
    second_out, _ = waiter.communicate(timeout=120)
    # refused at once, not after waiting: the first writer is still at work when the second has given up
    first_still_running = first.poll() is None
    first_out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, first_out
    assert waiter.returncode == 2, second_out
    assert "is being written by another sercache process (pid" in second_out
    assert first_still_running, "the second writer only returned once the first had finished"
    assert CliRunner().invoke(cli, ["cache", "verify", str(out)]).exit_code == 0


@pytest.mark.slow
def test_different_shards_extract_in_parallel(small_corpus, models, tmp_path):
    out = tmp_path / "cache"
    procs = [subprocess.Popen([sys.executable, "-m", "sercache",
                               *extract_args(small_corpus, out, models, "--session", s, streams="ssl,mfcc")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for s in ("1", "2", "3")]
    for p in procs:
        text, _ = p.communicate(timeout=300)
        assert p.returncode == 0, text
    cache = sercache.open_cache(out)
    assert cache.shards == ["Session1", "Session2", "Session3"] and cache.streams["ssl"].complete
    assert set(cache.registry["shards"]) == {"Session1", "Session2", "Session3"}
    assert CliRunner().invoke(cli, ["cache", "verify", str(out)]).exit_code == 0
