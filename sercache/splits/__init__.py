"""Label presets and fold protocols (pandas + scikit-learn; no torch)."""
from sercache.splits.labels import DEFAULT_PRESET, PRESETS, LabelPreset, apply_preset, get_preset, soft_labels
from sercache.splits.protocols import PROTOCOLS, Fold, ProtocolError, load_folds, make_folds, save_folds

__all__ = ["DEFAULT_PRESET", "PRESETS", "PROTOCOLS", "Fold", "LabelPreset", "ProtocolError", "apply_preset",
           "get_preset", "load_folds", "make_folds", "save_folds", "soft_labels"]
