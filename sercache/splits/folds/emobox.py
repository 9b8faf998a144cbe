"""The ``emobox`` fold protocol: EmoBox's fold folders, ``ROOT/fold_k/<corpus>_{train,test}_fold_k.jsonl``.

``sercache train CACHE --protocol emobox --folds EmoBox/data/iemocap`` trains on EmoBox's own folds
(the EmoBox benchmark's protocol, so results compare with its tables). Some EmoBox corpora spell
the files ``_fold{k}``; both are read, ``_fold_k`` wins when a folder holds both. Each line is one
JSON object, ``{"key": "<dataset>-<utt_id>", "dataset": ..., "wav": ...}``; ids are matched to the
cache's by the key minus its ``<dataset>-`` prefix, the key itself, or the wav file's stem.

This module also reads the folders plain ``--folds DIR`` is given (protocol ``folds``), as before.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sercache.splits.registry import Protocol, register_protocol

if TYPE_CHECKING:
    import pandas as pd

    from sercache.splits.foldfiles import Entry, FoldFileResult, FoldSource

log = logging.getLogger("sercache.splits.foldfiles")  # one logger for all fold-file reading
_FOLD_DIR = re.compile(r"fold_?(\d+)")


def pick_file(folder: Path, role: str, k: int) -> Path:
    """``<corpus>_<role>_fold_<k>.jsonl``, else ``<corpus>_<role>_fold<k>.jsonl``."""
    from sercache.splits.protocols import ProtocolError

    strict = sorted(folder.glob(f"*_{role}_fold_{k}.jsonl"))
    loose = sorted(folder.glob(f"*_{role}_fold{k}.jsonl"))
    for variant in (strict, loose):
        if len(variant) > 1:
            raise ProtocolError(f"{folder} holds several {role} files for fold {k} ({', '.join(p.name for p in variant)}); "
                                "give --folds the folder of one corpus")
    if strict and loose:
        log.debug("%s: both %s and %s exist; using %s", folder, strict[0].name, loose[0].name, strict[0].name)
    if not strict and not loose:
        raise ProtocolError(f"{folder} has no {role} file for fold {k}: expected <corpus>_{role}_fold_{k}.jsonl "
                            f"(or <corpus>_{role}_fold{k}.jsonl)")
    return (strict or loose)[0]


def read_jsonl(file: Path, corpus: str) -> list[Entry]:
    """One EmoBox fold file -> its entries (the ids to try: the key minus its ``<dataset>-``, the key, the wav stem)."""
    from sercache.splits.foldfiles import Entry
    from sercache.splits.protocols import ProtocolError

    entries = []
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{file}: not UTF-8 text ({exc}); EmoBox fold files are JSON lines") from exc
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{file}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"{where}: malformed JSON ({exc.msg}, column {exc.colno}); each line must be one "
                                'JSON object like {"key": "emodb-03a01Fa", "dataset": "emodb", "wav": ...}') from exc
        if not isinstance(obj, dict) or not (obj.get("key") or obj.get("wav")):
            raise ProtocolError(f"{where}: a fold line needs a 'key' (or 'wav') field, e.g. "
                                '{"key": "emodb-03a01Fa", "dataset": "emodb", "wav": "wav/03a01Fa.wav"}')
        key, dataset = str(obj.get("key") or ""), str(obj.get("dataset") or corpus)
        candidates = []
        if dataset and key.lower().startswith(dataset.lower() + "-"):
            candidates.append(key[len(dataset) + 1:])
        candidates.append(key)
        if obj.get("wav"):
            candidates.append(PurePosixPath(str(obj["wav"]).replace("\\", "/")).stem)
        entries.append(Entry(tuple(c for c in dict.fromkeys(candidates) if c), key or str(obj["wav"]), where))
    return entries


def read_emobox(root: Path) -> FoldSource:
    """``root/fold_k/<corpus>_{train,test}_fold_k.jsonl`` (or ``_fold{k}``) -> the folds they describe."""
    from sercache.splits.foldfiles import FoldSource, FoldSpec
    from sercache.splits.protocols import ProtocolError

    dirs = sorted(((int(m.group(1)), d) for d in root.iterdir()
                   if d.is_dir() and (m := _FOLD_DIR.fullmatch(d.name))), key=lambda t: t[0])
    if not dirs:
        raise ProtocolError(f"--folds {root}: no fold_1/, fold_2/ ... folders in it; give the EmoBox corpus folder "
                            "(ROOT/fold_1/<corpus>_train_fold_1.jsonl ...) or a CSV of utt_id,fold")
    digest, folds, files = hashlib.sha1(), [], []
    for k, folder in dirs:
        roles, sources = {}, {}
        for role in ("train", "test"):
            file = pick_file(folder, role, k)
            corpus = file.name.split(f"_{role}_fold")[0]
            roles[role] = read_jsonl(file, corpus)
            rel = file.relative_to(root).as_posix()
            sources[role], files = rel, files + [rel]
            # names are hashed too: moving a file between folds changes the fold source
            digest.update(rel.encode() + b"\0" + file.read_bytes() + b"\0")
        folds.append(FoldSpec(f"fold-{k}", roles, sources))
    return FoldSource(root, "emobox", folds, digest.hexdigest(), files)


def emobox_folds(df: pd.DataFrame, path: Path, **options: Any) -> FoldFileResult:
    """Folds of ``df`` from the EmoBox folder ``path`` (options: see :func:`~sercache.splits.foldfiles.folds_from_file`)."""
    from sercache.splits.foldfiles import folds_from_file

    return folds_from_file(df, path, only=("emobox", "emobox"), **options)


register_protocol(Protocol(
    "emobox", "EmoBox's fold folder given with --folds ROOT (fold_k/<corpus>_{train,test}_fold_k.jsonl)",
    emobox_folds, fold_files=("emobox",), read_folder=read_emobox))
