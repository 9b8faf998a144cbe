"""Label presets and fold protocols (pandas + scikit-learn; no torch).

The names below are imported on first use (PEP 562), so that the registries' declaration modules
(:mod:`sercache.corpora`, :mod:`sercache.splits.registry`) can be read by the CLI, to build
its choices and options, without loading pandas and scikit-learn.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "sercache.splits.foldfiles": ("FoldFileResult", "FoldSource", "folds_from_file", "read_fold_source"),
    "sercache.splits.labels": ("DEFAULT_PRESET", "PRESETS", "LabelPreset", "apply_preset", "get_preset",
                               "soft_labels"),
    "sercache.splits.protocols": ("DEFAULT_PROTOCOL", "PROTOCOLS", "Fold", "ProtocolError", "check_fold_names",
                                  "default_protocol", "filter_subset", "load_folds", "make_folds", "save_folds"),
    "sercache.splits.registry": ("complete_options", "get_protocol", "protocols", "register_protocol"),
    "sercache.corpora": ("get_corpus", "register_corpus"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # looked up once
    return value
