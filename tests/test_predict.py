"""``sercache predict``: features recomputed from the cache's provenance give the heads' training-time logits."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

import sercache
from sercache.cli import cli
from sercache.extract.options import ExtractOptions
from sercache.extract.runner import run_extract
from sercache.runs.predict import PredictError, Predictor
from sercache.runs.predict_inputs import Source, windows
from sercache.store import open_cache
from sercache.training.run import TrainRequest, run_training
from sercache.training.trainer import load_checkpoint

#: gate reads ssl + text_asr frames (so the asr stream runs too); linear pools ssl, mfcc and gold-text statistics.
RUNS = {
    "gate": dict(train={"lr": 3e-3, "batch_size": 8, "epochs": 2}, seeds=1),
    "linear": dict(streams={"audio": "ssl,mfcc,text_gold"}, train={"lr": 2e-2, "epochs": 3}, seeds=2),
    # regresses valence/arousal besides the classes
    "tmn": dict(hyperparameters={"fusion_dim": 32, "patch_size": 8, "mixer_dim": 32, "depth": 2},
                train={"lr": 2e-3, "batch_size": 8, "epochs": 2}, seeds=1),
    # each fold's layers of ssl chosen on validation: predict reads the ones each checkpoint recorded
    "linear-select": dict(head="linear", layers={"audio": "select"}, train={"lr": 2e-2, "epochs": 3}, seeds=1),
    # a learned mix of every ssl layer: predict extracts them all and the head mixes them as in training
    "cmgi-mix": dict(head="cmgi", layers={"audio": "all"}, train={"lr": 3e-3, "batch_size": 8, "epochs": 2}, seeds=1),
}


@pytest.fixture(scope="module")
def runs(extracted_cache, tmp_path_factory) -> dict[str, Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("predict-runs")
    out = {}
    for name, kw in RUNS.items():
        kw = {"head": name, **kw}
        out[name], results = run_training(TrainRequest(cache=extracted_cache, out=root / name, fold="1,2",
                                                       device="cpu", **kw), progress=lambda m: None)
        assert all(r["ok"] for r in results), results
    return out


def recorded(run: Path, fold: str, seed: int = 0) -> pd.DataFrame:
    return pd.read_csv(run / fold / f"seed{seed}" / "predictions.csv")


def sources_of(cache: Path, utt_ids: list[str]) -> list[Source]:
    """The corpus's own wav files (and gold transcripts) of these utterances."""
    with open_cache(cache) as store:
        rows = store.utterances.set_index("utt_id").loc[utt_ids]
    return [Source(p, Path(p), t) for p, t in zip(rows.path, rows.transcript)]


def softmax(x: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(x).double(), 1).numpy()


@pytest.mark.parametrize("head", sorted(RUNS))
def test_one_folds_predictions_equal_its_saved_test_predictions(runs, extracted_cache, head):
    """Train-time and predict-time features and normalisation are the same: the same logits, from the raw wavs."""
    run = runs[head]
    rec = recorded(run, "loso-1")
    predictor = Predictor(run, fold="1", device="cpu")
    pred = predictor.predict_sources(sources_of(extracted_cache, rec.utt_id.tolist()))
    seeds = range(RUNS[head]["seeds"])
    assert list(pred.logits) == [f"loso-1/seed{s}" for s in seeds]
    saved = [recorded(run, "loso-1", s).filter(like="logit_").to_numpy() for s in seeds]
    for s in seeds:
        # `sercache eval`'s criterion: torch's thread count may flip an fp16 rounding of a stored feature
        np.testing.assert_allclose(pred.logits[f"loso-1/seed{s}"], saved[s], atol=1e-3, rtol=0)
    classes = sercache.load_run(run).label_names
    probs = np.mean([softmax(x) for x in saved], axis=0)
    np.testing.assert_allclose(pred.table[[f"prob_{c}" for c in classes]].to_numpy(), probs, atol=1e-4)
    assert pred.table.prediction.tolist() == [classes[k] for k in probs.argmax(1)]
    if head == "tmn":
        va = np.mean([recorded(run, "loso-1", s)[["valence_pred", "arousal_pred"]].to_numpy() for s in seeds], 0)
        np.testing.assert_allclose(pred.table[["valence_pred", "arousal_pred"]].to_numpy(), va, atol=1e-3)
    else:
        assert "valence_pred" not in pred.table
    if head == "cmgi-mix":  # the ssl stream's every layer, mixed by learned weights
        layers = sercache.load_run(run).config.roles["audio"].layers
        state = load_checkpoint(run / "loso-1" / "seed0" / "checkpoint.pt")["state_dict"]
        assert len(layers) > 2 and state["layer_mix.audio"].shape == (len(layers),)


def test_cli_writes_the_table_for_a_manifest(runs, extracted_cache, tmp_path):
    rec = recorded(runs["linear"], "loso-2", seed=1)
    with open_cache(extracted_cache) as store:
        rows = store.utterances.set_index("utt_id").loc[rec.utt_id]
    manifest = tmp_path / "inputs.csv"
    pd.DataFrame({"path": rows.path, "transcript": rows.transcript}).to_csv(manifest, index=False)
    out = tmp_path / "out" / "predictions.csv"
    result = CliRunner().invoke(cli, ["predict", str(runs["linear"]), str(manifest), "--fold", "loso-2", "--out",
                                      str(out), "--device", "cpu", "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output
    table = pd.read_csv(out)
    classes = sercache.load_run(runs["linear"]).label_names
    assert list(table.columns) == ["path", "prediction", *[f"prob_{c}" for c in classes]]
    assert table.path.tolist() == rows.path.tolist()
    # fold 2 has two seeds: the table averages their softmax
    both = np.mean([softmax(recorded(runs["linear"], "loso-2", s).filter(like="logit_").to_numpy()) for s in (0, 1)], 0)
    np.testing.assert_allclose(table.filter(like="prob_").to_numpy(), both, atol=1e-4)
    assert not list(tmp_path.glob("out/*.tmp"))
    again = sercache.predict(runs["linear"], manifest, fold="loso-2", device="cpu")
    np.testing.assert_allclose(again.filter(like="prob_").to_numpy(), table.filter(like="prob_").to_numpy(), atol=1e-9)


def test_default_averages_every_fold_and_seed(runs, extracted_cache):
    with open_cache(extracted_cache) as store:
        ids = store.utterances.utt_id.tolist()[::20]
    sources = sources_of(extracted_cache, ids)
    every = Predictor(runs["linear"], device="cpu").predict_sources(sources)
    assert sorted(every.logits) == ["loso-1/seed0", "loso-1/seed1", "loso-2/seed0", "loso-2/seed1"]
    per_fold = [Predictor(runs["linear"], fold=k, device="cpu").predict_sources(sources).table.filter(like="prob_")
                for k in ("1", "2")]
    np.testing.assert_allclose(every.table.filter(like="prob_").to_numpy(), (per_fold[0] + per_fold[1]).to_numpy() / 2,
                               atol=1e-9)
    assert np.allclose(every.table.filter(like="prob_").sum(axis=1), 1.0)


def test_gold_text_runs_need_transcripts(runs, extracted_cache):
    wav = sources_of(extracted_cache, [open_cache(extracted_cache).utterances.utt_id.iloc[0]])[0].path
    result = CliRunner().invoke(cli, ["predict", str(runs["linear"]), str(wav), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 2
    assert "text_gold" in result.output and "transcript column" in result.output and str(wav) in result.output


def test_window_rows_over_time_and_the_python_api(runs, extracted_cache, tmp_path, monkeypatch):
    """A stereo 44.1 kHz recording, cut into windows; each row equals the API's prediction of that window."""
    from sercache.features.audio import load_audio

    monkeypatch.setattr("sercache.runs.predict.CHUNK", 2)  # windows computed a few at a time, as for long audio

    with open_cache(extracted_cache) as store:
        paths = store.utterances.path.tolist()[:4]
    mono = np.concatenate([sf.read(p, dtype="float32")[0] for p in paths])
    rate = 44_100
    from scipy.signal import resample_poly

    stereo = np.stack([resample_poly(mono, 441, 160), 0.5 * resample_poly(mono, 441, 160)], axis=1).astype(np.float32)
    long_wav = tmp_path / "long.wav"
    sf.write(long_wav, stereo, rate, subtype="FLOAT")
    out = tmp_path / "over_time.csv"
    result = CliRunner().invoke(cli, ["predict", str(runs["gate"]), str(long_wav), "--window", "1.5", "--hop", "1",
                                      "--fold", "1", "--out", str(out), "--device", "cpu", "--no-progress"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    samples = load_audio(long_wav).samples
    spans = windows(len(samples), 1.5, 1.0)
    assert len(table) == len(spans) >= 3
    assert table.start_s.tolist() == [round(a / 16_000, 3) for a, _ in spans]
    assert table.end_s.iloc[-1] == pytest.approx(len(samples) / 16_000, abs=1e-3)
    assert list(table.columns[:4]) == ["path", "start_s", "end_s", "prediction"]

    run = sercache.load_run(runs["gate"])
    for k in (0, len(spans) - 1):
        a, b = spans[k]
        one = run.predict(samples[a:b], 16_000, fold="1", device="cpu")
        assert len(one) == 1 and one.prediction.iloc[0] == table.prediction.iloc[k]
        np.testing.assert_allclose(one.filter(like="prob_").to_numpy()[0], table.filter(like="prob_").to_numpy()[k],
                                   atol=1e-6)
    # the API takes the array as read (any rate, any channels) and prepares it as extraction does
    whole = run.predict(stereo, rate, fold="1", device="cpu", window=1.5, hop=1.0)
    np.testing.assert_allclose(whole.filter(like="prob_").to_numpy(), table.filter(like="prob_").to_numpy(), atol=1e-5)


def test_inputs_are_decoded_one_at_a_time_and_freed_before_the_heads_run(runs, extracted_cache, monkeypatch):
    """Bounded memory, whatever the machine's speed: what predict holds of a long recording, counted.

    Each input is decoded when its turn comes (never the whole folder first), its samples are gone
    when the heads run, and the gate head gates at most ``EVAL_FRAME_BLOCK`` audio frames at once:
    a 2-hour recording's samples, and its frames' activations, are never held next to each other.
    """
    import weakref

    import sercache.runs.predict as predict
    import sercache.runs.predict_inputs as inputs
    from sercache.heads import gate

    with open_cache(extracted_cache) as store:
        ids = store.utterances.utt_id.tolist()[:3]
    sources = sources_of(extracted_cache, ids)
    whole = Predictor(runs["gate"], fold="1", device="cpu").predict_sources(sources).table

    decoded: list[weakref.ref] = []
    alive_at_decode: list[int] = []
    alive_when_heads_run: list[int] = []
    gated_frames: list[int] = []

    def alive() -> int:
        return sum(r() is not None for r in decoded)

    def load_audio(path, *a, **kw):  # noqa: ANN001, ANN202
        alive_at_decode.append(alive())
        audio = real_load(path, *a, **kw)
        decoded.append(weakref.ref(audio.samples))
        return audio

    def evaluate(*a, **kw):  # noqa: ANN202
        alive_when_heads_run.append(alive())
        return real_evaluate(*a, **kw)

    def gated_attention(g, x, *a, **kw):  # noqa: ANN001, ANN202
        gated_frames.append(x.shape[1])
        return real_gated(g, x, *a, **kw)

    real_load, real_evaluate, real_gated = inputs.load_audio, predict.evaluate, gate.gated_attention
    monkeypatch.setattr(inputs, "load_audio", load_audio)
    monkeypatch.setattr(predict, "evaluate", evaluate)
    monkeypatch.setattr(gate, "gated_attention", gated_attention)
    # each (short) input stands for a long recording: alone in its batch, its frames gated 16 at a time
    monkeypatch.setattr(predict, "CHUNK_SECONDS", 0.1, raising=False)
    monkeypatch.setattr(gate, "EVAL_FRAME_BLOCK", 16, raising=False)
    pred = Predictor(runs["gate"], fold="1", device="cpu").predict_sources(sources).table
    assert alive_at_decode == [0, 0, 0]
    assert alive_when_heads_run == [0, 0, 0]
    assert max(gated_frames) <= 16 < sum(gated_frames)
    assert pred.prediction.tolist() == whole.prediction.tolist()
    np.testing.assert_allclose(pred.filter(like="prob_").to_numpy(), whole.filter(like="prob_").to_numpy(), atol=1e-5)


def test_changed_weights_are_refused_and_a_missing_model_is_named(models, small_corpus, tmp_path):
    """Own model folder, cache and run, so the shared fixtures stay untouched."""
    from transformers import HubertModel

    torch.set_num_threads(1)
    model = tmp_path / "hubert"
    shutil.copytree(models["ssl"], model)
    cache = tmp_path / "cache"
    run_extract(ExtractOptions(root=small_corpus, corpus="iemocap", out=cache, streams=("ssl",), ssl_model=str(model),
                               device="cpu", progress=False))
    run, _ = run_training(TrainRequest(cache=cache, head="linear", out=tmp_path / "run", fold="1", seeds=1,
                                       device="cpu", train={"lr": 2e-2, "epochs": 1}), progress=lambda m: None)
    wav = Path(open_cache(cache).utterances.path.iloc[0])
    args = ["predict", str(run), str(wav), "--device", "cpu", "--no-progress", "--out", str(tmp_path / "p.csv")]
    assert CliRunner().invoke(cli, args).exit_code == 0
    stored = open_cache(cache).streams["ssl"].provenance["identity"]["weights"]

    moved = tmp_path / "moved"
    model.rename(moved)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "'ssl'" in result.output and str(model) in result.output
    assert "looked in" in result.output
    assert CliRunner().invoke(cli, [*args, "--model", f"ssl={moved}"]).exit_code == 0  # same weights, new place

    changed = HubertModel.from_pretrained(moved)
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    changed.save_pretrained(moved)
    result = CliRunner().invoke(cli, [*args, "--model", f"ssl={moved}"])
    assert result.exit_code == 2, result.output
    from sercache.features.models import weights_fingerprint

    new = weights_fingerprint(str(moved))
    assert new != stored and stored in result.output and new in result.output and str(moved) in result.output
    assert "--allow-different-weights" in result.output
    result = CliRunner().invoke(cli, [*args, "--model", f"ssl={moved}", "--allow-different-weights"])
    assert result.exit_code == 0, result.output


def test_bad_requests_are_refused_before_any_model_loads(runs, tmp_path):
    def refused(*extra: str) -> str:
        result = CliRunner().invoke(cli, ["predict", str(runs["gate"]), *extra, "--device", "cpu", "--no-progress",
                                          "--out", str(tmp_path / "p.csv")])
        assert result.exit_code == 2, result.output
        return result.output

    assert "does not exist" in refused(str(tmp_path / "nothing.wav"))
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio at all")
    assert str(junk) in refused(str(junk))
    (tmp_path / "empty").mkdir()
    assert "holds no audio" in refused(str(tmp_path / "empty"))
    wav = tmp_path / "tone.wav"
    sf.write(wav, np.sin(np.arange(16_000) / 10).astype(np.float32), 16_000)
    assert "--fold '9'" in refused(str(wav), "--fold", "9")
    assert "needs --window" in refused(str(wav), "--hop", "1")
    for option, value in (("--window", "inf"), ("--window", "nan"), ("--window", "0"), ("--hop", "inf"),
                          ("--hop", "-1")):  # inf was an OverflowError traceback; named by option now
        assert f"Invalid value for '{option}'" in refused(str(wav), "--window", "1", option, value), (option, value)
    assert not (tmp_path / "p.csv").exists()
    with pytest.raises(PredictError, match="waveform of shape"):
        sercache.load_run(runs["gate"]).predict(np.zeros((2, 3, 4)), 16_000, device="cpu")


@pytest.mark.slow
def test_demo_run_predicts_its_own_corpus_wavs_as_recorded(demo, tmp_path):
    """The issue's check on the demo: train (the demo's gate run), then predict the corpus's own wav files."""
    run = demo.runs["gate"]
    rec = recorded(run, "loso-3")
    with open_cache(demo.cache) as store:
        paths = store.utterances.set_index("utt_id").loc[rec.utt_id, "path"]
    assert all(Path(p).is_relative_to(demo.corpus) for p in paths)
    out = tmp_path / "demo_predictions.csv"
    result = CliRunner().invoke(cli, ["predict", str(run), *paths, "--fold", "3", "--out", str(out), "--device", "cpu",
                                      "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out)
    assert table.path.tolist() == paths.tolist()
    np.testing.assert_allclose(table.filter(like="prob_").to_numpy(), softmax(rec.filter(like="logit_").to_numpy()),
                               atol=1e-4)
