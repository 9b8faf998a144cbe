"""Contradictory or non-finite options are refused by name before any work (nothing is created)."""
from __future__ import annotations

import json

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
    (["--head", "linear", "--set", "with_text=true", "--text", "gold", "--text-stream", "text_asr"],
     "--text gold and --text-stream text_asr contradict each other: stream 'text_asr' encodes the asr transcript"),
    (["--head", "linear", "--set", "with_text=true", "--text", "asr", "--text-stream", "text_gold"],
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


#: (train options, the refusal): an option for a role the head does not read would change nothing, so the run
#: would train on other features than the user believes (apcnn reads mfcc whatever --audio-stream says).
IGNORED = [
    (["--head", "apcnn", "--audio-stream", "ssl"],
     "--audio-stream ssl: head 'apcnn' reads no 'audio' stream (it reads mfcc), so the option would be ignored; "
     "drop the option, or choose a head that reads it"),
    (["--head", "apcnn", "--layer", "2"], "--layer 2: head 'apcnn' reads no 'audio' stream (it reads mfcc)"),
    (["--head", "linear", "--audio-stream", "mfcc", "--text", "gold"],
     "--text gold: head 'linear' reads no 'text' stream (it reads audio), so the option would be ignored; "
     "--set with_text=true makes it read one"),
    (["--head", "logreg", "--audio-stream", "mfcc", "--text-stream", "text_gold", "--text-layer", "0"],
     "--text-stream text_gold and --text-layer 0: head 'logreg' reads no 'text' stream"),
    (["--head", "wsum", "--audio-stream", "ssl", "--text", "asr"], "--text asr: head 'wsum' reads no 'text' stream"),
    (["--head", "mmer", "--audio-stream", "ssl", "--text-aug-stream", "text_gold"],
     "--text-aug-stream text_gold: head 'mmer' reads no 'text_aug' stream (it reads audio, text), so the option "
     "would be ignored; --set augmented_text=true makes it read one"),
    (["--head", "wsum", "--audio-stream", "ssl", "--layer", "2"],
     "--layer 2: this head weights every stored layer of its 'audio' stream itself; drop the option"),
]


@pytest.mark.parametrize(("options", "expect"), IGNORED)
def test_train_refuses_options_for_roles_the_head_does_not_read(small_cache, tmp_path, options, expect):
    out = tmp_path / "run"
    args = ["train", str(small_cache), *options, "--fold", "1", "--seeds", "1", "--device", "cpu", "--no-progress",
            "--out", str(out)]  # (refused before any training: no --epochs, which svm and logreg would refuse)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert expect in " ".join(result.output.split())  # the message is one line; click may wrap nothing else
    assert not out.exists()


def test_the_same_options_train_when_the_head_reads_the_role(small_cache, tmp_path):
    """The refusals are about the head, not the options: a head that reads text takes --text gold."""
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(small_cache), *QUICK, "--text", "gold", "--set", "with_text=true",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["roles"]["text"]["stream"] == "text_gold"


def test_a_sweep_gives_each_head_only_the_options_of_the_roles_it_reads(small_cache, tmp_path):
    from sercache.sweep import SweepRequest, expand
    from sercache.training.run import TrainRequest

    base = TrainRequest(cache=small_cache, head="linear", streams={"audio": "ssl", "text": "text_gold"}, text="gold")
    requests = {r.out.name: r for r in expand(SweepRequest(cache=small_cache, heads=["linear", "gate", "apcnn"],
                                                             out=tmp_path, layers=[1, 2], base=base))}
    assert sorted(requests) == ["apcnn", "gate-layer1", "gate-layer2", "linear-layer1", "linear-layer2"]
    assert requests["linear-layer1"].streams == {"audio": "ssl"} and requests["linear-layer1"].text is None
    assert requests["gate-layer2"].streams == {"audio": "ssl", "text": "text_gold"}
    assert requests["gate-layer2"].text == "gold" and requests["gate-layer2"].layers["audio"] == 2
    assert requests["apcnn"].streams == {} and requests["apcnn"].layers.get("audio") is None

    with pytest.raises(Exception, match="--text gold: head 'linear or wsum' reads no 'text' stream"):
        expand(SweepRequest(cache=small_cache, heads=["linear", "wsum"], out=tmp_path, base=base))


@pytest.mark.parametrize("head", ["logreg", "svm"])
def test_closed_form_heads_refuse_optimiser_settings(small_cache, tmp_path, head):
    """svm and logreg choose C (and gamma) on validation: --lr, --epochs... would be ignored in silence."""
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["train", str(small_cache), "--head", head, "--audio-stream", "mfcc", "--fold", "1",
                                      "--lr", "0.1", "--epochs", "3", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert (f"--epochs 3 and --lr 0.1: head {head!r} is fitted in closed form (the regularisation chosen on the "
            "validation set), with no optimiser to take them; drop them") in " ".join(result.output.split())
    assert not out.exists()


def test_a_sweep_gives_optimiser_settings_to_the_heads_with_an_optimiser(small_cache, tmp_path):
    from sercache.sweep import SweepRequest, expand
    from sercache.training.run import RunError, TrainRequest

    base = TrainRequest(cache=small_cache, head="linear", streams={"audio": "mfcc"}, train={"epochs": 3, "lr": None})
    requests = {r.head: r for r in expand(SweepRequest(cache=small_cache, heads=["linear", "logreg"], out=tmp_path,
                                                         base=base))}
    assert requests["linear"].train == {"epochs": 3, "lr": None} and requests["logreg"].train == {}
    with pytest.raises(RunError, match="--epochs 3: heads logreg and svm are fitted in closed form"):
        expand(SweepRequest(cache=small_cache, heads=["logreg", "svm"], out=tmp_path, base=base))
