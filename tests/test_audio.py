"""sercache.features.audio: decoding, downmixing, resampling and the reasons a file is refused."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sercache.features.audio import TARGET_RATE, AudioError, load_audio, probe_audio, resample, resampled_length


def write(path: Path, data: np.ndarray, rate: int, subtype: str) -> Path:
    sf.write(str(path), data, rate, subtype=subtype)
    return path


def sine(freq: float, seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def pcm16_noise(n: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    data = np.random.default_rng(seed).integers(-20000, 20000, size=(n, channels), dtype=np.int16)
    return data[:, 0] if channels == 1 else data


# ----------------------------------------------------------------------------- reading


def test_pcm16_mono_16k_is_read_unchanged(tmp_path):
    ints = pcm16_noise(1600)
    f = write(tmp_path / "a.wav", ints, 16_000, "PCM_16")
    audio = load_audio(f)
    assert audio.sample_rate == TARGET_RATE == 16_000
    assert audio.samples.dtype == np.float32 and audio.samples.shape == (1600,)
    np.testing.assert_array_equal(audio.samples, ints.astype(np.float32) / 32768)
    assert audio.notes == []


def test_float_wav_is_read_exactly(tmp_path):
    x = np.linspace(-0.9, 0.9, 3200, dtype=np.float32)
    f = write(tmp_path / "f.wav", x, 16_000, "FLOAT")
    assert sf.info(str(f)).subtype == "FLOAT"
    audio = load_audio(f)
    np.testing.assert_array_equal(audio.samples, x)
    assert audio.notes == []


def test_stereo_is_downmixed_to_channel_mean(tmp_path):
    ints = pcm16_noise(800, channels=2, seed=1)
    f = write(tmp_path / "s.wav", ints, 16_000, "PCM_16")
    audio = load_audio(f)
    expected = (ints[:, 0].astype(np.float32) / 32768 + ints[:, 1].astype(np.float32) / 32768) / 2
    assert audio.samples.shape == (800,)
    np.testing.assert_array_equal(audio.samples, expected)
    assert audio.notes == ["downmixed 2 channels"]


def test_four_channels_downmix(tmp_path):
    x = np.stack([np.full(400, v, dtype=np.float32) for v in (0.1, 0.2, 0.3, 0.6)], axis=1)
    audio = load_audio(write(tmp_path / "q.wav", x, 16_000, "FLOAT"))
    np.testing.assert_allclose(audio.samples, np.full(400, 0.3, dtype=np.float32), rtol=1e-6)
    assert audio.notes == ["downmixed 4 channels"]


@pytest.mark.parametrize("rate", [8_000, 22_050, 44_100, 48_000])
@pytest.mark.parametrize("freq", [440.0, 3000.0])
def test_resampled_to_16k_keeps_length_and_frequency(tmp_path, rate, freq):
    x = sine(freq, 1.0, rate)
    f = write(tmp_path / f"{rate}.wav", x, rate, "FLOAT")
    audio = load_audio(f)
    assert audio.sample_rate == 16_000
    assert len(audio.samples) == resampled_length(len(x), rate) == 16_000
    assert audio.samples.dtype == np.float32
    assert audio.notes == [f"resampled {rate}->16000 Hz"]
    assert abs(peak_hz(audio.samples, 16_000) - freq) <= 1.0
    # Gain is kept: the middle of the file has the sine's RMS (edges carry filter transients).
    mid = audio.samples[2000:-2000]
    assert np.sqrt(np.mean(mid ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


def test_resampled_odd_length_stereo_pcm16(tmp_path):
    n = 44_100 // 3 + 7  # not a whole number of output samples
    x = np.stack([sine(1000, n / 44_100, 44_100), sine(1000, n / 44_100, 44_100)], axis=1)
    f = write(tmp_path / "o.wav", x, 44_100, "PCM_16")
    audio = load_audio(f)
    assert len(x) == n
    assert len(audio.samples) == resampled_length(n, 44_100) == -(-n * 160 // 441)
    assert audio.notes == ["downmixed 2 channels", "resampled 44100->16000 Hz"]
    assert abs(peak_hz(audio.samples, 16_000) - 1000) <= 16_000 / len(audio.samples)


def test_resampled_length_matches_resample_for_many_lengths():
    for rate in (8_000, 11_025, 22_050, 32_000, 44_100, 48_000):
        for n in (1, 2, 3, 440, 441, 442, 1000, 4_410 * 3 + 7):
            assert len(resample(np.ones(n, np.float32), rate, 16_000)) == resampled_length(n, rate), (rate, n)
    assert resampled_length(12345, 16_000) == 12345
    assert resampled_length(44_100, 44_100) == 16_000
    assert resampled_length(3, 48_000) == 1 and resampled_length(4, 48_000) == 2


def test_other_target_rate(tmp_path):
    f = write(tmp_path / "a.wav", sine(440, 0.5, 16_000), 16_000, "FLOAT")
    audio = load_audio(f, target_rate=24_000)
    assert audio.sample_rate == 24_000 and len(audio.samples) == 12_000
    assert audio.notes == ["resampled 16000->24000 Hz"]


def test_silence_loads_with_note(tmp_path):
    f = write(tmp_path / "z.wav", np.zeros(8000, np.int16), 16_000, "PCM_16")
    audio = load_audio(f)
    assert audio.samples.shape == (8000,) and not np.any(audio.samples)
    assert audio.notes == ["silent (all samples are zero)"]
    g = write(tmp_path / "z48.wav", np.zeros((4800, 2), np.int16), 48_000, "PCM_16")
    assert load_audio(g).notes == ["downmixed 2 channels", "resampled 48000->16000 Hz", "silent (all samples are zero)"]


@pytest.mark.parametrize("seconds, rate", [(0.1, 16_000), (0.1, 8_000), (120.0, 16_000)])
def test_short_and_long_files(tmp_path, seconds, rate):
    n = int(round(seconds * rate))
    f = write(tmp_path / "x.wav", pcm16_noise(n, seed=2), rate, "PCM_16")
    audio = load_audio(f)
    assert len(audio.samples) == round(seconds * 16_000)
    info = probe_audio(f)
    assert (info.num_samples, info.sample_rate, info.channels, info.duration_s) == (n, rate, 1, n / rate)


# ----------------------------------------------------------------------------- refusals


def test_nan_and_inf_samples_are_refused(tmp_path):
    x = np.zeros(1000, np.float32)
    x[10] = np.nan
    x[20] = np.inf
    x[30] = -np.inf
    f = write(tmp_path / "nan.wav", x, 16_000, "FLOAT")
    with pytest.raises(AudioError, match="NaN") as err:
        load_audio(f)
    assert "3 NaN/inf samples" in str(err.value)


def test_nan_in_one_channel_of_stereo_is_refused(tmp_path):
    x = np.zeros((500, 2), np.float32)
    x[7, 1] = np.nan
    with pytest.raises(AudioError, match="1 NaN"):
        load_audio(write(tmp_path / "nan2.wav", x, 48_000, "FLOAT"))


def test_zero_length_wav_is_refused(tmp_path):
    f = write(tmp_path / "empty.wav", np.zeros(0, np.int16), 16_000, "PCM_16")
    assert f.stat().st_size > 0  # a header, no samples
    with pytest.raises(AudioError, match="zero-length"):
        load_audio(f)


def test_zero_byte_file_is_refused(tmp_path):
    f = tmp_path / "nothing.wav"
    f.write_bytes(b"")
    with pytest.raises(AudioError):
        load_audio(f)
    with pytest.raises(AudioError, match="empty file"):
        probe_audio(f)


def test_truncated_header_is_refused(tmp_path):
    f = write(tmp_path / "cut.wav", pcm16_noise(1000), 16_000, "PCM_16")
    f.write_bytes(f.read_bytes()[:20])
    with pytest.raises(AudioError, match="not readable as audio"):
        load_audio(f)
    with pytest.raises(AudioError, match="not readable as audio"):
        probe_audio(f)


def test_overwritten_riff_header_is_refused(tmp_path):
    f = write(tmp_path / "riff.wav", pcm16_noise(1000), 16_000, "PCM_16")
    raw = bytearray(f.read_bytes())
    raw[:12] = b"\x00" * 12
    f.write_bytes(bytes(raw))
    with pytest.raises(AudioError, match="not readable as audio"):
        load_audio(f)
    with pytest.raises(AudioError, match="not readable as audio"):
        probe_audio(f)


def test_text_file_named_wav_is_refused(tmp_path):
    f = tmp_path / "notes.wav"
    f.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match="not readable as audio"):
        load_audio(f)
    with pytest.raises(AudioError, match="not readable as audio"):
        probe_audio(f)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="^file not found$"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="^file not found$"):
        probe_audio(tmp_path / "nope.wav")
    with pytest.raises(AudioError, match="^a directory, not an audio file"):
        load_audio(tmp_path)  # a folder is not a file, and is named for what it is


# ----------------------------------------------------------------------------- probe


def test_probe_reports_header_and_sha1(tmp_path):
    f = write(tmp_path / "p.wav", pcm16_noise(4410, channels=2, seed=3), 44_100, "PCM_16")
    info = probe_audio(f)
    assert (info.num_samples, info.sample_rate, info.channels) == (4410, 44_100, 2)
    assert info.duration_s == 0.1
    assert info.sha1 == hashlib.sha1(f.read_bytes()).hexdigest()
    g = write(tmp_path / "q.wav", pcm16_noise(4410, channels=2, seed=4), 44_100, "PCM_16")
    assert probe_audio(g).sha1 != info.sha1 == probe_audio(str(f)).sha1


def test_probe_sha1_of_file_larger_than_one_read_block(tmp_path):
    f = write(tmp_path / "big.wav", pcm16_noise(700_000, seed=5), 16_000, "PCM_16")  # 1.4 MB > 1 MiB block
    assert probe_audio(f).sha1 == hashlib.sha1(f.read_bytes()).hexdigest()


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_a_wav_cut_short_is_read_with_a_truncation_note(tmp_path, subtype):
    from sercache.features.audio import wav_declared_frames

    path = write(tmp_path / "a.wav", sine(220, 1.0, TARGET_RATE), TARGET_RATE, subtype)
    assert wav_declared_frames(path) == TARGET_RATE
    assert not any(n.startswith("truncated") for n in load_audio(path).notes)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # a copy that stopped half way
    audio = load_audio(path)
    assert wav_declared_frames(path) == TARGET_RATE and len(audio.samples) < TARGET_RATE * 0.6
    assert any(n.startswith(f"truncated: the WAV header declares {TARGET_RATE} samples") for n in audio.notes)


def test_truncation_is_recorded_as_a_warning_and_the_rest_stored(tmp_path):
    from click.testing import CliRunner

    import sercache
    from sercache.cli import cli

    root = tmp_path / "corpus"
    root.mkdir()
    for name in ("whole", "cut"):
        write(root / f"{name}.wav", sine(220, 1.0, TARGET_RATE), TARGET_RATE, "PCM_16")
    raw = (root / "cut.wav").read_bytes()
    (root / "cut.wav").write_bytes(raw[: len(raw) // 2])
    (root / "manifest.csv").write_text("utt_id,path,label\nwhole,whole.wav,neu\ncut,cut.wav,ang\n")
    out = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["extract", str(root), "--corpus", "csv", "--out", str(out), "--streams", "mfcc",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    cache = sercache.open_cache(out)
    warnings = cache.errors[cache.errors.reason.str.startswith("truncated")]
    assert warnings.utt_id.tolist() == ["cut"] and (warnings.severity == "warning").all()
    assert cache.frames("mfcc", "cut").shape[0] < cache.frames("mfcc", "whole").shape[0]
