"""Label presets and fold protocols (pandas + scikit-learn; no torch)."""
from sercache.splits.foldfiles import FoldFileResult, FoldSource, folds_from_file, read_fold_source
from sercache.splits.labels import DEFAULT_PRESET, PRESETS, LabelPreset, apply_preset, get_preset, soft_labels
from sercache.splits.protocols import (
    DEFAULT_PROTOCOL,
    PROTOCOLS,
    Fold,
    ProtocolError,
    default_protocol,
    filter_subset,
    load_folds,
    make_folds,
    save_folds,
)

__all__ = ["DEFAULT_PRESET", "DEFAULT_PROTOCOL", "PRESETS", "PROTOCOLS", "Fold", "FoldFileResult", "FoldSource", "LabelPreset",
           "ProtocolError", "apply_preset", "default_protocol", "filter_subset", "folds_from_file", "get_preset", "load_folds",
           "make_folds", "read_fold_source", "save_folds", "soft_labels"]
