"""The `emobox` fold protocol (sercache/splits/folds/emobox.py): EmoBox fold folders, as a registry entry."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from sercache.splits import ProtocolError, apply_preset, get_preset
from sercache.splits.registry import get_protocol, protocols
from sercache.synthetic.cache import SyntheticStream, manifest_from_rows, write_synthetic_cache

SPEAKERS = ["03", "08", "09", "10", "11", "12"]
CODES = {"W": "anger", "F": "happiness", "T": "sadness", "N": "neutral"}


def manifest() -> pd.DataFrame:
    rows = [{"utt_id": f"{spk}a0{k}{letter}a", "corpus": "emodb", "speaker": spk, "label": label,
             "duration_s": 0.5 + 0.1 * k} for spk in SPEAKERS for letter, label in CODES.items() for k in (1, 2)]
    return manifest_from_rows(rows)


def write_folds(root: Path, ids: list[str]) -> dict[int, list[str]]:
    """Three folds, two speakers tested in each, in EmoBox's layout and key spelling."""
    tests = {k: [u for u in ids if SPEAKERS.index(u[:2]) // 2 + 1 == k] for k in (1, 2, 3)}
    for k, test in tests.items():
        for role, part in (("train", [u for u in ids if u not in test]), ("test", test)):
            path = root / f"fold_{k}" / f"emodb_{role}_fold_{k}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps({"key": f"emodb-{u}", "dataset": "emodb", "wav": f"wav/{u}.wav"}) + "\n"
                                    for u in part))
    return tests


def test_emobox_is_a_registered_protocol_that_reads_fold_files():
    entry = get_protocol("emobox")
    assert "emobox" in protocols() and entry.choosable and entry.fold_files == ("emobox",)
    assert entry.read_folder is not None and "validation" not in entry.options


def test_emobox_folds_match_the_files_and_a_csv_is_refused(tmp_path):
    table = apply_preset(manifest(), get_preset("emodb4")).reset_index(drop=True)
    tests = write_folds(tmp_path / "emobox", list(table.utt_id))
    result = get_protocol("emobox").function()(table, tmp_path / "emobox")
    assert [f.name for f in result.folds] == ["fold-1", "fold-2", "fold-3"]
    assert [f.test for f in result.folds] == [tests[1], tests[2], tests[3]]
    for fold in result.folds:  # validation is carved from the training side, by speakers
        assert not set(fold.valid) & set(fold.test) and not set(fold.train) & set(fold.valid) and fold.valid
        assert fold.speaker_independent
    assert result.options["format"] == "emobox" and result.options["valid"] == "speakers"
    csv = tmp_path / "folds.csv"
    csv.write_text("utt_id,fold\n" + "".join(f"{u},{u[:2]}\n" for u in table.utt_id))
    with pytest.raises(ProtocolError, match=r"--protocol emobox reads emobox fold files; .*folds.csv is csv-fold"):
        get_protocol("emobox").function()(table, csv)


def test_cli_protocol_emobox_trains_records_and_replays(tmp_path):
    from sercache.cli import cli

    cache = write_synthetic_cache(tmp_path / "cache", manifest(), [SyntheticStream("ssl", "ssl", 8, (0, 1))])
    root = tmp_path / "emobox"
    write_folds(root, list(manifest().utt_id))
    args = ["train", str(cache), "--protocol", "emobox", "--folds", str(root), "--head", "linear", "--epochs", "1",
            "--seeds", "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "run")]
    runner = CliRunner()
    made = runner.invoke(cli, args, catch_exceptions=False)
    assert made.exit_code == 0, made.output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["protocol"] == "emobox" and config["protocol_options"]["path"] == str(root.resolve())
    assert len(list((tmp_path / "run").glob("fold-*/seed0/DONE"))) == 3
    again = runner.invoke(cli, ["train", "--config", str(tmp_path / "run" / "config.json"), "--out",
                                str(tmp_path / "again"), "--no-progress"], catch_exceptions=False)
    assert again.exit_code == 0 and "with the same settings" in again.stderr, again.output
    assert json.loads((tmp_path / "again" / "config.json").read_text())["protocol"] == "emobox"
    no_path = runner.invoke(cli, args[:4] + args[6:])  # --protocol emobox without --folds
    assert no_path.exit_code == 2 and "--protocol emobox reads fold files: give them with --folds PATH" in no_path.output
