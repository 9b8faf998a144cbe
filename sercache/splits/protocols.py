"""Fold protocols over the manifest: who is tested, who validates, who trains.

Every protocol returns :class:`Fold` objects of utterance ids (never row positions). The
validation set always comes from the training side (other sessions/speakers, or a slice of
the training utterances): nothing is ever selected on the test fold. Every random choice
uses its own ``numpy.random.Generator`` seeded from the ``seed`` argument, never global state.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import LeaveOneGroupOut, PredefinedSplit, train_test_split

from sercache._typing import Pathlike
from sercache.corpora import DEFAULT_PROTOCOLS
from sercache.errors import SercacheError
from sercache.splits.registry import protocols
from sercache.store.atomic import read_json, write_text_atomic
from sercache.store.layout import is_folder_name


@dataclass
class Fold:
    name: str
    train: list[str]
    valid: list[str]
    test: list[str]
    speaker_independent: bool
    description: str = ""
    meta: dict = field(default_factory=dict)


class ProtocolError(SercacheError, ValueError):
    pass


def _natural_key(value: object) -> tuple[int, str]:
    return len(str(value)), str(value)


def _natural(values: list) -> list:
    return sorted(values, key=_natural_key)


def _speaker_validation(train: pd.DataFrame, n: int | None, test_speakers: Iterable[object]) -> list[str]:
    """The ``n`` training speakers after the test fold's first speaker, cyclically (None: ~20% of them).

    Speakers that also occur in the test fold are never picked, so validation is disjoint from both sides.
    """
    if "speaker" not in train.columns or (train["speaker"].astype(str) == "").any():
        raise ProtocolError("validation by speakers needs a speaker for every training utterance; this data has "
                            "utterances without one: use --valid fraction")
    tested = {str(s) for s in test_speakers}
    speakers = _natural([s for s in train["speaker"].astype(str).unique() if s not in tested])
    if len(speakers) < 2:
        raise ProtocolError(f"validation by speakers needs at least 2 training speakers that are not tested in the "
                            f"same fold, got {len(speakers)} ({', '.join(speakers) or 'none'}); use --valid fraction")
    if n is None:
        n = max(1, min(len(speakers) - 1, round(0.2 * len(speakers))))
    if not 1 <= n < len(speakers):
        raise ProtocolError(f"--valid-speakers {n}: the training side has {len(speakers)} speakers and at least one "
                            f"must stay for training; give 1..{len(speakers) - 1}")
    anchor = _natural(list(tested))[0] if tested else ""
    # cyclic from the speaker after the test one, like valid="group": deterministic and spread over folds
    later = [s for s in speakers if _natural_key(s) > _natural_key(anchor)]
    return (later + [s for s in speakers if s not in later])[:n]


def describe_validation(valid: str, va: pd.DataFrame, group: str, valid_fraction: float, disjoint: bool) -> str:
    """The "validation: ..." half of a fold description."""
    if valid == "speakers":
        return "speakers " + ", ".join(_natural(list(va["speaker"].astype(str).unique())))
    if disjoint:
        return f"{group} {va[group].iloc[0]}"
    return f"{valid_fraction:.0%} of training utterances"


def _valid_split(train: pd.DataFrame, valid: str, valid_fraction: float, group: str,
                 held_out_group: object, rng: np.random.Generator, *, valid_speakers: int | None = None,
                 test_speakers: Iterable[object] = ()) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Carve validation out of the training side. Returns (train, valid, valid_is_speaker_disjoint).

    ``valid`` is ``group`` (the training ``group`` after ``held_out_group``), ``speakers``
    (``valid_speakers`` whole training speakers, none of ``test_speakers``) or ``fraction``.
    """
    if valid == "speakers":
        picked = set(_speaker_validation(train, valid_speakers, test_speakers))
        held = train["speaker"].astype(str).isin(picked)
        return train[~held], train[held], True
    if valid == "group":
        groups = _natural(list(train[group].unique()))
        if len(groups) < 2:
            raise ProtocolError(f"validation by {group} needs at least 2 training {group}s, got {len(groups)}")
        # the training group after the test group, cyclically: deterministic and spread over folds
        later = [g for g in groups if _natural([g, held_out_group])[0] == held_out_group and g != held_out_group]
        pick = (later or [g for g in groups if g != held_out_group] or groups)[0]
        return train[train[group] != pick], train[train[group] == pick], True
    if valid == "fraction":
        seed = int(rng.integers(2**31))
        strat = train["y"] if train["y"].value_counts().min() >= 2 else None
        if not 0 < valid_fraction < 1:
            raise ProtocolError(f"--valid-fraction {valid_fraction}: give a share of the training utterances "
                                "between 0 and 1 (e.g. 0.2)")
        tr, va = train_test_split(train, test_size=valid_fraction, random_state=seed, stratify=strat)
        return tr, va, False
    raise ProtocolError(f"validation {valid!r}: use 'group' (held-out training session/speaker), 'speakers' "
                        "(held-out training speakers) or 'fraction'")


def _leave_one_group_out(df: pd.DataFrame, group: str, name: str, valid: str, valid_fraction: float,
                         seed: int, valid_group: str | None = None, valid_speakers: int | None = None) -> list[Fold]:
    if (df[group].astype(str) == "").any():
        raise ProtocolError(f"protocol {name} needs a {group} for every utterance; this manifest has none for "
                            f"{int((df[group].astype(str) == '').sum())} of them (use --protocol random or lospk)")
    groups = df[group].to_numpy()
    if len(set(groups)) < 2:
        raise ProtocolError(f"protocol {name} needs at least 2 {group}s, got {len(set(groups))}")
    rng = np.random.default_rng(seed)
    folds = []
    order = {g: i for i, g in enumerate(_natural(list(set(groups))))}
    splits = sorted(LeaveOneGroupOut().split(df, groups=groups), key=lambda s: order[groups[s[1][0]]])
    for train_idx, test_idx in splits:
        held = groups[test_idx[0]]
        train = df.iloc[train_idx]
        # validate on the group after the test one; for lospk, the session after the test speaker's
        after = held if valid_group in (None, group) else df.iloc[test_idx][valid_group].iloc[0]
        tr, va, disjoint = _valid_split(train, valid, valid_fraction, valid_group or group, after, rng,
                                        valid_speakers=valid_speakers, test_speakers=df.iloc[test_idx].speaker)
        folds.append(Fold(
            name=f"{name}-{held}", train=tr.utt_id.tolist(), valid=va.utt_id.tolist(),
            test=df.iloc[test_idx].utt_id.tolist(), speaker_independent=True,
            description=f"test {group} {held}; validation: "
                        + describe_validation(valid, va, valid_group or group, valid_fraction, disjoint),
            meta={group: str(held)}))
    return folds


def loso(df: pd.DataFrame, *, valid: str = "group", valid_fraction: float = 0.2, valid_speakers: int | None = None,
         seed: int = 0) -> list[Fold]:
    """Leave one session out: fold k tests session k; validation is another training session."""
    return _leave_one_group_out(df, "session", "loso", valid, valid_fraction, seed, valid_speakers=valid_speakers)


def lospk(df: pd.DataFrame, *, valid: str = "group", valid_fraction: float = 0.2, valid_speakers: int | None = None,
          seed: int = 0) -> list[Fold]:
    """Leave one speaker out; validation is a training session (or a fraction), never the test speaker."""
    has_sessions = (df["session"].astype(str) != "").all()
    return _leave_one_group_out(df, "speaker", "lospk", valid if has_sessions or valid != "group" else "group",
                                valid_fraction, seed, valid_group="session" if has_sessions else "speaker",
                                valid_speakers=valid_speakers)


def session_holdout(df: pd.DataFrame, *, session: str = "2", valid: str = "fraction", valid_fraction: float = 0.2,
                    valid_speakers: int | None = None, seed: int = 0) -> list[Fold]:
    """One named test session (the single-layer paper: Session 2); validation from the other sessions."""
    session = str(session)
    if session not in set(df["session"].astype(str)):
        raise ProtocolError(f"session {session!r} is not in this manifest (sessions: "
                            f"{_natural(list(df['session'].astype(str).unique()))})")
    test = df[df.session.astype(str) == session]
    train = df[df.session.astype(str) != session]
    tr, va, disjoint = _valid_split(train, valid, valid_fraction, "session", session, np.random.default_rng(seed),
                                    valid_speakers=valid_speakers, test_speakers=test.speaker)
    return [Fold(f"session{session}", tr.utt_id.tolist(), va.utt_id.tolist(), test.utt_id.tolist(), True,
                 f"test session {session}; validation: "
                 + describe_validation(valid, va, "session", valid_fraction, disjoint)
                 + ("" if disjoint else " (speaker-dependent validation)"),
                 meta={"session": session})]


def random_split(df: pd.DataFrame, *, ratios: tuple[float, float, float] = (0.8, 0.1, 0.1), n_folds: int = 1,
                 seed: int = 0) -> list[Fold]:
    """Stratified utterance-level train/valid/test split(s): speaker-DEPENDENT (GLAM's 8:1:1)."""
    if len(ratios) != 3 or abs(sum(ratios) - 1) > 1e-6 or min(ratios) <= 0:
        raise ProtocolError(f"--ratios {ratios}: give three positive train,valid,test ratios summing to 1 "
                            "(e.g. 0.8,0.1,0.1); validation is never the test set")
    folds = []
    for k in range(n_folds):
        rng = np.random.default_rng([seed, k])
        strat = df["y"] if df["y"].value_counts().min() >= 3 else None
        rest, test = train_test_split(df, test_size=ratios[2], random_state=int(rng.integers(2**31)), stratify=strat)
        strat = rest["y"] if strat is not None else None
        train, valid = train_test_split(rest, test_size=ratios[1] / (ratios[0] + ratios[1]),
                                        random_state=int(rng.integers(2**31)), stratify=strat)
        folds.append(Fold(f"random-{k + 1}", train.utt_id.tolist(), valid.utt_id.tolist(), test.utt_id.tolist(), False,
                          f"stratified random {ratios[0]:g}/{ratios[1]:g}/{ratios[2]:g} utterance split "
                          "(speaker-dependent)"))
    return folds


def predefined(df: pd.DataFrame, *, column: str = "fold", valid: str = "group", valid_fraction: float = 0.2,
               valid_speakers: int | None = None, seed: int = 0) -> list[Fold]:
    """Folds from a manifest column (a ``--corpus csv`` manifest's ``fold``, e.g. KEMDy's session folds)."""
    if column not in df.columns or (df[column].astype(str) == "").all():
        raise ProtocolError(f"protocol predefined needs a {column!r} column in the manifest, and only `sercache "
                            f"extract --corpus csv` manifests fill it; this cache has none. For EmoBox fold folders "
                            f"or a CSV of utt_id,fold (or utt_id,split) use `sercache train CACHE --folds PATH` "
                            f"instead of --protocol predefined")
    values = df[column].astype(str)
    codes = {v: i for i, v in enumerate(_natural(list(values.unique())))}
    rng = np.random.default_rng(seed)
    folds = []
    for train_idx, test_idx in PredefinedSplit(values.map(codes).to_numpy()).split():
        held = values.iloc[test_idx[0]]
        train = df.iloc[train_idx].assign(_fold=values.iloc[train_idx].to_numpy())
        tr, va, disjoint = _valid_split(train, valid, valid_fraction, "_fold", held, rng,
                                        valid_speakers=valid_speakers, test_speakers=df.iloc[test_idx].speaker)
        speaker_disjoint = not set(df.iloc[test_idx].speaker) & set(df.iloc[train_idx].speaker) if "speaker" in df else False
        folds.append(Fold(f"fold-{held}", tr.utt_id.tolist(), va.utt_id.tolist(), df.iloc[test_idx].utt_id.tolist(),
                          bool(speaker_disjoint), f"test {column}={held}"
                          + ("; validation: speakers " + ", ".join(_natural(list(va.speaker.astype(str).unique())))
                             if valid == "speakers" else ""), meta={column: held}))
    return folds


#: The built-in protocol functions (the registry, :mod:`sercache.splits.registry`, declares them and more).
PROTOCOLS: dict[str, Callable[..., list[Fold]]] = {
    "loso": loso, "lospk": lospk, "session-holdout": session_holdout, "random": random_split,
    "predefined": predefined,
}


def make_folds(df: pd.DataFrame, protocol: str, *, subset: str = "all", **options: object) -> list[Fold]:
    """Filter by ``subset`` (impro/script/all), then apply ``protocol`` (needs a ``y`` column)."""
    entry = protocols().get(protocol)
    if entry is None:
        raise ProtocolError(f"unknown protocol {protocol!r}; protocols: {', '.join(protocols())}")
    if entry.fold_files:
        raise ProtocolError(f"protocol {protocol} reads fold files: use folds_from_file(df, PATH) (`--folds PATH`)")
    return entry.function()(filter_subset(df, subset), **options)


def filter_subset(df: pd.DataFrame, subset: str) -> pd.DataFrame:
    """Rows of ``subset`` (IEMOCAP impro/script, or all), re-indexed; refuses an empty result."""
    if subset not in ("all", "impro", "script"):
        raise ProtocolError(f"--subset {subset!r}: use impro, script or all")
    if subset != "all":
        if (df["dialog_type"].astype(str) == "").all():
            raise ProtocolError(f"--subset {subset} needs a dialog_type column (IEMOCAP impro/script)")
        df = df[df.dialog_type == subset]
    if df.empty:
        raise ProtocolError("no utterances left to split (check --labels and --subset)")
    return df.reset_index(drop=True)


def check_fold_names(folds: list[Fold]) -> None:
    """Refuse a fold whose name cannot be a directory of the run (checked before a run writes anything)."""
    for fold in folds:
        if not is_folder_name(fold.name):
            raise ProtocolError(f"fold name {fold.name!r} cannot be a folder of the run (it comes from a session, "
                                "speaker or fold value): rename that value in the manifest or fold file")


def save_folds(folds: list[Fold], path: Pathlike) -> None:
    check_fold_names(folds)
    write_text_atomic(Path(path), json.dumps([asdict(f) for f in folds], indent=1))


def load_folds(path: Pathlike) -> list[Fold]:
    """Folds of a run directory, each checked: its name becomes a directory inside the run."""
    fix = "Delete the run directory and train again (or copy folds.json from a backup)."
    if not Path(path).is_file():  # config.json without folds.json: a run that never started training
        raise ProtocolError(f"{path} is missing, so {Path(path).parent} holds no folds to read: the run was never "
                            f"trained, or the file was deleted. {fix}")
    data = read_json(Path(path), "the run's folds", fix)
    if not isinstance(data, list):
        raise ProtocolError(f"{path}: expected a list of folds, got {type(data).__name__}. {fix}")
    folds = []
    for i, d in enumerate(data):
        try:
            fold = Fold(**d)
        except TypeError as exc:
            raise ProtocolError(f"{path}: fold {i} is not a fold record ({exc}). {fix}") from None
        if not is_folder_name(fold.name):
            raise ProtocolError(f"{path}: fold {i} has the name {fold.name!r}, which is not a plain folder name; "
                                f"refused, since a fold name becomes a directory inside the run. {fix}")
        folds.append(fold)
    return folds


#: The speaker-independent protocol each corpus is reported with (IEMOCAP: its five sessions), as
#: each corpus file declares it (``protocol=`` of its :class:`~sercache.corpora.Corpus`).
DEFAULT_PROTOCOL = DEFAULT_PROTOCOLS


def default_protocol(corpus: str, df: pd.DataFrame) -> str:
    """``--protocol`` when none is given: the corpus's own, else sessions when every utterance has one,
    else speakers."""
    if corpus in DEFAULT_PROTOCOL:
        return DEFAULT_PROTOCOL[corpus]
    if "session" in df and (df["session"].astype(str) != "").all():
        return "loso"
    return "lospk" if "speaker" in df and (df["speaker"].astype(str) != "").all() else "loso"
