"""EMOVO: a corpus with its own emotion codes, added as one file (sercache/corpora/emovo.py) and this test."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from sercache.cli import cli
from sercache.corpora import get_corpus
from sercache.extract.manifests import read_corpus
from sercache.splits import DEFAULT_PRESET, DEFAULT_PROTOCOL, apply_preset, get_preset, make_folds

SPEAKERS = ("f1", "f2", "f3", "m1", "m2", "m3")


def write_wav(path: Path, seconds: float, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sf.write(str(path), rng.integers(-3000, 3000, int(16_000 * seconds), dtype=np.int16), 16_000, subtype="PCM_16")
    return path


def make_emovo(root: Path, emotions: tuple[str, ...] = ("neu", "gio", "tri", "rab")) -> list[Path]:
    return [write_wav(root / s / f"{e}-{s}-b1.wav", 0.5, seed=i)
            for i, (s, e) in enumerate((s, e) for s in SPEAKERS for e in emotions)]


def test_read_emovo(tmp_path):
    wavs = make_emovo(tmp_path, ("neu", "pau"))
    bad_code = write_wav(tmp_path / "f1" / "xyz-f1-b1.wav", 0.1, seed=99)
    m = read_corpus("emovo", tmp_path)
    assert len(m.table) == 12 and m.table.utt_id.tolist()[:2] == ["neu-f1-b1", "neu-f2-b1"]
    row = m.table[m.table.utt_id == "pau-m2-b1"].iloc[0]
    assert (row.corpus, row.path, row.speaker, row.gender, row.label, row.sentence) == (
        "emovo", str(wavs[9]), "m2", "M", "pau", "b1")
    assert [(p.utt_id, p.path, p.severity) for p in m.problems] == [("xyz-f1-b1", str(bad_code), "warning")]
    assert "EMOVO" in m.problems[0].reason


def test_emovo_declares_its_presets_and_defaults(tmp_path):
    make_emovo(tmp_path, ("neu", "gio", "tri", "rab", "pau", "dis", "sor"))
    table = read_corpus("emovo", tmp_path, probe=False).table
    assert DEFAULT_PRESET["emovo"] == "emovo4" and DEFAULT_PROTOCOL["emovo"] == "lospk"
    assert [p.name for p in get_corpus("emovo").presets] == ["emovo7", "emovo4"]
    four = apply_preset(table, get_preset("emovo4"))
    assert sorted(set(four.label)) == ["gio", "neu", "rab", "tri"] and len(four) == 24
    assert sorted(set(apply_preset(table, get_preset("emovo7"))["class"])) == [
        "angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised"]
    folds = make_folds(four, "lospk")
    assert sorted(u for f in folds for u in f.test) == sorted(four.utt_id)  # every utterance tested once
    assert all(set(four[four.utt_id.isin(f.test)].speaker) & set(four[four.utt_id.isin(f.train)].speaker) == set()
               for f in folds)


def test_emovo_extracts_and_trains_with_its_defaults(tmp_path):
    make_emovo(tmp_path / "EMOVO")
    runner = CliRunner()
    result = runner.invoke(cli, ["extract", str(tmp_path / "EMOVO"), "--corpus", "emovo", "--out",
                                 str(tmp_path / "cache"), "--streams", "mfcc", "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["train", str(tmp_path / "cache"), "--head", "linear", "--audio-stream", "mfcc",
                                 "--fold", "1", "--seeds", "1", "--epochs", "2", "--device", "cpu", "--no-progress",
                                 "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["labels"]["preset"] == "emovo4" and config["protocol"] == "lospk"
