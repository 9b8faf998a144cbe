"""openSMILE streams (egemaps, compare) through the real CLI, checked against opensmile itself."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

opensmile = pytest.importorskip("opensmile")

from sercache.cli import cli  # noqa: E402
from sercache.features.audio import load_audio  # noqa: E402
from sercache.features.opensmile import OpenSmileExtractor  # noqa: E402
from sercache.store.reader import open_cache  # noqa: E402
from sercache.store.verify import _expected_frames  # noqa: E402

SETS = {"egemaps": (opensmile.FeatureSet.eGeMAPSv02, 25, 88),
        "compare": (opensmile.FeatureSet.ComParE_2016, 65, 6373)}
SHORT, TENTH, SILENT = 0, 1, 2  # utterances given 0.05 s, 0.1 s and silent audio


def run_cli(*args: str):  # noqa: ANN201 - click Result
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def extract_args(corpus: Path, out: Path, streams: str = "egemaps,compare") -> list[str]:
    # no model options: these streams must not need (or load) any model
    return ["extract", str(corpus), "--corpus", "iemocap", "--out", str(out), "--streams", streams, "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """8 utterances of one session (~5 s of audio): one of 0.05 s, one of 0.1 s, one silent."""
    from sercache.synthetic.corpus import iemocap_like, speechlike, write_iemocap_tree

    utts = iemocap_like(1, sessions=(1,), durations=(0.4, 0.8))
    utts[SHORT].duration_s, utts[TENTH].duration_s = 0.05, 0.1
    silent = utts[SILENT].utt_id

    def audio(u, rng):  # noqa: ANN001, ANN202
        return np.zeros(int(u.duration_s * 16000), np.float32) if u.utt_id == silent else speechlike(
            u.label, u.duration_s, rng=rng)

    root = write_iemocap_tree(tmp_path_factory.mktemp("smile_corpus"), utts, audio=audio)
    return root, utts


@pytest.fixture(scope="module")
def cache(corpus, tmp_path_factory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("smile_cache") / "cache"
    result = run_cli(*extract_args(corpus[0], out))
    assert result.exit_code == 0, result.output
    return out


def test_every_utterance_stored_with_real_dims(cache: Path, corpus) -> None:  # noqa: ANN001
    with open_cache(cache) as c:
        ids = c.utterances.utt_id.tolist()
        assert len(ids) == len(corpus[1])
        for name, (_, n_lld, n_func) in SETS.items():
            info = c.streams[name]
            assert c.utt_ids(name) == ids and info.n_failed == 0
            assert (info.dim, info.dtype, info.frame_rate, info.layers) == (n_lld, "float32", 100.0, [0])
            for u in ids:
                x = c.frames(name, u)
                assert x.ndim == 2 and x.shape[0] >= 2 and x.shape[1] == n_lld
            assert c.per_utterance(name, "functionals").shape == (len(ids), n_func)
            assert c.pooled(name, 0, "meanstd").shape == (len(ids), 2 * n_lld)
            assert len(info.column_names["layer_0"]) == n_lld and len(info.column_names["functionals"]) == n_func
        assert c.streams["egemaps"].column_names["layer_0"][0] == "Loudness_sma3"


def test_values_are_opensmile_output(cache: Path) -> None:
    with open_cache(cache) as c:
        rows = c.utterances.iloc[[3, 6]]
        for name, (feature_set, _, _) in SETS.items():
            lld = opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
            func = opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.Functionals)
            for r in rows.itertuples():
                samples = load_audio(r.path).samples
                np.testing.assert_allclose(c.frames(name, r.utt_id), lld.process_signal(samples, 16000).to_numpy(),
                                           rtol=1e-6)
                np.testing.assert_allclose(c.per_utterance(name, "functionals", [r.utt_id])[0],
                                           func.process_signal(samples, 16000).to_numpy()[0], rtol=1e-6)
                stored = c.frames(name, r.utt_id).astype(np.float64)
                np.testing.assert_allclose(c.pooled(name, 0, "mean", [r.utt_id])[0], stored.mean(0), rtol=1e-5)


def test_verify_passes_and_frame_rule_matches_opensmile(cache: Path, tmp_path: Path) -> None:
    result = run_cli("cache", "verify", str(cache))
    assert result.exit_code == 0, result.output
    with h5py.File(cache / "Session1" / "egemaps.h5", "r") as f:
        rule = json.loads(f.attrs["frame_rule"])
    for feature_set, _, _ in SETS.values():
        smile = opensmile.Smile(feature_set=feature_set, feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
        for n in (960, 1119, 1120, 1601, 4799, 8001, 16160, 33333):
            x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
            assert _expected_frames(rule, n) == len(smile.process_signal(x, 16000)), n
    assert _expected_frames(rule, 800) == 2  # short audio: zero-padded to one 60 ms window
    # a stored frame count that disagrees with the audio length is flagged
    bad = tmp_path / "bad"
    shutil.copytree(cache, bad)
    with h5py.File(bad / "Session1" / "compare.h5", "r+") as f:
        f["per_utterance/n_samples"][4] += 480
        f["per_utterance/functionals"][5, 0] = np.nan  # functionals are declared NaN-free, so this is caught
        victim, nan_victim = f["utt_ids"].asstr()[4], f["utt_ids"].asstr()[5]
    result = run_cli("cache", "verify", str(bad))
    assert result.exit_code == 1 and f"compare: {victim}: " in result.output
    assert "frames stored" in result.output and "expected" in result.output
    assert f"compare: {nan_victim}: per_utterance/functionals holds NaN/inf values" in result.output


def test_provenance_and_rerun_does_nothing(cache: Path, corpus) -> None:  # noqa: ANN001
    with open_cache(cache) as c:
        ident = c.streams["compare"].provenance["identity"]
        assert ident["feature_set"] == "ComParE_2016" and ident["kind"] == "compare"
        assert c.streams["egemaps"].provenance["identity"]["feature_set"] == "eGeMAPSv02"
        assert c.streams["egemaps"].provenance["details"]["opensmile"] == opensmile.__version__
    streams = sorted(cache.glob("*/egemaps.h5")) + sorted(cache.glob("*/compare.h5"))
    before = [p.stat().st_mtime_ns for p in streams]  # (the manifest is rewritten on each run, by design)
    again = run_cli(*extract_args(corpus[0], cache))
    assert again.exit_code == 0 and again.output.count("already complete") == 2, again.output
    assert [p.stat().st_mtime_ns for p in streams] == before and len(streams) == 2
    info = run_cli("cache", "info", str(cache))
    assert info.exit_code == 0 and "eGeMAPSv02" in info.output and "ComParE_2016" in info.output


def test_short_and_silent_audio_stored_finite_and_recorded(cache: Path, corpus) -> None:  # noqa: ANN001
    utts = corpus[1]
    with open_cache(cache) as c:
        for name in SETS:
            assert c.frames(name, utts[SHORT].utt_id).shape[0] == 2   # 800 samples padded to 960
            assert c.frames(name, utts[TENTH].utt_id).shape[0] == 6   # (1600 - 960) // 160 + 2
            for u in c.utt_ids(name):
                assert np.isfinite(c.frames(name, u)).all()
            assert np.isfinite(c.per_utterance(name, "functionals")).all()
        err = c.errors
        padded = err[(err.stage.isin(list(SETS))) & (err.severity == "warning")]
        assert set(padded.stream) == set(SETS) and set(padded.utt_id) == {utts[SHORT].utt_id}
        assert padded.reason.str.contains("zero-padded from 800 to 960 samples").all()
        silent = err[err.utt_id == utts[SILENT].utt_id]
        assert set(silent.stream) == set(SETS) and silent.reason.str.contains("silent").all()
        assert (err.severity != "error").all()


def test_non_finite_output_is_zeroed_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from sercache.features.base import AudioItem

    ex = OpenSmileExtractor("egemaps")
    real = ex._func.process_signal

    def with_nan(signal, rate):  # noqa: ANN001, ANN202
        df = real(signal, rate)
        df.iloc[0, [0, 5]] = [np.nan, np.inf]
        return df

    monkeypatch.setattr(ex._func, "process_signal", with_nan)
    result = ex.extract([AudioItem("u1", "u1.wav", np.random.default_rng(0).standard_normal(4000).astype(np.float32))])
    func = result.records[0].per_utterance["functionals"]
    assert np.isfinite(func).all() and func[0] == 0 and func[5] == 0
    (p,) = result.problems
    assert p.severity == "warning" and "2 openSMILE features were NaN/inf" in p.reason and ex.functional_names[0] in p.reason


def test_missing_opensmile_is_refused_before_work(corpus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setitem(sys.modules, "opensmile", None)  # `import opensmile` now raises ImportError
    out = tmp_path / "none"
    result = CliRunner().invoke(cli, extract_args(corpus[0], out, "mfcc,egemaps"))
    assert result.exit_code == 2
    assert "--streams egemaps needs the opensmile package: pip install 'sercache[opensmile]'" in result.output
    assert not out.exists()


def test_spectrogram_is_a_stream_kind(corpus, tmp_path: Path) -> None:  # noqa: ANN001
    out = tmp_path / "spec"
    assert run_cli(*extract_args(corpus[0], out, "spectrogram")).exit_code == 0
    with open_cache(out) as c:
        u = c.utterances.iloc[3]
        assert c.frames("spectrogram", u.utt_id).shape == (int(u.num_samples) // 160 + 1, 161)
