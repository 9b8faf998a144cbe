"""``sercache cache verify``: find every problem in a cache and name its shard and utterance.

Checks, per shard and stream:

* presence: every shard and stream the registry says was asked for exists and is finished
  (not only staged);
* structure: the file opens, is marked complete, every manifest utterance is either stored
  or recorded as failed, offsets are monotonic and match the frame datasets;
* frame counts: each utterance's frames agree with its audio length and the stream's framing;
* values: no NaN/inf in stored features;
* bytes: each utterance's CRC-32, recorded at write time, matches the stored bytes.
"""
from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from sercache._typing import Pathlike
from sercache.store.errors import CacheCorruptError
from sercache.store.frames import expected_frames
from sercache.store.layout import REGISTRY_FILE, list_shards, list_staging, list_stream_files, manifest_path
from sercache.store.manifest import read_manifest, read_registry
from sercache.store.records import checksum
from sercache.store.streamfile import CHECKSUMS, FRAMES, H5_READ_ERRORS, PER_UTT, read_index
from sercache.stream_checks import STREAM_CHECKS

BLOCK_BYTES = 64 << 20


@dataclass
class VerifyProblem:
    shard: str
    stream: str
    utt_id: str
    problem: str

    def __str__(self) -> str:
        where = "/".join(x for x in (self.shard, self.stream) if x)
        return f"{where}: {self.utt_id + ': ' if self.utt_id else ''}{self.problem}"


def _fix(registry: dict[str, Any], shard: str, stream: str, cache: Path) -> str:
    cmd = registry.get("shards", {}).get(shard, {}).get("streams", {}).get(stream, {}).get("command", "")
    if cmd:
        cmd = aimed_at(cmd, cache)
        return f"re-extract it: {cmd}" + ("" if "--overwrite" in cmd else " --overwrite")
    return f"re-extract shard {shard} (sercache extract ... --overwrite)"


def aimed_at(command: str, cache: Path) -> str:
    """A recorded extract command with its ``--out`` made ``cache``: a copied or moved cache is repaired where
    it is now, never by writing into the folder it was copied from."""
    try:
        words = shlex.split(command)
    except ValueError:  # an edited registry: show it as it is
        return command
    for i, word in enumerate(words):
        if word == "--out" and i + 1 < len(words):
            words[i + 1] = str(cache.resolve())
        elif word.startswith("--out="):
            words[i] = f"--out={cache.resolve()}"
    return shlex.join(words)


#: A stream kind's own check, run on every stream file once the generic checks passed:
#: ``check(file, index, bad)`` with the open h5py file, its read_index() result, and
#: ``bad(utt_id, problem)``. The feature side registers them in sercache.stream_checks (the text streams'
#: token count, say): the store knows frame arithmetic, not what a stream's frames mean.
StreamCheck = Callable[[h5py.File, Any, Callable[[str, str], None]], None]


def verify_cache(path: Pathlike, streams: list[str] | None = None, *, checksums: bool = True,
                 values: bool = True, checks: Sequence[StreamCheck] | None = None) -> list[VerifyProblem]:
    """Every problem found, as a list (empty when the cache is sound).

    Args:
        streams: only these streams (default: all).
        checksums: recompute each utterance's CRC-32.
        values: scan the stored values (NaN/inf, checksums); False checks presence, structure and
            frame counts only, reading no frames (what ``train`` does before its checksummed load).
        checks: stream kinds' own checks (see StreamCheck); default: those registered in sercache.stream_checks.
    """
    checks = tuple(STREAM_CHECKS) if checks is None else checks
    cache = Path(path)
    if not cache.is_dir():
        return [VerifyProblem("", "", "", f"{cache} is not a directory")]
    try:
        registry = read_registry(cache)
    except CacheCorruptError as exc:
        registry = {"shards": {}}
        problems_first = [VerifyProblem("", "", "", str(exc))]
    else:
        problems_first = []
    problems: list[VerifyProblem] = problems_first
    shards = list_shards(cache)
    if shards and not (cache / REGISTRY_FILE).exists():
        # without the registry nothing records which shards there should be: a lost one would go unseen
        problems.append(VerifyProblem("", "", "", f"{cache / REGISTRY_FILE} is missing, so a lost shard could not be "
                                      f"told (found shards: {', '.join(shards)}). Rerun the extract commands of every "
                                      "shard (finished streams are kept, and the registry is rebuilt)."))
    for shard, entry in registry.get("shards", {}).items():
        if shard not in shards:
            problems.append(VerifyProblem(shard, "", "", f"shard missing: {manifest_path(cache, shard)} does not "
                                          "exist (the extraction stopped before this shard, or it was deleted); "
                                          f"{_fix(registry, shard, next(iter(entry['streams']), ''), cache)}"))
            continue
        for stream in entry.get("streams", {}):
            if streams and stream not in streams:
                continue
            if stream not in list_stream_files(cache, shard):
                state = ("interrupted (staged work only): rerun the same extract command to resume"
                         if stream in list_staging(cache, shard) else f"missing; {_fix(registry, shard, stream, cache)}")
                problems.append(VerifyProblem(shard, stream, "", f"stream not finished: {state}"))
    for shard in shards:
        try:
            table, _, _ = read_manifest(cache, shard)
        except CacheCorruptError as exc:  # an edited table, or data stored outside the file
            problems.append(VerifyProblem(shard, "", "", str(exc)))
            continue
        except H5_READ_ERRORS as exc:
            problems.append(VerifyProblem(shard, "", "", f"manifest unreadable ({exc}); re-extract this shard"))
            continue
        for stream, file in list_stream_files(cache, shard).items():
            if streams and stream not in streams:
                continue
            problems += verify_stream_file(file, table, shard, stream, checksums=checksums, values=values,
                                           fix=_fix(registry, shard, stream, cache), checks=checks)
    return problems


def verify_stream_file(file: Path, table: pd.DataFrame, shard: str, stream: str, *, checksums: bool = True,
                       values: bool = True, fix: str = "", checks: Sequence[StreamCheck] = ()) -> list[VerifyProblem]:
    out: list[VerifyProblem] = []

    def bad(utt: str, what: str) -> None:
        out.append(VerifyProblem(shard, stream, utt, what))

    try:
        f = h5py.File(file, "r", locking=False)
    except H5_READ_ERRORS as exc:
        bad("", f"{file} cannot be opened (truncated or corrupt: {str(exc).splitlines()[0]}); {fix}")
        return out
    with f:
        try:
            index = read_index(f, file)
        except CacheCorruptError as exc:  # e.g. data stored outside the file
            bad("", str(exc))
            return out
        except H5_READ_ERRORS as exc:
            bad("", f"{file} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0]}); {fix}")
            return out
        if not index.attrs.get("complete"):
            bad("", f"{file} is not marked complete; {fix}")
        ids, offsets = index.utt_ids, index.offsets
        failed = set(index.problems.loc[index.problems.severity == "error", "utt_id"])
        manifest_ids = set(table.utt_id)
        for u in sorted(manifest_ids - set(ids) - failed):
            bad(u, "neither stored nor recorded as failed (the stream is incomplete)")
        for u in sorted(set(ids) - manifest_ids):
            bad(u, "stored but not in the shard's manifest")
        if len(set(ids)) != len(ids):
            bad("", "duplicate utterance ids in the stream")
        n = len(ids)
        if len(offsets) != n + 1 or (n and (offsets[0] != 0 or np.any(np.diff(offsets) < 0))):
            bad("", f"offsets are malformed (length {len(offsets)} for {n} utterances, or not increasing); {fix}")
            return out
        try:
            for name, ds in f[FRAMES].items():
                if ds.shape[0] != offsets[-1]:
                    bad("", f"frames/{name} holds {ds.shape[0]} rows but offsets end at {offsets[-1]}; {fix}")
                    return out
            for name, ds in f[PER_UTT].items():
                if ds.shape[0] != n:
                    bad("", f"per_utterance/{name} holds {ds.shape[0]} rows for {n} utterances; {fix}")
                    return out
            _check_frame_counts(f, index, table, bad)
            for check in checks:
                check(f, index, bad)
            if values:
                _check_values(f, index, checksums, bad, fix)
        except H5_READ_ERRORS as exc:  # a truncated or damaged file can open and still fail on read
            bad("", f"{file} cannot be read (truncated or corrupt: {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0]}); {fix}")
    return out


def _expected_frames(rule: dict[str, Any], n_samples: int) -> int:
    return expected_frames(rule, n_samples)  # kept under its old name (tests and callers import it)


def _check_frame_counts(f: h5py.File, index: Any, table: pd.DataFrame, bad: Any) -> None:
    import json

    from sercache.store.streamfile import PER_UTT as PU

    rule = index.attrs.get("frame_rule")
    rule = json.loads(rule) if isinstance(rule, str) else (rule or {})
    if "n_samples" not in f[PU] or not rule:
        return
    n_samples = f[PU]["n_samples"][()]
    lengths = f[PU]["n_frames"][()] if "n_frames" in f[PU] else index.lengths
    # the manifest's durations, aligned with the stream's utterances (NaN: not in the manifest); one
    # vectorised comparison, as a pandas row lookup per utterance dominated verify at 200k utterances
    rows = table.drop_duplicates("utt_id").set_index("utt_id").reindex(list(index.utt_ids))
    rate = 16_000
    durations = pd.to_numeric(rows.duration_s, errors="coerce").to_numpy(dtype=float)
    tolerance = 1e-3 + 1.0 / np.maximum(pd.to_numeric(rows.sample_rate, errors="coerce").fillna(1).to_numpy(float), 1)
    encoded = np.asarray(n_samples, dtype=np.int64) / rate
    with np.errstate(invalid="ignore"):
        off = np.isfinite(durations) & (np.abs(encoded - durations) > tolerance)
    for i, (u, ns, length) in enumerate(zip(index.utt_ids, n_samples, lengths)):
        expected = _expected_frames(rule, int(ns))
        if expected >= 0 and expected != int(length):
            bad(u, f"{int(length)} frames stored, {expected} expected for {int(ns)} samples")
        if off[i]:
            bad(u, f"{encoded[i]:.3f} s of audio encoded, manifest says {durations[i]:.3f} s")


def _blocks(offsets: np.ndarray, row_bytes: int) -> Iterator[tuple[int, int]]:
    """Ranges of whole utterances of about BLOCK_BYTES each."""
    n, start = len(offsets) - 1, 0
    while start < n:
        stop = start + 1
        while stop < n and (offsets[stop + 1] - offsets[start]) * row_bytes <= BLOCK_BYTES:
            stop += 1
        yield start, stop
        start = stop


def _check_values(f: h5py.File, index: Any, checksums: bool, bad: Any, fix: str) -> None:
    ids, offsets = index.utt_ids, index.offsets
    for name, ds in f[FRAMES].items():
        text = h5py.check_string_dtype(ds.dtype) is not None
        stored = f[f"{CHECKSUMS}/{FRAMES}/{name}"][()] if checksums else None
        row_bytes = max(1, int(np.prod(ds.shape[1:], dtype=np.int64)) * (16 if text else ds.dtype.itemsize))
        for a, b in _blocks(offsets, row_bytes):
            lo, hi = int(offsets[a]), int(offsets[b])
            block = ds.asstr()[lo:hi] if text else ds[lo:hi]
            finite = True if text or block.dtype.kind != "f" else bool(np.isfinite(block).all())
            for i in range(a, b):
                rows = block[offsets[i] - lo: offsets[i + 1] - lo]
                if not finite and not np.isfinite(rows).all():
                    bad(ids[i], f"frames/{name} holds NaN/inf values; {fix}")
                if stored is not None and checksum(rows) != stored[i]:
                    bad(ids[i], f"frames/{name}: checksum mismatch (stored bytes were damaged); {fix}")
    finite = set(index.attrs.get("finite_fields") or [])  # per-utterance fields a stream declares NaN-free
    for name, ds in f[PER_UTT].items():
        data = ds.asstr()[()] if h5py.check_string_dtype(ds.dtype) is not None else ds[()]
        stored = f[f"{CHECKSUMS}/{PER_UTT}/{name}"][()] if checksums else None
        must_be_finite = (name.startswith("pooled") or name in finite) and data.dtype.kind in "fc"
        # one vectorised pass per field: a per-utterance isfinite dominated verify on 200k-utterance caches
        not_finite = (~np.isfinite(data.reshape(len(data), -1)).all(1)) if must_be_finite and len(data) else None
        for i, u in enumerate(ids):
            if stored is not None and checksum(data[i]) != stored[i]:
                bad(u, f"per_utterance/{name}: checksum mismatch (stored bytes were damaged); {fix}")
            if not_finite is not None and not_finite[i]:
                bad(u, f"per_utterance/{name} holds NaN/inf values; {fix}")
