"""The ``whisper`` stream: a tiny random Whisper (saved with save_pretrained) through the real CLI path.

The tiny model's window is 2 s (max_source_positions 100, feature extractor chunk_length 2), so
chunking and stitching run on short test audio exactly as they do beyond 30 s on a real model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from sercache.features.base import AudioItem  # noqa: E402
from sercache.features.streams import Runtime, build_extractor, kind_of_identity  # noqa: E402
from sercache.features.streams.whisper import WhisperStreamConfig  # noqa: E402

SR = 16_000


@pytest.fixture(scope="module")
def whisper_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny-whisper"
    cfg = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_source_positions=100, max_target_positions=16, dropout=0.0, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    WhisperModel(cfg).eval().save_pretrained(path)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(path)
    return path


def extractor(model: Path, **kw):  # noqa: ANN201 - WhisperExtractor
    cfg = WhisperStreamConfig(model=str(model), dtype="float32", chunk_seconds=2.0, overlap_seconds=0.5, **kw)
    return build_extractor("whisper", cfg, Runtime("cpu", 0.0))


def wave(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def test_extract_and_verify_through_the_cli(small_corpus, whisper_model, tmp_path):
    from click.testing import CliRunner

    from sercache.cli import cli
    from sercache.store import open_cache

    out = tmp_path / "cache"
    args = ["extract", str(small_corpus), "--corpus", "iemocap", "--out", str(out), "--session", "1", "--streams",
            "whisper", "--whisper-model", str(whisper_model), "--whisper-layers", "all", "--chunk-seconds", "2",
            "--chunk-overlap", "0.5", "--no-progress"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    verify = CliRunner().invoke(cli, ["cache", "verify", str(out)])
    assert verify.exit_code == 0, verify.output
    with open_cache(out) as cache:
        info = cache.streams["whisper"]
        assert info.layers == [0, 1, 2] and info.frame_rate == 50.0
        u = cache.utt_ids("whisper")[0]
        n = int(cache.per_utterance("whisper", "n_samples", [u])[0])
        assert cache.frames("whisper", u, 2).shape == (-(-n // 320), 16)
        assert kind_of_identity(info.provenance["identity"]).name == "whisper"
    rerun = CliRunner().invoke(cli, args, catch_exceptions=False)  # same settings: already complete
    assert rerun.exit_code == 0 and "already complete" in rerun.output


def test_frame_counts_follow_the_store_rule(whisper_model, tmp_path):
    from sercache.store.frames import expected_frames

    ext = extractor(whisper_model)
    rule = ext.stream_attrs()["frame_rule"]
    for n in (1, 319, 320, 321, 16_000, 31_999, 32_000):
        rec = ext.extract([AudioItem("u", "", wave(n / SR))]).records[0]
        assert rec.frames["layer_2"].shape[0] == expected_frames(rule, n) == -(-n // 320), n


def test_long_audio_is_chunked_and_stitched(whisper_model):
    ext = extractor(whisper_model, layers="all")
    y = wave(5.3, seed=1)
    rec = ext.extract([AudioItem("long", "", y)]).records[0]
    assert rec.frames["layer_2"].shape == (-(-len(y) // 320), 16)
    # frames of the first chunk's kept part are exactly that chunk's own (trimmed) frames
    first = ext.forward([y[: 2 * SR]])[0]
    np.testing.assert_allclose(rec.frames["layer_2"][:40], first[2][:40].numpy(), atol=1e-6)
    # pooled statistics cover every stitched frame of every layer
    stacked = np.stack([rec.frames[f"layer_{k}"] for k in (0, 1, 2)])
    np.testing.assert_allclose(rec.per_utterance["pooled_mean"], stacked.mean(1), atol=1e-5)


def test_full_window_trimming_against_the_unpadded_forward(whisper_model):
    """``--whisper-window full``: Whisper refuses unpadded input, so the unpadded forward is run through the encoder's modules.

    Before attention (hidden state 0: conv front end + positions) the kept frames equal the unpadded
    ones except the last, whose conv window reaches into the padding. After attention they differ:
    every kept frame attended to the padding too. Measured on this tiny random model (1.2 s in a
    2 s window): max abs difference of the last hidden state 0.010 (printed by the test).
    """
    from transformers import WhisperModel

    ext = extractor(whisper_model, layers="all", window="full")
    enc = WhisperModel.from_pretrained(whisper_model).get_encoder().eval()
    y = wave(1.2, seed=2)
    mel = ext.fe([y], sampling_rate=SR, return_tensors="pt").input_features
    real = -(-len(y) // 160)  # mel frames of real audio
    with pytest.raises(ValueError, match="expects the mel input features to be of length"):
        enc(mel[..., :real])
    with torch.inference_mode():
        x = torch.nn.functional.gelu(enc.conv2(torch.nn.functional.gelu(enc.conv1(mel[..., :real])))).permute(0, 2, 1)
        unpadded = [x + enc.embed_positions.weight[: x.shape[1]]]
        for layer in enc.layers:
            unpadded.append(layer(unpadded[-1], None))
        unpadded[-1] = enc.layer_norm(unpadded[-1])
    trimmed = ext.forward([y])[0]
    assert trimmed[0].shape[0] == unpadded[0].shape[1] == -(-len(y) // 320)
    torch.testing.assert_close(trimmed[0][:-1], unpadded[0][0, :-1], atol=1e-5, rtol=1e-5)
    diff = float((trimmed[-1] - unpadded[-1][0]).abs().max())
    print(f"whisper trimmed vs unpadded, last hidden state: max abs diff {diff:.3g}")
    assert 0 < diff < 10  # the padding is seen through attention, and the outputs stay comparable
    audio = extractor(whisper_model, layers="all").forward([y])[0]  # the default: only the real audio
    for k, state in enumerate(unpadded):
        torch.testing.assert_close(audio[k], state[0], atol=1e-5, rtol=1e-5)


def test_audio_window_at_the_window_length_is_the_encoders_own_forward(whisper_model):
    """A clip exactly as long as the window: the audio mode's own forward equals WhisperEncoder.forward, state by state."""
    full, audio = extractor(whisper_model, window="full"), extractor(whisper_model)
    y = wave(2.0, seed=3)
    for a, b in zip(full.forward([y])[0], audio.forward([y])[0], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_audio_window_log_mel_is_the_full_windows_cut_to_the_audio(whisper_model):
    full, audio = extractor(whisper_model, window="full"), extractor(whisper_model)
    waves = [wave(s, seed=4) for s in (1.37, 0.21, 2.0)]
    counts = [-(-len(w) // 320) for w in waves]
    window_mel = full.log_mel(waves, counts)
    mel = audio.log_mel(waves, counts)
    assert mel.shape[-1] >= 2 * max(counts) and mel.shape[-1] <= window_mel.shape[-1]
    for i, n in enumerate(counts):
        torch.testing.assert_close(mel[i, :, : 2 * n], window_mel[i, :, : 2 * n], atol=1e-6, rtol=0)


def test_batched_clips_of_different_lengths_equal_each_clip_alone(whisper_model):
    """Zeroed mel beyond each clip and a key mask: batching is exact, so the CPU may batch by length."""
    ext = extractor(whisper_model, layers="all")
    waves = [wave(s, seed=5 + i) for i, s in enumerate((1.9, 1.1, 0.33))]
    together = ext.forward(waves)
    for w, batched in zip(waves, together, strict=True):
        alone = ext.forward([w])[0]
        assert batched[0].shape[0] == -(-len(w) // 320)
        for a, b in zip(batched, alone, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # so the CPU batches by default in audio mode (the runtime's batch budget unset); full mode gains nothing from it
    on_cpu = {w: build_extractor("whisper", WhisperStreamConfig(model=str(whisper_model), window=w, chunk_seconds=2.0,
                                                                 overlap_seconds=0.5), Runtime("cpu")).batch_policy()
              for w in ("audio", "full")}
    assert on_cpu["audio"].max_items > 1 and on_cpu["audio"].budget_seconds > 0 and on_cpu["full"].max_items == 1


def test_window_mode_is_recorded_and_old_streams_mean_full(whisper_model):
    from sercache.features.rebuild import extractor_for
    from sercache.features.streams import stream_kinds

    audio, full = extractor(whisper_model), extractor(whisper_model, window="full")
    assert audio.identity()["window"] == "audio" and full.identity()["window"] == "full"
    y = wave(0.8, seed=9)
    diff = float((audio.forward([y])[0][-1] - full.forward([y])[0][-1]).abs().max())
    assert diff > 1e-4  # the modes give different features: a stream records which
    # a stream recorded before --whisper-window existed was made at the full window, and rebuilds so
    old = {k: v for k, v in full.identity().items() if k != "window"}
    assert extractor_for("whisper", {"identity": old}).identity()["window"] == "full"
    assert stream_kinds()["whisper"].completed(old) == full.identity()
    with pytest.raises(ValueError, match="--whisper-window 'short': use one of audio, full"):
        extractor(whisper_model, window="short")


@pytest.mark.parametrize("window", ["audio", "full"])
def test_rebuilt_from_recorded_provenance(whisper_model, window):
    from sercache.features.rebuild import extractor_for

    ext = extractor(whisper_model, layers="1", window=window)
    rebuilt = extractor_for("whisper", ext.provenance())
    assert rebuilt.identity() == ext.identity() and rebuilt.c.window == window


def test_chunk_longer_than_the_window_is_refused(whisper_model):
    with pytest.raises(ValueError, match="encodes at most 2 s at once"):
        build_extractor("whisper", WhisperStreamConfig(model=str(whisper_model), chunk_seconds=3.0,
                                                       overlap_seconds=0.5), Runtime())


@pytest.fixture(scope="module")
def whisper_cache(small_corpus, whisper_model, tmp_path_factory) -> Path:
    """Sessions 1-3 of the small corpus through the whisper stream's default (audio) window."""
    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract

    out = tmp_path_factory.mktemp("whisper-cache") / "cache"
    report = run_extract(ExtractOptions(small_corpus, "iemocap", out, sessions=["1", "2", "3"], streams=("whisper",),
                                        whisper_model=str(whisper_model), whisper_layers="all", dtype="float32",
                                        chunk_seconds=2.0, chunk_overlap=0.5, device="cpu", progress=False))
    assert report.failed == 0 and report.stored == 48
    return out


def test_predict_recomputes_the_audio_window_features_it_trained_on(whisper_cache, tmp_path):
    """predict rebuilds the stream from its provenance, window mode included: the saved test logits come back."""
    import pandas as pd

    from sercache.runs.predict import Predictor
    from sercache.runs.predict_inputs import Source
    from sercache.store import open_cache
    from sercache.training.run import TrainRequest, run_training

    torch.set_num_threads(1)
    run, results = run_training(TrainRequest(cache=whisper_cache, head="linear", out=tmp_path / "run", fold="1",
                                             streams={"audio": "whisper"}, seeds=1, device="cpu",
                                             train={"lr": 2e-2, "epochs": 3}), progress=lambda m: None)
    assert all(r["ok"] for r in results), results
    saved = pd.read_csv(run / "loso-1" / "seed0" / "predictions.csv")
    with open_cache(whisper_cache) as cache:
        rows = cache.utterances.set_index("utt_id").loc[saved.utt_id]
    pred = Predictor(run, fold="1", device="cpu").predict_sources([Source(p, Path(p), t)
                                                                    for p, t in zip(rows.path, rows.transcript)])
    np.testing.assert_allclose(pred.logits["loso-1/seed0"], saved.filter(like="logit_").to_numpy(), atol=1e-4, rtol=0)


def test_cli_window_option_verify_and_the_cluster_check(small_corpus, whisper_model, whisper_cache, tmp_path):
    from click.testing import CliRunner

    from sercache.cli import cli
    from sercache.extract.cluster import check_before_submitting
    from sercache.extract.options import ExtractOptions
    from sercache.features.models import ModelError

    verify = CliRunner().invoke(cli, ["cache", "verify", str(whisper_cache)])
    assert verify.exit_code == 0, verify.output
    # a window mode this sercache does not know (a newer version's, or a tampered record) is reported by verify
    import json
    import shutil

    import h5py

    copy = shutil.copytree(whisper_cache, tmp_path / "copy")
    with h5py.File(copy / "Session1" / "whisper.h5", "r+") as f:
        prov = json.loads(f.attrs["provenance"])
        prov["identity"]["window"] = "short"
        f.attrs["provenance"] = json.dumps(prov)
    verify = CliRunner().invoke(cli, ["cache", "verify", str(copy), "--stream", "whisper"])
    assert verify.exit_code != 0 and "records --whisper-window 'short'" in verify.output, verify.output
    base = ["extract", str(small_corpus), "--corpus", "iemocap", "--out", str(tmp_path / "c"), "--session", "1",
            "--streams", "whisper", "--whisper-model", str(whisper_model), "--chunk-seconds", "2", "--chunk-overlap",
            "0.5", "--no-progress"]
    bad = CliRunner().invoke(cli, [*base, "--whisper-window", "30s"])
    assert bad.exit_code == 2 and "--whisper-window 30s: must be audio or full" in bad.output, bad.output
    assert not (tmp_path / "c").exists()  # refused before any work
    # the cluster's pre-submission check builds every stream as its tasks will: a non-Whisper model is refused there
    opts = ExtractOptions(small_corpus, "iemocap", tmp_path / "d", streams=("whisper",), whisper_model=str(small_corpus))
    with pytest.raises(ModelError, match="--whisper-model"):
        check_before_submitting(opts)
    check_before_submitting(ExtractOptions(small_corpus, "iemocap", tmp_path / "d", streams=("whisper",),
                                           whisper_model=str(whisper_model), whisper_window="full",
                                           chunk_seconds=2.0, chunk_overlap=0.5))
    assert not (tmp_path / "d").exists()
