"""What `sercache train` tells a first-time user (issue 21): the labels used and dropped, one seed for
deterministic heads, each fold's test line once, and one closing line of mean ± std over folds and chance."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from sercache.cli import cli
from sercache.training.outcome import score_line, training_outcome
from sercache.training.run import TrainRequest, plan_run
from tests.conftest import synthetic_manifest, write_signal_cache

LOGREG = ["--head", "logreg", "--audio-stream", "mfcc", "--labels", "iemocap4", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def mixed_cache(tmp_path_factory) -> Path:
    """80 utterances of the four iemocap4 classes plus 5 `fru` and 3 `xxx` ones, which iemocap4 drops."""
    manifest = synthetic_manifest(2)
    extra = manifest.iloc[:8].copy()
    extra["utt_id"] = [f"{u}_extra" for u in extra.utt_id]
    extra["label"] = ["fru"] * 5 + ["xxx"] * 3
    return write_signal_cache(tmp_path_factory.mktemp("mixed") / "cache", pd.concat([manifest, extra],
                                                                                       ignore_index=True))


def train_cli(cache: Path, out: Path, *options: str) -> str:
    result = CliRunner().invoke(cli, ["train", str(cache), *LOGREG, "--out", str(out), *options])
    assert result.exit_code == 0, result.output
    return result.output


def test_train_names_the_preset_its_classes_and_what_it_dropped(mixed_cache, tmp_path):
    out = train_cli(mixed_cache, tmp_path / "run", "--fold", "1")
    assert ("labels: iemocap4 (neutral, happy, sad, angry); 80 of 88 utterances used, 8 dropped: labels outside "
            "the preset (fru 5, xxx 3)") in out, out


def test_deterministic_heads_train_one_seed_unless_asked_and_then_say_why_it_is_pointless(mixed_cache, tmp_path):
    out = train_cli(mixed_cache, tmp_path / "one", "--fold", "1")
    assert json.loads((tmp_path / "one" / "config.json").read_text())["seeds"] == [0]
    assert "loso-1 seed 0: test UA" in out and "loso-1 seed 1" not in out and "note:" not in out
    two = train_cli(mixed_cache, tmp_path / "two", "--fold", "1", "--seeds", "2")
    assert "note: logreg is deterministic" in two and "--seeds 2 trains 2 identical copies" in two
    for head, seeds in (("svm", [0]), ("mlp", [0, 1, 2])):  # gradient-trained heads keep three seeds
        config, _, cache = plan_run(TrainRequest(cache=mixed_cache, head=head, streams={"audio": "mfcc"}))
        cache.close()
        assert config.seeds == seeds, head


def test_each_fold_is_printed_once_then_mean_and_std_over_folds_and_chance(mixed_cache, tmp_path):
    out = train_cli(mixed_cache, tmp_path / "run", "--fold", "1,2")
    tests = re.findall(r"^logreg (loso-\d) seed 0: test UA ([\d.]+)% WA ([\d.]+)%", out, re.M)
    assert sorted(f for f, _, _ in tests) == ["loso-1", "loso-2"], out  # each fold once
    ua = np.array([float(u) for _, u, _ in tests])
    wa = np.array([float(w) for _, _, w in tests])
    line = next(ln for ln in out.splitlines() if ln.startswith("test UA "))
    assert line == (f"test UA {ua.mean():.2f} ± {ua.std(ddof=1):.2f}%  WA {wa.mean():.2f} ± {wa.std(ddof=1):.2f}%  "
                    "(mean ± std over 2 folds; chance UA 25.00%)"), out
    again = train_cli(mixed_cache, tmp_path / "run", "--fold", "1,2")  # resumed: still the whole run's line
    assert line in again and "0 fold/seed trained" in again


def test_the_score_line_averages_seeds_within_a_fold_first():
    results = [{"fold": "a", "seed": 0, "ok": True, "ua": 0.5, "wa": 0.6}, {"fold": "a", "seed": 1, "ok": True,
               "ua": 0.7, "wa": 0.8}, {"fold": "b", "seed": 0, "ok": True, "ua": 0.4, "wa": 0.4},
               {"fold": "b", "seed": 1, "ok": False, "error": "x"}]
    ua, wa = np.array([0.6, 0.4]), np.array([0.7, 0.4])
    assert score_line(results, 4) == (f"test UA {100 * ua.mean():.2f} ± {100 * ua.std(ddof=1):.2f}%  WA "
                                      f"{100 * wa.mean():.2f} ± {100 * wa.std(ddof=1):.2f}%  (mean ± std over 2 folds, "
                                      "seeds averaged per fold; chance UA 25.00%)")
    assert training_outcome("r", [results[-1]]).scores is None  # nothing finished: no score line
