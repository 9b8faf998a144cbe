"""Pooled heads on several layers (--layer 2,4 / all / select), and every head on Whisper-shaped features.

The cache here is EmoDB-shaped and synthetic: a ``whisper`` stream (7 hidden states, 50 frames/s,
Whisper's frame rule, layers 4 and 5 with massive activations of +-460 stored in fp16, as
whisper-base has them), an openSMILE-like stream with functionals, MiniLM-sized text token
streams, and a manifest without valence/arousal or annotator votes, whose gold transcripts are
German sentences (one speaker's missing).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from sercache.cli import cli
from sercache.splits import get_preset
from sercache.store import open_cache
from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache
from sercache.training.data import InMemoryData, labelled_utterances
from sercache.training.pooled import PooledData
from sercache.training.roles import DataError, RoleSpec, parse_layer_option, resolve_roles
from sercache.training.run_config import RunConfig
from sercache.training.train_config import TrainConfig
from sercache.training.trainer import load_checkpoint, train_fold
from tests.conftest import synthetic_manifest

GERMAN = ["Heute abend könnte ich es ihm sagen.", "Was sind denn das für Tüten?", "Der Lappen liegt auf dem Eisschrank."]
OUTLIER = 460.0


@pytest.fixture(scope="module")
def whisper_cache(tmp_path_factory):
    """80 utterances; read-only."""
    m = synthetic_manifest(2)
    m["valence"] = m["arousal"] = m["dominance"] = np.nan
    m["votes"] = ""
    m["transcript"] = [GERMAN[i % 3] for i in range(len(m))]
    m.loc[m.speaker == m.speaker.iloc[0], "transcript"] = ""
    return write_synthetic_cache(tmp_path_factory.mktemp("whisper") / "cache", m, [
        SyntheticStream("whisper", "whisper", 24, tuple(range(7)), outliers=OUTLIER, outlier_layers=(4, 5)),
        SyntheticStream("egemaps", "opensmile", 6, dtype="float32"),
        SyntheticStream("text_asr", "text", 16), SyntheticStream("text_gold", "text", 16)])


def pooled(cache, streams: str, layer, head_roles=("audio",)) -> PooledData:  # noqa: ANN001
    store = open_cache(cache)
    roles = resolve_roles(store, head_roles, (), {"audio": streams}, {"audio": layer}, pooled=True)
    table = labelled_utterances(store, get_preset("iemocap4"), roles)
    return PooledData(store, table, roles, get_preset("iemocap4"))


def test_layer_option_words():
    assert [parse_layer_option(v, "--layer") for v in (None, 3, "3", " 2,3,4 ", "ALL", "select", [1, 2])] == [
        None, 3, 3, [2, 3, 4], "all", "select", [1, 2]]
    for bad in ("x", "2,2", "", "all,3"):
        with pytest.raises(DataError, match="give a layer number"):
            parse_layer_option(bad, "--layer")


def test_several_layers_concatenate_each_layers_mean_and_std(whisper_cache):
    cache = open_cache(whisper_cache)
    data = pooled(whisper_cache, "whisper", "2,4")
    assert data.roles["audio"].layers == [[2, 4]] and data.dims == {"audio": 2 * 2 * 24}
    ids = data.utt_ids[:7]
    expected = np.concatenate([cache.pooled("whisper", 2, "meanstd", ids), cache.pooled("whisper", 4, "meanstd", ids)], 1)
    np.testing.assert_array_equal(data.features(data.indices(ids), "audio").numpy(), expected)
    # one layer reads exactly what it always read
    one = pooled(whisper_cache, "whisper", 3)
    np.testing.assert_array_equal(one.features(one.indices(ids), "audio").numpy(), cache.pooled("whisper", 3, "meanstd", ids))
    # all layers of whisper, and the openSMILE stream's functionals as they are
    both = pooled(whisper_cache, "whisper,egemaps", "all")
    assert both.roles["audio"].layers == [list(range(7)), 0] and both.dims == {"audio": 7 * 2 * 24 + 12}
    x = both.features(both.indices(ids), "audio").numpy()
    np.testing.assert_array_equal(x[:, :48], cache.pooled("whisper", 0, "meanstd", ids))
    np.testing.assert_array_equal(x[:, -12:], cache.per_utterance("egemaps", "functionals", ids))


def test_layer_errors_name_the_option_and_what_exists(whisper_cache):
    store = open_cache(whisper_cache)
    with pytest.raises(DataError, match=r"--layer 9: stream 'whisper' has pooled statistics of layers \[0, 1"):
        resolve_roles(store, ("audio",), (), {"audio": "whisper"}, {"audio": "9"}, pooled=True)
    with pytest.raises(DataError, match="are for the pooled heads"):
        resolve_roles(store, ("audio",), (), {"audio": "whisper"}, {"audio": "all"})
    with pytest.raises(DataError, match="a run chooses the layers of one role"):
        resolve_roles(store, ("audio", "text"), (), {"audio": "whisper", "text": "text_asr"},
                      {"audio": "select", "text": "select"}, pooled=True)
    with pytest.raises(DataError, match="none of the streams egemaps,text_asr has several layers"):
        resolve_roles(store, ("audio",), (), {"audio": "egemaps,text_asr"}, {"audio": "all"}, pooled=True)


def run_fold(data, fold, out, head: str = "logreg", hyper: dict | None = None, **cfg) -> dict:  # noqa: ANN001
    from sercache.heads import get_head

    return train_fold(out, head_name=head, hyperparameters={**get_head(head).hyperparameters(), **(hyper or {})},
                      cfg=TrainConfig.for_head(head, cfg), data=data, train_ids=fold.train, valid_ids=fold.valid,
                      test_ids=fold.test, seed=0, label_names=list(get_preset("iemocap4").classes), run_config={},
                      log=lambda m: None)


def test_select_chooses_on_the_validation_speakers_only(whisper_cache, tmp_path):
    """Garbage test features and shuffled test labels change no choice; the choice is the best validation UA."""
    from sercache.splits import make_folds

    clean = pooled(whisper_cache, "whisper,egemaps", "select")
    fold = make_folds(clean.table, "loso")[1]
    assert len(clean.layer_choices()) == 8  # each of the 7 layers, then all of them
    a = run_fold(clean, fold, tmp_path / "clean", hyper={"C": 0.1}, refit=False)

    poisoned = pooled(whisper_cache, "whisper,egemaps", "select")
    rows = torch.as_tensor(poisoned.indices(fold.test))
    poisoned._all["audio"][rows] = 1e6 * torch.randn(len(rows), poisoned._all["audio"].shape[1])
    poisoned.y[rows] = poisoned.y[rows][torch.randperm(len(rows))]
    b = run_fold(poisoned, fold, tmp_path / "poisoned", hyper={"C": 0.1}, refit=False)
    assert a["layers"] == b["layers"] and a["layer_choices"] == b["layer_choices"]

    scores = [c["valid_ua"] for c in a["layer_choices"]]
    assert a["layers"] == {"audio": a["layer_choices"][int(np.argmax(scores))]["layers"]}
    assert a["valid_ua"] == max(scores) and a["layer_choices"][-1]["layers"] == "whisper:0-6+egemaps"
    ckpt = load_checkpoint(tmp_path / "clean" / "checkpoint.pt")
    chosen = ckpt["layers"]["audio"]
    assert RoleSpec("audio", "whisper,egemaps", chosen).describe({"egemaps"}) == a["layers"]["audio"]
    curve = pd.read_csv(tmp_path / "clean" / "curve.csv")
    assert set(curve.phase) == {"select", "layers"} and set(curve[curve.phase == "select"].layers) == {a["layers"]["audio"]}


def test_select_trains_evaluates_reports_and_replays_through_the_cli(whisper_cache, tmp_path):
    runner = CliRunner()
    out = tmp_path / "linear"
    args = ["train", str(whisper_cache), "--head", "linear", "--audio-stream", "whisper,egemaps", "--layer", "select",
            "--fold", "1", "--seeds", "1", "--epochs", "20", "--out", str(out), "--device", "cpu"]
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "layers chosen on validation: whisper:" in result.output
    config = json.loads((out / "config.json").read_text())
    assert config["roles"]["audio"] == {"stream": "whisper,egemaps", "layers": [list(range(7)), 0], "select": True}
    assert RunConfig.from_dict(config).to_dict()["roles"] == config["roles"]
    metrics = json.loads(next(out.glob("*/seed0/metrics.json")).read_text())
    assert metrics["ua"] > 0.5 and len(metrics["layer_choices"]) == 8
    ev = runner.invoke(cli, ["eval", str(out)], catch_exceptions=False)
    assert ev.exit_code == 0 and (pd.read_csv(out / "eval.csv").max_logit_diff_vs_record < 1e-4).all(), ev.output
    rep = runner.invoke(cli, ["report", str(out), "--bootstrap", "20"], catch_exceptions=False)
    assert rep.exit_code == 0 and metrics["layers"]["audio"] in rep.output and "C/gamma" not in rep.output
    again = runner.invoke(cli, ["train", "--config", str(out / "config.json"), "--out", str(tmp_path / "again")],
                          catch_exceptions=False)
    assert again.exit_code == 0 and "replaying a recorded run with the same settings" in again.output, again.output


def test_fixed_layers_and_a_yaml_list(whisper_cache, tmp_path):
    runner = CliRunner()
    (tmp_path / "c.yaml").write_text(f"cache: {whisper_cache}\nhead: svm\naudio_stream: whisper\nlayer: [3, 5]\n"
                                     "fold: 2\nseeds: 1\ndevice: cpu\n")
    result = runner.invoke(cli, ["train", "--config", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "svm")],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "svm" / "config.json").read_text())
    assert config["roles"]["audio"] == {"stream": "whisper", "layers": [[3, 5]]} and "--layer 3,5" in config["command"]
    assert json.loads(next((tmp_path / "svm").glob("*/seed0/metrics.json")).read_text())["layers"] == {
        "audio": "whisper:3,5"}


def sigma_clipped(x: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over axis 1, then again over the values within ``limit`` std of that mean (numpy, float64)."""
    mean, std = x.mean(1), x.std(1)
    inside = np.abs(x - mean[:, None]) <= limit * std[:, None]
    mean = (x * inside).sum(1) / inside.sum(1)
    return mean, np.sqrt((x * x * inside).sum(1) / inside.sum(1) - mean**2)


def test_massive_fp16_activations_neither_overflow_nor_set_the_scale(whisper_cache):
    """Layers 4 and 5 spike to +-460 on one frame of every other utterance, stored in fp16 (whose x^2 overflows).

    Frame statistics are float64 and sigma-clipped: the spiking dimensions keep the scale of their ordinary
    values, and their spikes are clipped at 5 standard deviations. Pooled statistics are standardised in float64.
    """
    from sercache.training.data import Z_LIMIT

    store = open_cache(whisper_cache)
    roles = resolve_roles(store, ("audio",), ("audio",), {"audio": "whisper"}, {})
    table = labelled_utterances(store, get_preset("iemocap4"), roles)
    data = InMemoryData(store, table, roles, get_preset("iemocap4"))
    idx = np.arange(0, len(data), 2)
    mean, std = data.fit_normalization(idx)["audio"]
    frames = np.concatenate([np.stack([store.frames("whisper", data.utt_ids[i], layer=k) for k in range(7)])
                             for i in idx], axis=1).astype(np.float64)  # (layers, frames, dim)
    with np.errstate(over="ignore"):
        assert np.abs(frames[4:6]).max() >= OUTLIER and (frames.astype(np.float16) ** 2 == np.inf).any()
    ref_mean, ref_std = sigma_clipped(frames, Z_LIMIT)
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.numpy(), ref_std, rtol=1e-4, atol=1e-5)
    assert frames[4, :, 0].std() > 10 and 0.8 < std[4, 0] < 1.5  # the spikes do not set the dimension's scale
    data.normalization = {"audio": (mean, std)}
    batch = data.batch(idx)
    z = batch.streams["audio"].x.permute(0, 2, 1, 3)[batch.streams["audio"].mask]  # (real frames, layers, dim)
    assert torch.isfinite(z).all() and z.abs().max() == Z_LIMIT and z[:, :4].abs().max() < Z_LIMIT
    spiking = z[:, 4:6, :2].abs() == Z_LIMIT
    assert spiking.sum() == (np.abs(frames[4:6, :, :2]) >= OUTLIER).sum() > 0  # exactly the spikes are clipped
    assert 0.8 < float(z[:, 4, 0][~spiking[:, 0, 0]].std()) < 1.2

    vectors = pooled(whisper_cache, "whisper", "all")
    vectors.normalization = vectors.fit_normalization(idx)
    v = vectors.features(idx, "audio").double()
    assert torch.isfinite(v).all() and vectors._raw["audio"].abs().max() > 4
    np.testing.assert_allclose(v.mean(0).numpy(), 0, atol=1e-4)
    np.testing.assert_allclose(v.std(0, unbiased=False).numpy(), 1, atol=1e-3)


SMALL = {"tmn": ["fusion_dim=32", "patch_size=8", "mixer_dim=32", "depth=1"],
         "mmer": ["hidden=32", "heads=4", "ffn_dim=64"], "wsum": ["hidden=16"]}


@pytest.mark.parametrize(("head", "text"), [("wsum", None), ("gate", "asr"), ("cmgi", "gold"), ("tmn", "asr"),
                                            ("mmer", "gold")])
def test_frame_heads_train_on_whisper_frames(whisper_cache, tmp_path, head, text):
    """Whisper frames as audio, text tokens of ASR or gold transcripts; no valence/arousal, votes or some transcripts."""
    out = tmp_path / head
    args = ["train", str(whisper_cache), "--head", head, "--audio-stream", "whisper", "--fold", "3",
            "--seeds", "1", "--epochs", "1", "--out", str(out), "--device", "cpu"]
    if text:  # wsum reads no text: --text would be refused
        args += ["--text", text]
    for setting in SMALL.get(head, []):
        args += ["--set", setting]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["roles"]["audio"] == {"stream": "whisper", "layers": list(range(7)) if head == "wsum" else [6]}
    metrics = json.loads(next(out.glob("*/seed0/metrics.json")).read_text())
    assert np.isfinite(metrics["ua"]) and not any(k.startswith("ccc") for k in metrics)
    log = next(out.glob("*/seed0/train.log")).read_text()
    notes = {"tmn": ["no valence/arousal in this cache: the valence/arousal loss term is left out",
                     "no annotator votes in this cache: the soft targets are the one-hot labels"],
             "mmer": ["8 of 80 utterances have no gold transcript: they add no CTC loss term"]}.get(head, [])
    for note in notes:
        assert f"{head}: {note}" in result.output and note in log
    assert ("loss term" in result.output) == bool(notes)


def test_transcripts_spell_other_alphabets_with_the_ctc_vocabulary():
    from sercache.heads.base import CHAR_VOCAB
    from sercache.training.targets import transcript_chars

    def spelled(text: str) -> str:
        return "".join(CHAR_VOCAB[i] for i in transcript_chars(text))

    assert spelled("Heute abend könnte ich es ihm sagen.") == "HEUTE ABEND KOENNTE ICH ES IHM SAGEN"
    assert spelled("Was sind denn das für Tüten, die da unter dem Tisch stehen?") == (
        "WAS SIND DENN DAS FUER TUETEN DIE DA UNTER DEM TISCH STEHEN")
    assert spelled("Fuß  GROẞ Öl Ärger") == "FUSS GROSS OEL AERGER"
    assert spelled("Le café, señor; it’s 7 o'clock") == "LE CAFE SENOR IT'S  O'CLOCK"
    assert transcript_chars("") == [] and transcript_chars(float("nan")) == []


def test_missing_targets_are_left_out_and_said(whisper_cache):
    from sercache.training.targets import extra_targets, target_notes

    table = labelled_utterances(open_cache(whisper_cache), get_preset("iemocap4"),
                                resolve_roles(open_cache(whisper_cache), ("audio",), (), {"audio": "whisper"}, {}))
    targets = extra_targets(table, get_preset("iemocap4"), {"soft", "va", "chars"})
    assert targets.va is None  # no loss term, no CCC
    np.testing.assert_array_equal(targets.soft, np.eye(4, dtype=np.float32)[table.y])
    assert (targets.char_lengths == 0).sum() == (table.transcript == "").sum() == 8 and len(table) == 80
    assert len(target_notes(table, {"soft", "va", "chars"})) == 3
    full = synthetic_manifest(2)
    full["y"] = 0
    assert target_notes(full, {"soft", "va", "chars"}) == []


def test_recorded_roles_round_trip_and_refuse_odd_layers():
    from sercache.training.run_config import RunConfigError

    old = {"audio": {"stream": "ssl", "layers": [12]}}  # runs from before several layers: unchanged JSON
    assert RunConfig.from_dict({"roles": old}).to_dict()["roles"] == old
    several = {"audio": {"stream": "whisper,egemaps", "layers": [[2, 3], 0], "select": True}}
    assert RunConfig.from_dict({"roles": several}).to_dict()["roles"] == several
    for bad in ({"stream": "w", "layers": [[2, "x"]]}, {"stream": "w", "layers": [[]]},
                {"stream": "w", "layers": [2], "select": "yes"}, {"stream": "w", "layers": [2], "pick": True}):
        with pytest.raises(RunConfigError, match="roles.audio"):
            RunConfig.from_dict({"roles": {"audio": bad}})
