"""The format of one stream file (a finished stream of a shard, or one staged segment).

::

    /utt_ids                      (n,) str           utterance i is row i everywhere below
    /offsets                      (n + 1,) int64     utterance i is frames[offsets[i]:offsets[i+1]]
    /frames/<name>                (total, ...)       ragged along time/tokens: layer_24, token, ...
    /per_utterance/<name>         (n, ...)           one row per utterance: pooled_mean, text, wer, ...
    /checksums/frames/<name>      (n,) uint32        CRC-32 of each utterance's stored bytes
    /checksums/per_utterance/<n>  (n,) uint32
    /problems/<column>            errors table: utterances that failed, or were stored with a warning
    attrs: format, format_version, stream, shard, provenance (JSON), complete, n_expected, ...

Finished stream files use HDF5's contiguous layout: they are written once and then only
read, and a contiguous dataset reads at the speed of a flat ``.npy`` file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd

from sercache.store.records import ExtractionProblem, UtteranceFeatures, checksum, problems_frame
from sercache.store.tables import STR, as_str_array, read_table, write_table

STREAM_FORMAT = "sercache-stream"
FRAMES = "frames"
PER_UTT = "per_utterance"
CHECKSUMS = "checksums"
PROBLEMS = "problems"

# What reading a damaged HDF5 file can raise: the C library's errors come out as OSError, KeyError,
# RuntimeError (attribute iteration) or ValueError, and h5py's group views yield None for a member
# that cannot be opened, which then fails as AttributeError/TypeError. Readers that must report
# damage rather than crash (verify, resume, open_cache) catch all of these.
H5_READ_ERRORS = (OSError, KeyError, RuntimeError, ValueError, AttributeError, TypeError)


@dataclass
class Schema:
    """dtype and trailing shape of every dataset in a stream (must agree across segments)."""

    frames: dict[str, tuple[np.dtype, tuple[int, ...]]] = field(default_factory=dict)
    per_utterance: dict[str, tuple[np.dtype, tuple[int, ...]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.frames and not self.per_utterance

    def describe(self) -> dict[str, Any]:
        return {k: {n: [str(d), list(s)] for n, (d, s) in getattr(self, k).items()} for k in ("frames", "per_utterance")}


def _is_text(dtype: np.dtype) -> bool:
    return dtype.kind == "O" or h5py.check_string_dtype(dtype) is not None


def schema_of_records(records: list[UtteranceFeatures]) -> Schema:
    schema = Schema()
    if not records:
        return schema
    first = records[0]
    for name, arr in first.frames.items():
        schema.frames[name] = (np.dtype(object) if _is_text(arr.dtype) else arr.dtype, arr.shape[1:])
    for name, value in first.per_utterance.items():
        if isinstance(value, str):
            schema.per_utterance[name] = (np.dtype(object), ())
        else:
            arr = np.asarray(value)
            schema.per_utterance[name] = (arr.dtype, arr.shape)
    return schema


def schema_of_file(f: h5py.File) -> Schema:
    schema = Schema()
    for kind in (FRAMES, PER_UTT):
        target = schema.frames if kind == FRAMES else schema.per_utterance
        for name, ds in f[kind].items():
            dtype = np.dtype(object) if _is_text(ds.dtype) else ds.dtype
            target[name] = (dtype, ds.shape[1:])
    return schema


def _h5_dtype(dtype: np.dtype) -> Any:
    return STR if dtype.kind == "O" else dtype


def write_records(f: h5py.File, records: list[UtteranceFeatures], problems: list[ExtractionProblem],
                  attrs: dict[str, Any]) -> None:
    """Write a list of utterance records into an open, empty HDF5 file (one segment)."""
    schema = schema_of_records(records)
    lengths = np.array([r.n_frames for r in records], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    f.create_dataset("utt_ids", data=as_str_array(r.utt_id for r in records), dtype=STR)
    f.create_dataset("offsets", data=offsets)
    for kind in (FRAMES, PER_UTT):
        f.create_group(kind)
        f.create_group(f"{CHECKSUMS}/{kind}")
    for name, (dtype, tail) in schema.frames.items():
        parts = [as_str_array(r.frames[name]) if dtype.kind == "O" else np.asarray(r.frames[name], dtype=dtype)
                 for r in records]
        data = (as_str_array(v for p in parts for v in p) if dtype.kind == "O"
                else np.concatenate(parts).reshape((-1, *tail)))
        f[FRAMES].create_dataset(name, data=data, dtype=_h5_dtype(dtype))
        f[f"{CHECKSUMS}/{FRAMES}"].create_dataset(name, data=np.array([checksum(p) for p in parts], dtype=np.uint32))
    for name, (dtype, _) in schema.per_utterance.items():
        values = [str(r.per_utterance[name]) if dtype.kind == "O" else np.asarray(r.per_utterance[name], dtype=dtype)
                  for r in records]
        data = as_str_array(values) if dtype.kind == "O" else np.stack([np.asarray(v, dtype=dtype) for v in values])
        f[PER_UTT].create_dataset(name, data=data, dtype=_h5_dtype(dtype))
        f[f"{CHECKSUMS}/{PER_UTT}"].create_dataset(name, data=np.array([checksum(v) for v in values], dtype=np.uint32))
    write_table(f, PROBLEMS, problems_frame(problems))
    set_attrs(f, attrs)


def set_attrs(f: h5py.File, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value


@dataclass
class FileIndex:
    """The small part of a stream file: which utterances, where, and what failed."""

    path: Path
    utt_ids: list[str]
    offsets: np.ndarray
    problems: pd.DataFrame
    schema: Schema
    attrs: dict[str, Any]

    @cached_property
    def lengths(self) -> np.ndarray:
        # computed once: readers index it per utterance, and a fresh diff per lookup made loading a
        # fold quadratic in the shard's size (12 s for one fold of a 200k-utterance cache, now 0.4 s)
        return np.diff(self.offsets)


def refuse_outside_storage(f: h5py.File, path: Path) -> None:
    """A cache file must hold its own bytes: external storage, virtual datasets and external links point
    elsewhere, so a crafted file could make the reader return another file's contents."""
    from sercache.store.errors import CacheCorruptError

    links: list[tuple[str, Any]] = []
    f.visititems_links(lambda name, link: links.append((name, link)))  # raising inside h5py's visit is unsafe
    for name, link in links:
        if isinstance(link, h5py.ExternalLink):
            raise CacheCorruptError(f"{path}: {name!r} is an external link to {link.filename}; refused (a cache file "
                                    "must hold its own data). Re-extract this stream, or use a cache you trust.")
        obj = f.get(name) if isinstance(link, h5py.HardLink) else None
        if isinstance(obj, h5py.Dataset) and (obj.external or obj.is_virtual):
            where = obj.external[0][0] if obj.external else "other files (virtual dataset)"
            raise CacheCorruptError(f"{path}: dataset {name!r} stores its data in {where!r}, outside this file; "
                                    "refused. Re-extract this stream, or use a cache you trust.")


def read_index(f: h5py.File, path: Path) -> FileIndex:
    refuse_outside_storage(f, path)
    attrs = {}
    for key, value in f.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if key in ("provenance", "schema", "layers", "pooled_layers", "column_names", "finite_fields") and isinstance(
                value, str):
            value = json.loads(value)
        attrs[key] = value.item() if isinstance(value, np.generic) else value
    utt = f["utt_ids"].asstr()[()].tolist() if f["utt_ids"].shape[0] else []
    return FileIndex(path=Path(path), utt_ids=utt, offsets=f["offsets"][()], problems=read_table(f[PROBLEMS]),
                     schema=schema_of_file(f), attrs=attrs)
