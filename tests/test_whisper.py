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


def test_trimming_against_the_unpadded_forward(whisper_model):
    """Whisper refuses unpadded input, so the unpadded forward is run through the encoder's own modules.

    Before attention (hidden state 0: conv front end + positions) the kept frames equal the unpadded
    ones except the last, whose conv window reaches into the padding. After attention they differ:
    every kept frame attended to the padding too. Measured on this tiny random model (1.2 s in a
    2 s window): max abs difference of the last hidden state 0.010 (printed by the test).
    """
    from transformers import WhisperModel

    ext = extractor(whisper_model, layers="all")
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


def test_rebuilt_from_recorded_provenance(whisper_model):
    from sercache.features.rebuild import extractor_for

    ext = extractor(whisper_model, layers="1")
    rebuilt = extractor_for("whisper", ext.provenance())
    assert rebuilt.identity() == ext.identity()


def test_chunk_longer_than_the_window_is_refused(whisper_model):
    with pytest.raises(ValueError, match="encodes at most 2 s at once"):
        build_extractor("whisper", WhisperStreamConfig(model=str(whisper_model), chunk_seconds=3.0,
                                                       overlap_seconds=0.5), Runtime())
