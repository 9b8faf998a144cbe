"""External fold assignments (`--folds`: CSV and EmoBox folders) and validation by speakers."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sercache.splits import ProtocolError, apply_preset, folds_from_file, get_preset, make_folds
from sercache.synthetic.cache import SyntheticStream, manifest_from_rows, write_synthetic_cache

SPEAKERS = ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"]
CODES = {"W": "anger", "F": "happiness", "T": "sadness", "N": "neutral", "L": "boredom"}  # L: outside emodb4
TEXTS = ["a01", "a02", "b01"]


def emodb_manifest() -> pd.DataFrame:
    """EmoDB-shaped: 10 speakers x 5 emotions x 3 texts, ids like ``03a01Wa``, no sessions."""
    rows = [{"utt_id": f"{spk}{text}{letter}a", "corpus": "emodb", "speaker": spk, "label": label,
             "duration_s": 0.5 + 0.1 * k}
            for spk in SPEAKERS for letter, label in CODES.items() for k, text in enumerate(TEXTS)]
    return manifest_from_rows(rows)


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return apply_preset(emodb_manifest(), get_preset("emodb4")).reset_index(drop=True)


def speaker_of(uid: str) -> str:
    return uid[:2]


def fold_of(uid: str) -> int:
    """Speaker-independent 5-fold assignment: 2 speakers per fold."""
    return SPEAKERS.index(speaker_of(uid)) // 2 + 1


def write_jsonl(path: Path, ids: list[str], prefix: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"key": f"emodb-{u}" if prefix else u, "dataset": "emodb",
                         "wav": f"downloads/emodb/wav/{u}.wav", "emo": "anger"}) for u in ids]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_emobox(root: Path, ids: list[str]) -> dict[int, list[str]]:
    """Folds 1..5 in EmoBox layout; fold 2 uses the ``_fold2`` spelling, fold 3 has both (the other is bogus)."""
    tests = {k: [u for u in ids if fold_of(u) == k] for k in range(1, 6)}
    for k, test in tests.items():
        train = [u for u in ids if fold_of(u) != k]
        sep = "" if k == 2 else "_"
        write_jsonl(root / f"fold_{k}" / f"emodb_train_fold{sep}{k}.jsonl", train)
        write_jsonl(root / f"fold_{k}" / f"emodb_test_fold{sep}{k}.jsonl", test)
    write_jsonl(root / "fold_3" / "emodb_test_fold3.jsonl", tests[1])  # must lose to emodb_test_fold_3.jsonl
    write_jsonl(root / "fold_3" / "emodb_train_fold3.jsonl", tests[2])
    return tests


def check_disjoint(folds, n_valid_speakers: int | None = None) -> None:
    for f in folds:
        tr, va, te = ({speaker_of(u) for u in ids} for ids in (f.train, f.valid, f.test))
        assert not (tr & va) and not (tr & te) and not (va & te), f.name
        assert f.valid and f.train and f.test
        if n_valid_speakers is not None:
            assert len(va) == n_valid_speakers, (f.name, va)
            assert f.description.endswith("validation: speakers " + ", ".join(sorted(va))), f.description


def test_csv_fold_column(table, tmp_path):
    path = tmp_path / "folds.csv"
    pd.DataFrame({"utt_id": table.utt_id, "fold": table.utt_id.map(fold_of)}).to_csv(path, index=False)
    result = folds_from_file(table, path)
    assert [f.name for f in result.folds] == [f"fold-{k}" for k in range(1, 6)]
    for f in result.folds:
        k = int(f.name.split("-")[1])
        assert sorted(f.test) == sorted(u for u in table.utt_id if fold_of(u) == k)
        assert sorted(f.train + f.valid) == sorted(u for u in table.utt_id if fold_of(u) != k)
        assert f.speaker_independent
    check_disjoint(result.folds, 2)  # default: speakers, 20% of 8 training speakers
    assert result.options["valid"] == "speakers" and result.options["format"] == "csv-fold"
    assert result.warnings == []
    grouped = folds_from_file(table, path, valid="group")  # validate on the next fold, cyclically
    assert {fold_of(u) for u in grouped.folds[0].valid} == {2} and {fold_of(u) for u in grouped.folds[4].valid} == {1}


def test_speaker_dependent_folds_validate_on_a_fraction(table, tmp_path):
    path = tmp_path / "by_text.csv"
    pd.DataFrame({"utt_id": table.utt_id, "fold": table.utt_id.str[2:5]}).to_csv(path, index=False)
    result = folds_from_file(table, path)
    assert result.options["valid"] == "fraction" and not any(f.speaker_independent for f in result.folds)
    assert result.warnings == ["validation: 20% of each fold's training utterances, not held-out speakers, because "
                               "fold fold-a01 tests (nearly) every training speaker (speaker-dependent folds)"]
    with pytest.raises(ProtocolError, match="fold fold-a01: validation by speakers needs .* use --valid fraction"):
        folds_from_file(table, path, valid="speakers")


def test_csv_split_column(table, tmp_path):
    role = {"03": "test", "08": "dev", "09": "validation"}
    path = tmp_path / "split.csv"
    pd.DataFrame({"utt_id": table.utt_id, "split": [role.get(speaker_of(u), "train") for u in table.utt_id]}
                 ).to_csv(path, index=False)
    (fold,) = folds_from_file(table, path).folds
    assert fold.name == "split" and {speaker_of(u) for u in fold.test} == {"03"}
    assert {speaker_of(u) for u in fold.valid} == {"08", "09"} and "given by" in fold.description
    path.write_text("utt_id,split\n" + "".join(f"{u},{'test' if speaker_of(u) == '03' else 'train'}\n"
                                                for u in table.utt_id))
    (carved,) = folds_from_file(table, path, valid="fraction", valid_fraction=0.25).folds
    assert not set(carved.valid) & set(carved.test) and len(carved.valid) == pytest.approx(0.25 * 9 * 12, abs=1)
    path.write_text("utt_id,split\n03a01Wa,test\n03a02Wa,holdout\n")
    with pytest.raises(ProtocolError, match=r"split\.csv:3: split 'holdout'"):
        folds_from_file(table, path)


def test_emobox_folder_both_spellings_and_prefixed_keys(table, tmp_path, caplog):
    root = tmp_path / "emodb"
    tests = write_emobox(root, list(emodb_manifest().utt_id))  # includes boredom (not in emodb4)
    with caplog.at_level(logging.DEBUG, logger="sercache.splits.foldfiles"):
        result = folds_from_file(table, root, cache_ids=list(emodb_manifest().utt_id))
    assert "using emodb_test_fold_3.jsonl" in caplog.text
    labelled = set(table.utt_id)
    for k, f in enumerate(result.folds, 1):
        assert f.name == f"fold-{k}" and f.test == [u for u in tests[k] if u in labelled]
        assert f.speaker_independent
    assert result.folds[1].description.startswith("test: fold_2/emodb_test_fold2.jsonl (24 utterances)")
    check_disjoint(result.folds, 2)
    assert len(result.warnings) == 1 and result.warnings[0].startswith("30 utterance(s)")  # boredom: in cache, unused
    assert result.options["format"] == "emobox" and len(result.options["sha1"]) == 40


def test_unmatched_ids_reported_by_name_and_count(table, tmp_path):
    path = tmp_path / "folds.csv"
    ghosts = [f"99a0{k}Wa" for k in range(7)]
    rows = [(u, fold_of(u)) for u in table.utt_id] + [(g, 1) for g in ghosts]
    pd.DataFrame(rows, columns=["utt_id", "fold"]).to_csv(path, index=False)
    warning = folds_from_file(table, path).warnings[0]
    assert warning.startswith(f"7 of the {len(rows)} ids in {path} match no utterance")
    assert warning.endswith(", ".join(ghosts[:5]) + " and 2 more")
    pd.DataFrame({"utt_id": ghosts, "fold": [1, 2] * 3 + [1]}).to_csv(path, index=False)
    with pytest.raises(ProtocolError, match="none of the 7 ids .* match an utterance of the cache"):
        folds_from_file(table, path)


def test_utterances_without_fold_and_empty_classes_reported(table, tmp_path):
    path = tmp_path / "folds.csv"
    # speaker 03 has no fold; fold 1 (08) has no sad test utterance; only fold 2 (09) has neutral ones
    keep = table[(table.speaker != "03") & ~((table.speaker == "08") & (table["class"] == "sad"))]
    keep = keep[~((keep["class"] == "neutral") & (keep.speaker != "09"))]
    fold = {"08": 1, "09": 2, "10": 3, "11": 3, "12": 3, "13": 4, "14": 4, "15": 4, "16": 4}
    pd.DataFrame({"utt_id": keep.utt_id, "fold": keep.speaker.map(fold)}).to_csv(path, index=False)
    warnings = folds_from_file(table, path, valid="fraction").warnings
    n_missing = len(table) - len(keep)
    assert warnings[0].startswith(f"{n_missing} labelled utterance(s) of the cache have no fold")
    assert "03a01Wa" in warnings[0] and f"and {n_missing - 5} more" in warnings[0]
    assert any(w.startswith("fold fold-1: its test set has no 'sad', 'neutral' utterance") for w in warnings)
    assert any(w.startswith("fold fold-3: its test set has no 'neutral' utterance") for w in warnings)
    assert any(w.startswith("fold fold-2: its TRAINING set has no 'neutral'") for w in warnings)
    assert warnings.index(next(w for w in warnings if "fold-1" in w)) > 0  # no-fold report comes first


def test_malformed_json_line_names_file_and_line(table, tmp_path):
    root = tmp_path / "emodb"
    write_emobox(root, list(table.utt_id))
    bad = root / "fold_4" / "emodb_test_fold_4.jsonl"
    lines = bad.read_text().splitlines()
    lines[2] = lines[2][:-1]  # drop the closing brace
    bad.write_text("\n".join(lines))
    with pytest.raises(ProtocolError, match=rf"{bad}:3: malformed JSON"):
        folds_from_file(table, root)
    (root / "fold_5" / "emodb_test_fold_5.jsonl").unlink()
    bad.write_text("\n".join(lines[:2]))
    with pytest.raises(ProtocolError, match=r"fold_5 has no test file for fold 5"):
        folds_from_file(table, root)


def test_valid_speakers_disjoint_counted_deterministic_and_spread(table):
    for protocol in ("lospk", "predefined"):
        df = table.assign(fold=table.utt_id.map(fold_of))
        folds = make_folds(df, protocol, valid="speakers", valid_speakers=3, seed=1)
        check_disjoint(folds, 3)
        again = make_folds(df, protocol, valid="speakers", valid_speakers=3, seed=2)
        assert [f.valid for f in folds] == [f.valid for f in again]
        chosen = [tuple(sorted({speaker_of(u) for u in f.valid})) for f in folds]
        assert len(set(chosen)) == len(chosen), chosen  # each fold validates on other speakers
    lospk = make_folds(table, "lospk", valid="speakers")  # None: round(20% of 9) = 2
    assert [sorted({speaker_of(u) for u in f.valid}) for f in lospk[:2]] == [["08", "09"], ["09", "10"]]
    assert lospk[-1].description == "test speaker 16; validation: speakers 03, 08"  # cyclic
    with pytest.raises(ProtocolError, match="give 1..8"):
        make_folds(table, "lospk", valid="speakers", valid_speakers=9)
    with pytest.raises(ProtocolError, match="use --valid fraction"):
        make_folds(table.assign(session=table.speaker, speaker=""), "loso", valid="speakers")


def test_predefined_without_fold_column_points_to_folds(table):
    with pytest.raises(ProtocolError, match=r"only `sercache extract --corpus csv` manifests fill it.*--folds PATH"):
        make_folds(table, "predefined")


def test_cli_train_with_emobox_folds_and_resume(tmp_path):
    from sercache.cli import cli

    manifest = emodb_manifest()
    cache = write_synthetic_cache(tmp_path / "cache", manifest, [SyntheticStream("ssl", "ssl", 16, (0, 1))])
    root = tmp_path / "emobox"
    ids = list(manifest.utt_id) + ["16b10Wb"]  # one id the cache lacks
    tests = write_emobox(root, ids)
    runner = CliRunner()
    args = ["train", str(cache), "--folds", str(root), "--head", "linear", "--epochs", "1", "--seeds", "1",
            "--device", "cpu", "--out", str(tmp_path / "run")]
    result = runner.invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "warning: 1 of the 151 ids" in result.stderr and "16b10Wb" in result.stderr
    labelled = set(apply_preset(manifest, get_preset("emodb4")).utt_id)
    folds = json.loads((tmp_path / "run" / "folds.json").read_text())
    assert [f["test"] for f in folds] == [[u for u in tests[k] if u in labelled] for k in range(1, 6)]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["protocol"] == "folds" and config["protocol_options"]["path"] == str(root.resolve())
    assert config["protocol_options"]["valid"] == "speakers" and len(config["fold_warnings"]) == 2
    assert len(list((tmp_path / "run").glob("fold-*/seed0/DONE"))) == 5
    again = runner.invoke(cli, args, catch_exceptions=False)  # same files: resumes, nothing left to train
    assert again.exit_code == 0 and "5 fold/seed result(s) already done" in again.stderr
    moved = tests[1][:1]
    write_jsonl(root / "fold_1" / "emodb_test_fold_1.jsonl", tests[1][1:])
    write_jsonl(root / "fold_1" / "emodb_train_fold_1.jsonl", moved + [u for u in ids if fold_of(u) != 1])
    refused = runner.invoke(cli, args)
    assert refused.exit_code == 2 and "other settings: protocol_options.sha1: stored" in refused.output
    both = runner.invoke(cli, [*args[:-2], "--protocol", "lospk"])
    assert both.exit_code == 2 and "--folds" in both.output and "drop --protocol lospk" in both.output


def test_train_defaults_to_the_corpus_speaker_independent_protocol(tmp_path):
    """An EmoDB-like cache (speakers, no sessions): `train` without --protocol runs lospk and says so."""
    from click.testing import CliRunner

    from sercache.cli import cli
    from sercache.splits import default_protocol
    from tests.conftest import synthetic_manifest, write_signal_cache

    manifest = synthetic_manifest(n_per_speaker_label=2).assign(corpus="emodb", session="")
    cache = write_signal_cache(tmp_path / "cache", manifest)
    result = CliRunner().invoke(cli, ["train", str(cache), "--head", "logreg", "--audio-stream", "mfcc",
                                      "--labels", "iemocap4", "--fold", "1", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "protocol: lospk, the default for emodb caches" in result.output
    report = CliRunner().invoke(cli, ["report", str(tmp_path / "run")])
    assert "protocol: lospk (not given: the default for emodb caches)" in report.output
    iemocap = synthetic_manifest(n_per_speaker_label=1)
    assert default_protocol("iemocap", iemocap) == "loso" and default_protocol("csv", iemocap) == "loso"
    assert default_protocol("csv", iemocap.assign(session="")) == "lospk"


def test_a_refused_train_writes_nothing_and_the_corrected_retry_runs(small_cache, tmp_path):
    """#23.8: a fold name that cannot be a folder, or a missing GPU, refuses the run before anything is written."""
    import torch

    from sercache.cli import cli
    from sercache.store import open_cache

    ids = list(open_cache(small_cache).utterances.utt_id)
    bad, good = tmp_path / "bad.csv", tmp_path / "good.csv"
    pd.DataFrame({"utt_id": ids, "fold": ["a/b" if i % 2 else "c" for i in range(len(ids))]}).to_csv(bad, index=False)
    pd.DataFrame({"utt_id": ids, "fold": ["b" if i % 2 else "c" for i in range(len(ids))]}).to_csv(good, index=False)
    run = tmp_path / "run"
    args = ["train", str(small_cache), "--head", "linear", "--audio-stream", "mfcc", "--epochs", "1", "--seeds", "1",
            "--no-progress", "--out", str(run)]
    refused = CliRunner().invoke(cli, [*args, "--folds", str(bad), "--device", "cpu"])
    assert refused.exit_code == 2 and "'fold-a/b'" in refused.output, refused.output
    assert not run.exists()
    if not torch.cuda.is_available():
        no_gpu = CliRunner().invoke(cli, [*args, "--folds", str(good), "--device", "cuda"])
        assert no_gpu.exit_code == 2 and "--device cuda" in no_gpu.output, no_gpu.output
        assert not run.exists()
    retry = CliRunner().invoke(cli, [*args, "--folds", str(good), "--device", "cpu"])
    assert retry.exit_code == 0, retry.output
    (run / "folds.json").unlink()  # a run directory without its folds: report and eval say so, not Errno 2
    for command in ("report", "eval"):
        result = CliRunner().invoke(cli, [command, str(run)])
        assert result.exit_code == 2 and "Errno" not in result.output, result.output
        assert f"{run / 'folds.json'} is missing" in result.output

