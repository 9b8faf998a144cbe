"""Label presets, soft labels and fold protocols."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sercache.extract.manifests import read_corpus
from sercache.splits import PRESETS, ProtocolError, apply_preset, get_preset, make_folds, soft_labels

DATA = Path(__file__).parent / "data" / "iemocap4_ids.tsv.gz"
# The standard 4-class IEMOCAP set: 5531 utterances, per session 1085/1023/1151/1031/1241 (EmoBox's folds).
LOSO_COUNTS = {"loso-1": 1085, "loso-2": 1023, "loso-3": 1151, "loso-4": 1031, "loso-5": 1241}
SAMPLE_IDS = {"loso-1": ["Ses01M_script01_3_M020", "Ses01F_script03_2_M020"],
              "loso-2": ["Ses02F_script01_1_F021", "Ses02F_impro04_M006"],
              "loso-3": ["Ses03M_impro05b_F015", "Ses03F_script02_2_M044"],
              "loso-4": ["Ses04M_impro07_M002", "Ses04F_script01_2_M000"],
              "loso-5": ["Ses05M_impro08_M009", "Ses05M_script01_2_F005"]}


def write_label_tree(root: Path, rows: pd.DataFrame) -> Path:
    """EmoEvaluation files only (no audio): enough for the reader with probe=False."""
    for dialog, group in rows.groupby(rows.utt_id.str.rsplit("_", n=1).str[0]):
        session = int(dialog[3:5])
        d = root / f"Session{session}" / "dialog" / "EmoEvaluation"
        d.mkdir(parents=True, exist_ok=True)
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        for k, r in enumerate(group.itertuples()):
            lines += [f"[{k:.4f} - {k + r.duration_s:.4f}]\t{r.utt_id}\t{r.emotion}\t[2.5000, 2.5000, 2.5000]",
                      "C-E1:\tNeutral;\t()", ""]
        (d / f"{dialog}.txt").write_text("\n".join(lines))
    return root


@pytest.fixture(scope="module")
def iemocap4(tmp_path_factory) -> pd.DataFrame:
    with gzip.open(DATA, "rt") as fh:
        rows = pd.read_csv(fh, sep="\t")
    root = write_label_tree(tmp_path_factory.mktemp("iemocap-labels"), rows)
    manifest = read_corpus("iemocap", root, probe=False).table
    return apply_preset(manifest, get_preset("iemocap4"))


def test_loso_reproduces_the_standard_iemocap_folds(iemocap4):
    assert len(iemocap4) == 5531
    folds = make_folds(iemocap4, "loso")
    assert {f.name: len(f.test) for f in folds} == LOSO_COUNTS
    for f in folds:
        assert set(SAMPLE_IDS[f.name]) <= set(f.test)
        assert len(f.train) + len(f.valid) + len(f.test) == 5531
    assert iemocap4["class"].value_counts().to_dict() == {"neutral": 1708, "happy": 1636, "angry": 1103, "sad": 1084}
    assert iemocap4.groupby("dialog_type").size().to_dict() == {"impro": 2943, "script": 2588}


def _check_invariants(df: pd.DataFrame, folds, covers_all: bool, speaker_disjoint: bool) -> None:
    speaker = dict(zip(df.utt_id, df.speaker))
    for f in folds:
        tr, va, te = set(f.train), set(f.valid), set(f.test)
        assert not (tr & va) and not (tr & te) and not (va & te), f.name
        assert len(tr) + len(va) + len(te) == len(f.train) + len(f.valid) + len(f.test)  # no duplicates
        assert tr and va and te
        if speaker_disjoint:
            test_speakers = {speaker[u] for u in te}
            assert not test_speakers & {speaker[u] for u in tr | va}, f.name
            assert f.speaker_independent
    if covers_all:
        tested = [u for f in folds for u in f.test]
        assert sorted(tested) == sorted(df.utt_id)  # every utterance tested exactly once


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("protocol,options,covers,disjoint", [
    ("loso", {}, True, True),
    ("loso", {"valid": "fraction"}, True, True),
    ("lospk", {}, True, True),
    ("loso", {"valid": "speakers"}, True, True),
    ("lospk", {"valid": "speakers", "valid_speakers": 3}, True, True),
    ("session-holdout", {"session": "3"}, False, True),
    ("random", {"ratios": (0.8, 0.1, 0.1), "n_folds": 2}, False, False),
])
def test_protocol_invariants(iemocap4, seed, protocol, options, covers, disjoint):
    folds = make_folds(iemocap4, protocol, seed=seed, **options)
    _check_invariants(iemocap4, folds, covers, disjoint)
    again = make_folds(iemocap4, protocol, seed=seed, **options)
    assert [(f.train, f.valid, f.test) for f in folds] == [(f.train, f.valid, f.test) for f in again]


def test_validation_comes_from_training_sessions(iemocap4):
    session = dict(zip(iemocap4.utt_id, iemocap4.session))
    for f in make_folds(iemocap4, "loso"):
        test_session = {session[u] for u in f.test}
        valid_sessions = {session[u] for u in f.valid}
        assert len(valid_sessions) == 1 and not valid_sessions & test_session
    assert len(make_folds(iemocap4, "lospk")) == 10
    speaker = dict(zip(iemocap4.utt_id, iemocap4.speaker))
    by_speakers = make_folds(iemocap4, "loso", valid="speakers")  # None: round(20% of 8 training speakers) = 2
    assert [sorted({speaker[u] for u in f.valid}) for f in by_speakers[:2]] == [["Ses02F", "Ses02M"],
                                                                                 ["Ses03F", "Ses03M"]]
    assert by_speakers[4].description == "test session 5; validation: speakers Ses01F, Ses01M"


def test_no_global_random_state(iemocap4):
    np.random.seed(1)
    a = make_folds(iemocap4, "random", seed=3)
    state = np.random.get_state()[1].copy()
    np.random.seed(99)
    b = make_folds(iemocap4, "random", seed=3)
    assert a[0].test == b[0].test
    np.random.seed(1)
    make_folds(iemocap4, "random", seed=3)
    assert (np.random.get_state()[1] == state).all()  # the global generator was not consumed
    assert make_folds(iemocap4, "random", seed=4)[0].test != a[0].test


def test_subsets_and_predefined(iemocap4):
    impro = make_folds(iemocap4, "loso", subset="impro")
    assert sum(len(f.test) for f in impro) == 2943
    df = iemocap4.assign(fold=iemocap4.session)
    folds = make_folds(df, "predefined")
    assert [len(f.test) for f in folds] == list(LOSO_COUNTS.values())
    _check_invariants(df, folds, True, True)
    with pytest.raises(ProtocolError, match="unknown protocol"):
        make_folds(iemocap4, "kfold")
    with pytest.raises(ProtocolError, match="session '9'"):
        make_folds(iemocap4, "session-holdout", session="9")


def test_presets():
    df = pd.DataFrame({"label": ["neu", "hap", "exc", "sad", "ang", "fru", "xxx", "sur"]})
    assert apply_preset(df, get_preset("iemocap4"))["class"].tolist() == ["neutral", "happy", "happy", "sad", "angry"]
    assert apply_preset(df, get_preset("iemocap4-exc"))["class"].tolist() == ["neutral", "happy", "sad", "angry"]
    assert apply_preset(df, get_preset("iemocap4-fru"))["class"].tolist()[-1] == "angry"
    six = apply_preset(df, get_preset("iemocap6"))
    assert six["class"].tolist() == ["neutral", "happy", "excited", "sad", "angry", "frustrated"]
    assert six.y.tolist() == [0, 1, 4, 2, 3, 5]
    assert get_preset("glam") is get_preset("iemocap4-exc")
    assert {"ravdess8", "ravdess4", "emodb4", "emodb7", "cremad4", "cremad6"} <= set(PRESETS)
    with pytest.raises(KeyError, match="presets:"):
        get_preset("iemocap5")


def test_soft_labels_from_votes():
    preset = get_preset("iemocap4")
    votes = pd.Series([json.dumps({"C-E1": ["Neutral"], "C-E2": ["Neutral", "Frustration"], "C-E3": ["Happiness"]}),
                       json.dumps({"C-E1": ["Other"]}), ""])
    soft = soft_labels(votes, preset, np.array([0, 3, 2]))
    # evaluator 2 splits a vote over neutral and (unmapped) frustration: only neutral counts
    np.testing.assert_allclose(soft[0], [2 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(soft[1], [0, 0, 0, 1])  # no usable vote: one-hot label
    np.testing.assert_allclose(soft[2], [0, 0, 1, 0])
