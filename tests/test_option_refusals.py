"""Contradictory or non-finite options are refused by name before any work (nothing is created)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from sercache.cli import cli

#: A one-task, one-epoch linear probe: today's code would train it.
QUICK = ["--head", "linear", "--audio-stream", "mfcc", "--fold", "1", "--seeds", "1", "--epochs", "1", "--device", "cpu",
         "--no-progress"]


@pytest.mark.parametrize(("options", "expect"), [
    (["--streams", ""], "--streams: no stream given; choose from "),
    (["--streams", " , "], "--streams: no stream given"),
    (["--streams", "mfcc", "--chunk-seconds", "inf"], "--chunk-seconds inf: must be a finite number"),
    (["--streams", "mfcc", "--chunk-overlap", "nan"], "--chunk-overlap nan: must be a finite number"),
    (["--streams", "mfcc", "--stream-name", "mfcc=a", "--stream-name", "mfcc=b"],
     "--stream-name mfcc=a and --stream-name mfcc=b: mfcc is given twice"),
    (["--streams", "mfcc", "--stream-name", "ssl=foo"],
     "--stream-name ssl=foo: no ssl stream is extracted (--streams mfcc); add ssl to --streams"),
])
def test_extract_refuses_before_creating_the_cache(small_corpus, tmp_path, options, expect):
    out = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["extract", str(small_corpus), "--corpus", "iemocap", "--out", str(out),
                                      "--no-progress", *options])
    assert result.exit_code == 2, result.output
    assert f"error: {expect}" in result.output
    assert not out.exists()


@pytest.mark.parametrize(("options", "expect"), [
    (["--lr", "inf"], "--lr': 'inf' is not a finite number"),
    (["--lr", "nan"], "--lr': 'nan' is not a finite number"),
    (["--lr", "1e400"], "--lr': '1e400' is not a finite number"),
    (["--weight-decay", "inf"], "--weight-decay': 'inf' is not a finite number"),
    (["--progress-every", "nan"], "--progress-every': 'nan' is not a finite number"),
    (["--seeds", "1" + "0" * 30], "--seeds"),
    (["--split-seed", "-1"], "--split-seed': -1 is not in the range 0<=x<=4294967295"),
    (["--head", "logreg", "--set", "with_text=true", "--text", "gold", "--text-stream", "text_asr"],
     "--text gold and --text-stream text_asr contradict each other: stream 'text_asr' encodes the asr transcript"),
    (["--head", "logreg", "--set", "with_text=true", "--text", "asr", "--text-stream", "text_gold"],
     "--text asr and --text-stream text_gold contradict each other: stream 'text_gold' encodes the gold transcript"),
])
def test_train_refuses_before_any_work(small_cache, tmp_path, options, expect):
    out = tmp_path / "run"
    args = ["train", str(small_cache), *QUICK, *options, "--out", str(out)]
    if "--head" in options:
        args.remove("linear")
        args.remove("--head")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert expect in result.output
    assert not out.exists()
