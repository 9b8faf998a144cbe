"""Long recordings go block by block (bounded memory) and give what the whole-signal path gives.

The thresholds are lowered for the tests so that "long" means seconds, not hours; memory itself is
measured in benchmarks/long_audio_memory.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from sercache.features import audio, longaudio, spectral
from sercache.features.base import AudioItem, pooled_stats
from sercache.features.encoder import RunningStats, blockwise_mean_var
from sercache.features.ssl import SSLExtractor


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_block_resampling_equals_resampling_the_whole(monkeypatch, rate):
    monkeypatch.setattr(longaudio, "BLOCK_SECONDS", 0.1)  # many blocks
    x = np.random.default_rng(rate).standard_normal(int(rate * 1.37)).astype(np.float32)
    whole = audio.resample(x, rate, 16_000)
    out = np.empty(audio.resampled_length(len(x), rate), dtype=np.float32)
    longaudio.resample_blocks(lambda a, b: x[a:b], len(x), rate, 16_000, out)
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-6)
    assert len(whole) == len(resample_poly(x, *(np.array([16_000, rate]) // np.gcd(16_000, rate))))


@pytest.mark.parametrize(("rate", "channels"), [(16_000, 1), (44_100, 2)])
def test_a_long_file_reads_as_the_same_samples(tmp_path, monkeypatch, rate, channels):
    x = 0.3 * np.random.default_rng(1).standard_normal((int(rate * 2.5), channels)).astype(np.float32)
    path = tmp_path / "a.wav"
    sf.write(path, x, rate, subtype="FLOAT")
    short = audio.load_audio(path)
    monkeypatch.setattr(audio, "LONG_AUDIO_SECONDS", 0.5)
    monkeypatch.setattr(longaudio, "BLOCK_SECONDS", 0.3)
    long = audio.load_audio(path)
    np.testing.assert_allclose(long.samples, short.samples, rtol=0, atol=1e-6)
    assert long.samples.dtype == np.float32 and long.notes == short.notes


def test_a_long_file_with_nan_is_refused_by_name_of_the_span(tmp_path, monkeypatch):
    x = np.zeros(16_000 * 3, dtype=np.float32)
    x[40_000] = np.nan
    sf.write(tmp_path / "a.wav", x, 16_000, subtype="FLOAT")
    monkeypatch.setattr(audio, "LONG_AUDIO_SECONDS", 0.5)
    with pytest.raises(audio.AudioError, match="NaN/inf"):
        audio.load_audio(tmp_path / "a.wav")


@pytest.mark.parametrize("kind", spectral.SPECTRAL_KINDS)
def test_long_spectral_features_equal_the_whole_signal_path(monkeypatch, kind):
    y = (0.2 * np.random.default_rng(2).standard_normal(16_000 * 7)).astype(np.float32)
    ext = spectral.SpectralExtractor(kind)
    whole = ext.extract([AudioItem("u", "", y)]).records[0]
    monkeypatch.setattr(spectral, "LONG_SIGNAL", 16_000)
    blocks = spectral.power_blocks
    monkeypatch.setattr(spectral, "power_blocks", lambda *a, **k: blocks(*a, **{**k, "block": 37}))
    long = ext.extract([AudioItem("u", "", y)]).records[0]
    assert long.frames["layer_0"].shape == whole.frames["layer_0"].shape
    np.testing.assert_allclose(long.frames["layer_0"], whole.frames["layer_0"], rtol=1e-5, atol=1e-4)
    for key in ("pooled_mean", "pooled_std"):
        np.testing.assert_allclose(long.per_utterance[key], whole.per_utterance[key], rtol=1e-5, atol=1e-5)


def test_blockwise_statistics_equal_the_whole():
    x = np.random.default_rng(3).standard_normal((70_001, 5)).astype(np.float32) * 3 + 1
    mean, std = spectral.frame_stats(x, block=4096)
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(0), rtol=1e-10)
    np.testing.assert_allclose(std, x.astype(np.float64).std(0), rtol=1e-10)
    m, v = blockwise_mean_var(x[:, 0], block=1000)
    np.testing.assert_allclose([m, v], [x[:, 0].astype(np.float64).mean(), x[:, 0].astype(np.float64).var()],
                               rtol=1e-10)
    stats = RunningStats()
    t = torch.from_numpy(x)
    for i in range(0, len(x), 9999):
        stats.update([t[i: i + 9999], 2 * t[i: i + 9999]])
    got_mean, got_std = stats.result(np.float64)
    want_mean, want_std = pooled_stats(torch.stack([t, 2 * t]), np.float64)
    np.testing.assert_allclose(got_mean, want_mean, rtol=1e-5)
    np.testing.assert_allclose(got_std, want_std, rtol=1e-5)


def test_a_long_utterance_keeps_only_the_stored_layers_and_merges_the_statistics(models):
    wave = (0.1 * np.random.default_rng(4).standard_normal(16_000 * 25)).astype(np.float32)
    chunked = SSLExtractor(str(models["ssl"]), "1", dtype="float32", chunk_seconds=8.0, overlap_seconds=2.0)
    record = chunked.extract([AudioItem("long", "", wave)]).records[0]
    assert set(record.frames) == {"layer_1"}
    # the statistics of every layer are those of the stitched frames, whichever layers are stored
    everything = chunked.encoder.encode_long(wave)
    mean, std = pooled_stats(torch.stack(everything), np.float32)
    np.testing.assert_allclose(record.per_utterance["pooled_mean"], mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(record.per_utterance["pooled_std"], std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(record.frames["layer_1"], everything[1].numpy(), rtol=0, atol=1e-6)
