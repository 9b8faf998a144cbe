"""MSP-Podcast (sercache/corpora/msp_podcast.py) and its official partitions (splits/folds/partition.py),
on a release tree written here, awkward rows included."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from sercache.corpora import get_corpus
from sercache.extract.manifests import read_corpus
from sercache.splits import DEFAULT_PRESET, DEFAULT_PROTOCOL, ProtocolError, apply_preset, get_preset, make_folds

HEADER = ["FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set"]
SPEAKERS = {"Train": ["10", "11", "12"], "Development": ["20", "21"], "Test1": ["30", "31"], "Test2": ["40"]}


def write_release(root: Path) -> list[list[str]]:
    """Audios/, Labels/labels_consensus.csv and Transcripts/ as the release lays them out."""
    rng = np.random.default_rng(0)
    rows = []
    for partition, speakers in SPEAKERS.items():
        for spk in speakers:
            for k, code in enumerate("NHSA"):
                name = f"MSP-PODCAST_{spk}{k:02d}_0001.wav"
                rows.append([name, code, f"{3 + k * 0.5}", "4.0", "3.5", spk, "Female" if int(spk) % 2 else "Male",
                             partition])
    rows += [
        ["MSP-PODCAST_9001_0001.wav", "X", "4.2", "3.9", "4.0", "10", "Male", "Train"],          # no agreement
        ["MSP-PODCAST_9002_0001.wav", "Z", "4.0", "4.0", "4.0", "11", "Female", "Train"],        # unknown code
        ["MSP-PODCAST_9003_0001.wav", "H", "5.0", "n/a", "4.0", "Unknown", "Unknown", "Train"],  # no speaker, bad V
        ["MSP-PODCAST_9004_0001.wav", "S", "2.0", "2.0", "2.0", "", "", "Test2"],                 # speaker missing
        ["", "N", "4", "4", "4", "10", "Male", "Train"],                                          # no file name
        ["MSP-PODCAST_9005_0001.wav", "", "", "", "", "Unknown", "Unknown", "Test3"],             # hidden labels
        ["MSP-PODCAST_9006_0001.wav", "A", "6", "2", "6", "12", "Female", "Train"],               # audio missing
        ["MSP-PODCAST_9007_0001.wav", "N", "4", "4", "4", "12", "Female", "Holdout"],             # odd partition
    ]
    (root / "Audios").mkdir(parents=True)
    (root / "Labels").mkdir()
    (root / "Transcripts").mkdir()
    for row in rows:
        if row[0] and row[0] != "MSP-PODCAST_9006_0001.wav":
            sf.write(str(root / "Audios" / row[0]), 0.1 * rng.standard_normal(8000), 16000, subtype="PCM_16")
    (root / "Transcripts" / "MSP-PODCAST_1000_0001.txt").write_text("  so I told him\nno way \n")
    with (root / "Labels" / "labels_consensus.csv").open("w", newline="") as f:
        csv.writer(f).writerows([HEADER, *rows])
    return rows


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("msp") / "MSP-PODCAST-Publish-1.12"
    write_release(root)
    return root


def test_reader_keeps_every_labelled_row_and_reports_the_awkward_ones(release):
    m = read_corpus("msp-podcast", release)
    t = m.table.set_index("utt_id")
    assert len(t) == 4 * 8 + 7 and "MSP-PODCAST_9006_0001" in t.index  # every row with a file name
    first = t.loc["MSP-PODCAST_1000_0001"]
    assert (first.label, first.speaker, first.gender, first.partition, first.corpus) == ("N", "10", "M", "Train",
                                                                                          "msp-podcast")
    assert (first.arousal, first.valence, first.dominance) == (3.0, 4.0, 3.5) and first.session == ""
    assert first.transcript == "so I told him no way" and first.path == str(release / "Audios" / f"{first.name}.wav")
    assert first.duration_s == pytest.approx(0.5)
    assert t.loc["MSP-PODCAST_9001_0001"].label == "X"
    assert t.loc["MSP-PODCAST_9003_0001"].speaker == "" and t.loc["MSP-PODCAST_9003_0001"].gender == ""
    assert np.isnan(t.loc["MSP-PODCAST_9003_0001"].valence) and t.loc["MSP-PODCAST_9004_0001"].speaker == ""
    assert t.loc["MSP-PODCAST_9005_0001"].label == "" and t.loc["MSP-PODCAST_9005_0001"].partition == "Test3"
    found = {(p.utt_id, p.severity, p.line): p.reason for p in m.problems}
    labels = str(release / "Labels" / "labels_consensus.csv")
    assert "unknown EmoClass 'Z'" in found[("MSP-PODCAST_9002_0001", "warning", 35)]
    assert "EmoVal='n/a' is not a number" in found[("MSP-PODCAST_9003_0001", "warning", 36)]
    assert "empty FileName" in found[("", "error", 38)]
    assert "Split_Set 'Holdout'" in found[("MSP-PODCAST_9007_0001", "warning", 41)]
    assert found[("MSP-PODCAST_9006_0001", "error", -1)] == "file not found"
    assert all(p.path == labels for p in m.problems if p.stage == "manifest") and len(m.problems) == 5


def test_session_selects_partitions_and_bad_trees_are_refused(release, tmp_path):
    m = read_corpus("msp-podcast", release, ["test1", "Test2"], probe=False)
    assert set(m.table.partition) == {"Test1", "Test2"} and len(m.table) == 4 * 3 + 1
    with pytest.raises(FileNotFoundError, match=r"no utterance in partition\(s\) \['Test9'\]"):
        read_corpus("msp-podcast", release, ["Test9"], probe=False)
    with pytest.raises(FileNotFoundError, match=r"has no Labels/labels_consensus.csv: give the MSP-Podcast release"):
        read_corpus("msp-podcast", tmp_path)
    (tmp_path / "Labels").mkdir()
    (tmp_path / "Labels" / "labels_consensus.csv").write_text("FileName,EmoClass\nx.wav,N\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['EmoAct'"):
        read_corpus("msp-podcast", tmp_path)


def test_registry_entry_defaults_and_the_partition_protocol(release):
    entry = get_corpus("msp-podcast")
    assert (entry.labels, entry.protocol) == ("msp4", "partition")
    assert DEFAULT_PRESET["msp-podcast"] == "msp4" and DEFAULT_PROTOCOL["msp-podcast"] == "partition"
    table = read_corpus("msp-podcast", release, probe=False).table
    assert sorted(set(entry.shards(table))) == ["Development", "Holdout", "Test1", "Test2", "Test3", "Train"]
    labelled = apply_preset(table, get_preset("msp4"))
    assert "X" not in set(labelled.label) and "Z" not in set(labelled.label)
    folds = make_folds(labelled, "partition")
    assert [f.name for f in folds] == ["Test1", "Test2"]  # Test3 has no labels here
    by = labelled.set_index("utt_id").partition
    for fold in folds:
        assert {by[u] for u in fold.train} == {"Train"} and {by[u] for u in fold.valid} == {"Development"}
        assert {by[u] for u in fold.test} == {fold.name} and not set(fold.test) & set(fold.train + fold.valid)
    assert folds[0].speaker_independent and not folds[1].speaker_independent  # Test2 holds an unknown speaker
    assert "MSP-PODCAST_9007_0001" not in {u for f in folds for u in f.train + f.valid + f.test}
    with pytest.raises(ProtocolError, match=r"no labelled utterance in the Development partition"):
        make_folds(labelled[labelled.partition != "Development"], "partition")


def test_extract_then_train_with_the_corpus_defaults(release, tmp_path):
    from sercache.cli import cli
    from sercache.store import open_cache

    runner = CliRunner()
    out = tmp_path / "cache"
    made = runner.invoke(cli, ["extract", str(release), "--corpus", "msp-podcast", "--out", str(out), "--streams",
                               "mfcc", "--no-progress"], catch_exceptions=False)
    assert made.exit_code == 0, made.output
    cache = open_cache(out)
    assert sorted(cache.shards) == ["Development", "Holdout", "Test1", "Test2", "Test3", "Train"]
    assert set(cache.utterances.partition) >= {"Train", "Test1"}
    trained = runner.invoke(cli, ["train", str(out), "--head", "linear", "--audio-stream", "mfcc", "--seeds", "1",
                                  "--epochs", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")],
                            catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    assert "protocol: partition, the default for msp-podcast caches" in trained.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["protocol"] == "partition" and config["labels"]["preset"] == "msp4"
    assert sorted(p.parent.parent.name for p in (tmp_path / "run").glob("*/seed0/DONE")) == ["Test1", "Test2"]
