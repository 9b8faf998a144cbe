"""Fold assignments read from files: EmoBox fold folders and CSV ``utt_id,fold`` / ``utt_id,split`` files.

``sercache train CACHE --folds PATH`` takes one of

* a CSV file with ``utt_id`` and ``fold`` (each distinct value is one test fold; the other folds
  form its training side) or ``utt_id`` and ``split`` (``train``/``valid``/``test``, also
  ``dev``/``validation``: one single fold);
* a fold folder, read by the protocol that reads folders: EmoBox's
  ``ROOT/fold_k/<corpus>_{train,test}_fold_k.jsonl`` (:mod:`sercache.splits.folds.emobox`).

Ids are matched against the cache's ``utt_id`` (the wav file stem for the corpus readers):
an EmoBox ``key`` minus its ``<dataset>-`` prefix, the key itself, or the stem of ``wav``.
Validation is always carved from a fold's training side, never from its test side. Everything
the files leave out or get wrong is reported by name and count before any training.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from sercache._typing import Pathlike
from sercache.splits.protocols import Fold, ProtocolError, _natural, _valid_split, describe_validation
from sercache.splits.registry import protocols, resolve

SPLIT_NAMES = {"train": "train", "valid": "valid", "dev": "valid", "validation": "valid", "test": "test"}
AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a")
FORMATS = ("emobox", "csv-fold", "csv-split")


@dataclass(frozen=True)
class Entry:
    """One utterance line of a fold file: the ids to try in order, the id as written, and where."""

    candidates: tuple[str, ...]
    shown: str
    where: str


@dataclass
class FoldSpec:
    """One fold as the files describe it: entries per role (``train``/``valid``/``test``) and their files."""

    name: str
    roles: dict[str, list[Entry]]
    sources: dict[str, str]
    value: str = ""  # the CSV fold value (csv-fold only)


@dataclass
class FoldSource:
    """A parsed fold file or folder (before matching it to a cache)."""

    path: Path
    format: str
    folds: list[FoldSpec]
    sha1: str
    files: list[str] = field(default_factory=list)


@dataclass
class FoldFileResult:
    """Folds built from a fold source, the warnings to show before training, and what config.json records."""

    folds: list[Fold]
    warnings: list[str]
    options: dict[str, object]


def listing(ids: list[str], k: int = 5) -> str:
    """``a, b, c, d, e and 12 more``."""
    head = ", ".join(str(i) for i in ids[:k])
    return head + (f" and {len(ids) - k} more" if len(ids) > k else "")


def _strip_audio(value: str) -> str:
    return PurePosixPath(value.replace("\\", "/")).stem if value.lower().endswith(AUDIO_SUFFIXES) else value


# ------------------------------------------------------------------------------------------- parsing
def read_fold_source(path: Pathlike) -> FoldSource:
    """Parse ``path`` (an EmoBox fold folder, or a CSV/TSV file) without looking at any cache.

    Raises:
        ProtocolError: unreadable or malformed files, naming the file (and line) and the fix.
    """
    path = Path(path).resolve()
    if path.is_dir():
        return _read_folder(path)
    if not path.is_file():
        raise ProtocolError(f"--folds {path}: no such file or folder; give a CSV of utt_id,fold (or utt_id,split) "
                            "or an EmoBox folder holding fold_1/, fold_2/ ...")
    return _read_csv(path)


def _read_folder(path: Path) -> FoldSource:
    """A fold folder, read by the protocol that declares a ``read_folder`` (EmoBox's: splits/folds/emobox.py)."""
    readers = [p.read_folder for p in protocols().values() if p.read_folder is not None]
    if not readers:
        raise ProtocolError(f"--folds {path} is a folder, and no fold protocol reads folders; give a CSV of "
                            "utt_id,fold (or utt_id,split)")
    errors = []
    for reader in readers:
        try:
            return resolve(reader)(path)
        except ProtocolError as exc:
            errors.append(str(exc))
    raise ProtocolError("; ".join(errors))


def _read_csv(path: Path) -> FoldSource:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"--folds {path}: not a readable CSV file ({exc}); give a CSV with a header line "
                            "utt_id,fold or utt_id,split, or an EmoBox fold folder") from exc
    df.columns = [str(c).strip().lower() for c in df.columns]
    kinds = [c for c in ("fold", "split") if c in df.columns]
    if "utt_id" not in df.columns or len(kinds) != 1:
        raise ProtocolError(f"--folds {path}: needs a utt_id column and exactly one of fold / split (found columns: "
                            f"{', '.join(df.columns) or 'none'}); e.g. 'utt_id,fold' with one row per utterance")
    kind = kinds[0]
    seen: dict[str, tuple[str, str]] = {}
    entries: dict[str, list[Entry]] = {}
    for i, (uid, value) in enumerate(zip(df["utt_id"].str.strip(), df[kind].str.strip())):
        where = f"{path}:{i + 2}"  # line 1 is the header
        if not uid or not value:
            raise ProtocolError(f"{where}: empty {'utt_id' if not uid else kind}; give every row both, or drop the row")
        if kind == "split":
            if value.lower() not in SPLIT_NAMES:
                raise ProtocolError(f"{where}: split {value!r} is not one of train, valid (dev, validation), test")
            value = SPLIT_NAMES[value.lower()]
        if uid in seen and seen[uid][0] != value:
            raise ProtocolError(f"{where}: {uid} is already assigned {kind} {seen[uid][0]!r} at {seen[uid][1]}; "
                                "give each utterance one row")
        if uid in seen:
            continue
        seen[uid] = (value, where)
        entries.setdefault(value, []).append(Entry(tuple(dict.fromkeys([uid, _strip_audio(uid)])), uid, where))
    sha1 = hashlib.sha1(path.read_bytes()).hexdigest()
    if kind == "split":
        missing = [r for r in ("train", "test") if r not in entries]
        if missing:
            raise ProtocolError(f"--folds {path}: a split file needs train and test rows; it has no "
                                f"{' or '.join(missing)} rows")
        return FoldSource(path, "csv-split", [FoldSpec("split", entries, {r: f"{path.name} split={r}"
                                                                          for r in entries})], sha1, [path.name])
    values = _natural(list(entries))
    if len(values) < 2:
        raise ProtocolError(f"--folds {path}: only one fold value ({values[0]!r}); a fold column needs at least two "
                            "(each is tested once, trained on the others), or use a split column (train/valid/test)")
    return FoldSource(path, "csv-fold", [FoldSpec(f"fold-{v}", {"test": entries[v]}, {"test": f"{path.name} fold={v}"},
                                                  value=v) for v in values], sha1, [path.name])


# ------------------------------------------------------------------------------------------- folds
def _resolve(source: FoldSource, known: set[str]) -> tuple[dict[Entry, str], list[str]]:
    """Entry -> cache utt_id, and the ids (as written) that match no cache utterance."""
    matched: dict[Entry, str] = {}
    unmatched: dict[str, None] = {}
    for spec in source.folds:
        for entries in spec.roles.values():
            for e in entries:
                uid = next((c for c in e.candidates if c in known), None)
                if uid is None:
                    unmatched[e.shown] = None
                else:
                    matched[e] = uid
    return matched, list(unmatched)


def _ids(entries: list[Entry], matched: dict[Entry, str], present: set[str]) -> list[str]:
    return list(dict.fromkeys(matched[e] for e in entries if e in matched and matched[e] in present))


def _sides(source: FoldSource, spec: FoldSpec, matched: dict[Entry, str],
           present: set[str]) -> tuple[list[str], list[str], list[str]]:
    """(test, train side, given validation) utterance ids of one fold, checked for overlap."""
    test = _ids(spec.roles["test"], matched, present)
    if source.format == "csv-fold":
        train = [u for other in source.folds if other is not spec for u in _ids(other.roles["test"], matched, present)]
    else:
        train = _ids(spec.roles.get("train", []), matched, present)
    given = _ids(spec.roles.get("valid", []), matched, present)
    for a, b, ids in (("test", "train", set(test) & set(train)), ("test", "valid", set(test) & set(given)),
                      ("train", "valid", set(train) & set(given))):
        if ids:
            raise ProtocolError(f"{source.path} fold {spec.name}: {len(ids)} utterance(s) are on both the {a} and "
                                f"the {b} side ({listing(sorted(ids))}); fix the fold files")
    return test, train, given


def _default_valid(df: pd.DataFrame, specs: list[FoldSpec], sides: list[tuple[list[str], list[str]]]) -> tuple[str, str]:
    """The default validation: ``("speakers", "")``, or ``("fraction", why not speakers)``.

    Speakers need a speaker on every utterance and 2+ training speakers per fold that it does not test.
    """
    speaker = dict(zip(df.utt_id, df.speaker.astype(str))) if "speaker" in df.columns else {}
    if not speaker or "" in speaker.values():
        return "fraction", "some utterances have no speaker"
    for spec, (test, train) in zip(specs, sides):
        if len({speaker[u] for u in train} - {speaker[u] for u in test}) < 2:
            return "fraction", f"fold {spec.name} tests (nearly) every training speaker (speaker-dependent folds)"
    return "speakers", ""


def folds_from_file(df: pd.DataFrame, path: Pathlike, *, cache_ids: list[str] | None = None,
                    valid: str | None = None, valid_fraction: float = 0.2, valid_speakers: int | None = None,
                    seed: int = 0, only: tuple[str, str] | None = None) -> FoldFileResult:
    """Folds of ``df`` (labelled utterances with ``utt_id``, ``y``, ``speaker``) from the fold file at ``path``.

    Args:
        df: the utterances that may be used (labelled, subset-filtered).
        path: EmoBox fold folder, or CSV with ``utt_id`` and ``fold`` or ``split``.
        cache_ids: every utterance id of the cache; ids found there but not in ``df`` are reported as
            present-but-unused rather than unknown. Default: ``df.utt_id``.
        valid: ``speakers``, ``fraction`` or (CSV fold column only) ``group`` (the next fold). Default:
            ``speakers`` when every utterance has a speaker and each fold keeps 2+ untested training
            speakers, else ``fraction``. A split file's own ``valid`` rows take precedence.
        valid_fraction: for ``fraction``.
        valid_speakers: for ``speakers`` (None: about 20% of the training speakers).
        seed: seeds the ``fraction`` split.
        only: ``(protocol, format)``: refuse a source of another format (``--protocol emobox`` and a CSV).

    Raises:
        ProtocolError: malformed files, no id matching the cache, a fold with no test or train utterance,
            an utterance on two sides of a fold.
    """
    source = read_fold_source(path)
    if only is not None and source.format != only[1]:
        raise ProtocolError(f"--protocol {only[0]} reads {only[1]} fold files; {source.path} is {source.format}: "
                            f"drop --protocol {only[0]} (plain --folds reads every format)")
    present = set(df.utt_id)
    known = present | set(cache_ids if cache_ids is not None else [])
    matched, unmatched = _resolve(source, known)
    total = len({e.shown for s in source.folds for es in s.roles.values() for e in es})
    if not matched:
        raise ProtocolError(f"none of the {total} ids in {source.path} match an utterance of the cache (file ids: "
                            f"{listing(unmatched, 3)}; cache ids: {listing(sorted(known), 3)}); ids must be the "
                            "cache's utt_id (the wav file stem), the wav path, or an EmoBox key '<dataset>-<utt_id>'")
    warnings = []
    if unmatched:
        warnings.append(f"{len(unmatched)} of the {total} ids in {source.path} match no utterance of the cache "
                        f"(not used): {listing(unmatched)}")
    unused = sorted({u for u in matched.values() if u not in present})
    if unused:
        warnings.append(f"{len(unused)} utterance(s) of {source.path} are in the cache but not used (label outside "
                        f"the preset, --subset, or a stream lacks them): {listing(unused)}")
    sides = [_sides(source, spec, matched, present) for spec in source.folds]
    assigned = {u for test, train, given in sides for u in (*test, *train, *given)}
    if not assigned:
        raise ProtocolError(f"{source.path}: its utterances are in the cache, but none is labelled/selected for this "
                            "run (check --labels and --subset)")
    no_fold = [u for u in df.utt_id if u not in assigned]
    if no_fold:
        warnings.append(f"{len(no_fold)} labelled utterance(s) of the cache have no fold in {source.path} and are "
                        f"not used: {listing(no_fold)}")
    chosen, why = (valid, "") if valid else _default_valid(df, source.folds, [(t, tr) for t, tr, _ in sides])
    if why and not any(s.roles.get("valid") for s in source.folds):
        warnings.append(f"validation: {valid_fraction:.0%} of each fold's training utterances, not held-out speakers, "
                        f"because {why}")
    if chosen == "group" and source.format != "csv-fold":
        raise ProtocolError(f"--valid group needs a CSV fold column (validate on the next fold); {source.path} is "
                            f"{source.format}: use --valid speakers or --valid fraction")
    by_id = df.set_index("utt_id", drop=False)
    labels = df["class"] if "class" in df.columns else df["y"]
    label = dict(zip(df.utt_id, labels.astype(str)))
    classes = _natural(list({label[u] for u in assigned}))
    rng = np.random.default_rng(seed)
    folds = []
    for spec, (test, train, given) in zip(source.folds, sides):
        if not test or not train:
            raise ProtocolError(f"{source.path} fold {spec.name}: no {'test' if not test else 'training'} utterance "
                                "of this run is listed for it; fix the fold files (or --labels/--subset)")
        train_df = by_id.loc[train].reset_index(drop=True)
        if given and valid:
            warnings.append(f"{source.path} lists its own validation rows; --valid {valid} is not used")
        if given:
            tr, va, how = train_df, by_id.loc[given].reset_index(drop=True), f"given by {spec.sources['valid']}"
        else:
            if source.format == "csv-fold":
                value = {u: s.value for s in source.folds for u in _ids(s.roles["test"], matched, present)}
                train_df = train_df.assign(_fold=train_df.utt_id.map(value))
            try:
                tr, va, disjoint = _valid_split(train_df, chosen, valid_fraction, "_fold", spec.value, rng,
                                                valid_speakers=valid_speakers, test_speakers=by_id.loc[test].speaker)
            except ProtocolError as exc:
                raise ProtocolError(f"{source.path} fold {spec.name}: {exc}") from exc
            how = (f"fold-{va['_fold'].iloc[0]}" if chosen == "group"
                   else describe_validation(chosen, va, "", valid_fraction, disjoint))
        test_spk = set(by_id.loc[test].speaker.astype(str))
        other_spk = set(tr.speaker.astype(str)) | set(va.speaker.astype(str))
        independent = "" not in (test_spk | other_spk) and not test_spk & other_spk
        for side, ids in (("test", test), ("TRAINING", tr.utt_id)):
            missing = [c for c in classes if c not in {label[u] for u in ids}]
            if missing and side == "test":
                warnings.append(f"fold {spec.name}: its test set has no {', '.join(map(repr, missing))} utterance "
                                "(per-class metrics of that class are undefined in this fold)")
            elif missing:
                warnings.append(f"fold {spec.name}: its TRAINING set has no {', '.join(map(repr, missing))} "
                                "utterance: the head cannot learn that class in this fold; fix the fold files or "
                                "drop the class with --labels")
        folds.append(Fold(spec.name, tr.utt_id.tolist(), va.utt_id.tolist(), list(test), bool(independent),
                          f"test: {spec.sources['test']} ({len(test)} utterances); validation: {how}",
                          meta={"source": dict(spec.sources)}))
    options = {"path": str(source.path), "format": source.format, "files": source.files, "sha1": source.sha1,
               "valid": chosen}
    return FoldFileResult(folds, warnings, options)
