"""pandas DataFrame <-> HDF5 group, one dataset per column (readable from any HDF5 tool)."""
from __future__ import annotations

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
    return group


def read_table(group: h5py.Group) -> pd.DataFrame:
    columns = json.loads(group.attrs["columns"])
    data = {}
    for col in columns:
        ds = group[col]
        if h5py.check_string_dtype(ds.dtype) is not None:
            data[col] = ds.asstr()[()].astype(object) if ds.shape[0] else np.array([], dtype=object)
        else:
            data[col] = ds[()]
    return pd.DataFrame(data, columns=columns)
