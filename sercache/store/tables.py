"""pandas DataFrame <-> HDF5 group, one dataset per column (readable from any HDF5 tool)."""
from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pandas as pd

STR = h5py.string_dtype("utf-8")


def as_str_array(values) -> np.ndarray:  # noqa: ANN001 - any iterable of text
    """An object array of Python str that h5py stores as variable-length UTF-8."""
    return np.array(["" if v is None else str(v) for v in values], dtype=object)


def write_table(parent: h5py.Group, name: str, df: pd.DataFrame) -> h5py.Group:
    """Write ``df`` as ``parent/name/<column>`` datasets; column order kept in an attribute."""
    group = parent.create_group(name)
    group.attrs["columns"] = json.dumps([str(c) for c in df.columns])
    for col in df.columns:
        series = df[col]
        if pd.api.types.is_bool_dtype(series):
            group.create_dataset(str(col), data=series.to_numpy(dtype=bool))
        elif pd.api.types.is_integer_dtype(series):
            group.create_dataset(str(col), data=series.to_numpy(dtype=np.int64))
        elif pd.api.types.is_float_dtype(series):
            group.create_dataset(str(col), data=series.to_numpy(dtype=np.float64))
        else:
            values = ["" if (v is None or (isinstance(v, float) and np.isnan(v))) else v for v in series]
            group.create_dataset(str(col), data=as_str_array(values), dtype=STR)
    group.attrs[DIGEST_ATTR] = table_digest(group)
    return group


DIGEST_ATTR = "sha1"


def table_digest(group: h5py.Group) -> str:
    """SHA-1 of a stored table's column names and values, as read back from the file.

    Stream files carry per-utterance CRC-32s of their frames; this covers the small tables
    (a shard's manifest rows: labels, paths, sessions), so an edit after extraction is noticed.
    """
    digest = hashlib.sha1(group.attrs["columns"].encode() if isinstance(group.attrs["columns"], str)
                          else bytes(group.attrs["columns"]))
    for col in json.loads(group.attrs["columns"]):
        ds = group[col]
        digest.update(b"\0" + col.encode())
        if h5py.check_string_dtype(ds.dtype) is not None:
            values = ds.asstr()[()] if ds.shape[0] else []
            digest.update("\x1f".join(values).encode("utf-8", "surrogatepass"))
        else:
            digest.update(np.ascontiguousarray(ds[()]).tobytes())
    return digest.hexdigest()


def read_table(group: h5py.Group) -> pd.DataFrame:
    """The table; refuses one whose values no longer match the checksum written with it."""
    stored = group.attrs.get(DIGEST_ATTR)
    if stored is not None:  # tables written before checksums existed have none
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        if table_digest(group) != stored:
            from sercache.store.errors import CacheCorruptError

            raise CacheCorruptError(
                f"{group.file.filename}: table {group.name!r} does not match the checksum written with it: it was "
                "edited or damaged after extraction. Restore the file, or re-extract this shard with --overwrite.")
    columns = json.loads(group.attrs["columns"])
    data = {}
    for col in columns:
        ds = group[col]
        if h5py.check_string_dtype(ds.dtype) is not None:
            data[col] = ds.asstr()[()].astype(object) if ds.shape[0] else np.array([], dtype=object)
        else:
            data[col] = ds[()]
    return pd.DataFrame(data, columns=columns)
