"""The stream registry: one entry per kind drives the CLI, ExtractOptions, the runner and predict."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from sercache.extract.options import STREAM_KINDS, ExtractError, ExtractOptions
from sercache.features.streams import Runtime, all_options, build_extractor, kind_of_identity, stream_kinds
from sercache.store.frames import WAV2VEC2_CONV, conv_frames, expected_frames, hop_frames, stft_frames


def test_every_kind_and_flag_reaches_the_cli() -> None:
    from sercache.cli import cli

    help_text = CliRunner().invoke(cli, ["extract", "--help"], terminal_width=200).output
    for kind in stream_kinds():
        assert kind in help_text, kind
    for option in all_options().values():
        if option.flag:
            assert option.flag in help_text, option.flag
    assert STREAM_KINDS[0] == "ssl" and STREAM_KINDS.index("asr") < STREAM_KINDS.index("text_asr")


def test_configs_round_trip_json_and_rebuild_from_the_recorded_identity() -> None:
    opts = ExtractOptions("root", "csv", "out", streams=("mfcc", "logmel", "spectrogram"), n_mfcc=13,
                          stream_names={"logmel": "fbank"})
    configs = opts.stream_configs("fp32")
    assert list(configs) == ["mfcc", "fbank", "spectrogram"]
    for name, config in configs.items():
        again = type(config).from_json(json.loads(json.dumps(config.to_json())))
        assert again == config, name
        ext = build_extractor({"fbank": "logmel"}.get(name, name), config, Runtime())
        ident = json.loads(json.dumps(ext.identity()))
        kind = kind_of_identity(ident)
        rebuilt = kind.build(kind.config.from_json(ident), Runtime())
        assert rebuilt.identity() == ext.identity(), name
    assert configs["mfcc"].n_mfcc == 13


def test_stream_options_stay_keywords_and_attributes() -> None:
    opts = ExtractOptions("r", "csv", "o", ssl_model="/m/hubert", layers="all")
    assert opts.ssl_model == "/m/hubert" and opts.layers == "all" and opts.text_model == "bert-base-uncased"
    with pytest.raises(TypeError, match="unexpected keyword argument 'ssl_modle'"):
        ExtractOptions("r", "csv", "o", ssl_modle="x")
    with pytest.raises(ExtractError, match="--mfcc-coefficients 0: must be 1 to 128"):
        ExtractOptions("r", "csv", "o", n_mfcc=0)
    from sercache.extract.submissions import options_from_json, options_to_json

    assert options_from_json(json.loads(json.dumps(options_to_json(opts)))).ssl_model == "/m/hubert"


def test_one_frame_rule_for_verify_encoders_and_synthetic_caches() -> None:
    from sercache.synthetic.cache import frames_for

    for n in (0, 1, 399, 400, 12_345, 48_000):
        assert expected_frames(WAV2VEC2_CONV, n) == max(1, conv_frames(n, WAV2VEC2_CONV["kernels"],
                                                                       WAV2VEC2_CONV["strides"]))
        assert expected_frames({"kind": "hop", "hop": 320}, n) == hop_frames(n, 320) == max(1, -(-n // 320))
    assert frames_for("ssl", 1.0) == 49 and frames_for("mfcc", 1.0) == stft_frames(16_000, 512) == 32
    assert expected_frames({"kind": "nonsense"}, 100) == -1


def test_options_for_streams_not_extracted_are_named_with_the_one_meant() -> None:
    """--layers is ssl's: with --streams whisper it would store one layer where all were asked for."""
    opts = ExtractOptions("r", "csv", "o", streams=("whisper", "mfcc"), layers="all", asr_language="de",
                          ssl_model="facebook/hubert-base-ls960", whisper_layers="3")
    assert opts.unused_options() == [
        "--ssl-model facebook/hubert-base-ls960: no stream of --streams whisper,mfcc reads it (it is for ssl), so it "
        "is ignored; did you mean --whisper-model?",
        "--layers all: no stream of --streams whisper,mfcc reads it (it is for ssl), so it is ignored; did you mean "
        "--whisper-layers?",
        "--asr-language de: no stream of --streams whisper,mfcc reads it (it is for asr), so it is ignored"]
    # defaults, and options a requested stream reads (text_asr reads the text model), say nothing
    assert ExtractOptions("r", "csv", "o", streams=("asr", "text_asr"), text_model="/m/minilm",
                          asr_language="de").unused_options() == []


def test_extract_warns_of_an_option_no_stream_reads_and_extracts(small_corpus, tmp_path) -> None:
    from sercache.cli import cli

    out = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["extract", str(small_corpus), "--corpus", "iemocap", "--out", str(out),
                                      "--streams", "mfcc", "--session", "1", "--layers", "all", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert ("warning: --layers all: no stream of --streams mfcc reads it (it is for ssl), so it is ignored"
            in result.output)
    assert (out / "sercache.json").exists()
