"""``sercache eval``: re-evaluate saved checkpoints, on their own test folds or on another corpus.

On the run's own cache, each checkpoint is rebuilt from its JSON config (``weights_only`` load:
nothing in a run directory can execute code), evaluated on its test fold, and compared with
the predictions recorded at training time. With another cache (``--cache``), every checkpoint
is evaluated on all of that corpus's utterances whose class the two label presets share;
logits of the other classes are ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sercache.heads import get_head
from sercache.heads.base import Head
from sercache.runs.record import read_run
from sercache.splits import DEFAULT_PRESET, LabelPreset, get_preset, load_folds
from sercache.store import open_cache
from sercache.training import run_layout
from sercache.training.data import labelled_utterances
from sercache.training.metrics import METRIC_NAMES, METRICS, classification_metrics
from sercache.training.pooled import load_fold
from sercache.training.roles import DataError
from sercache.training.run_config import recorded_roles
from sercache.training.run_layout import CHECKPOINT, PREDICTIONS, finished_tasks, folds_path, seed_of
from sercache.training.trainer import build_head, evaluate, load_checkpoint

#: What restoring a head reads from its checkpoint, and the type of each.
CHECKPOINT_KEYS = {"head": str, "dims": dict, "n_classes": int, "hyperparameters": dict, "normalization": dict}
RETRAIN = "delete that task's seed directory and rerun `sercache train` to retrain it"
#: The largest logit difference to the recorded predictions that still counts as reproducing them.
REPRODUCED_TOLERANCE = 1e-3


def restore_head(seed_dir: Path, head_name: str, data: Any) -> Head:
    """The head a finished task saved, on ``data``'s device, with ``data`` set to its normalisation statistics.

    Every consumer of checkpoints (eval, predict) goes through here, so they all rebuild heads alike.
    """
    ckpt = _checked(Path(seed_dir) / CHECKPOINT, head_name)
    if hasattr(data, "use_layers"):  # pooled heads: the layers this head read (--layer select: chosen per fold)
        data.use_layers(ckpt.get("layers"))
    if ckpt["dims"] != data.dims:
        raise DataError(f"{seed_dir}: the checkpoint expects feature dims {ckpt['dims']}, these features give "
                        f"{data.dims}; the features must come from the same encoders and layers")
    try:  # a checkpoint that is not this run's: its hyperparameters or weights do not fit the head
        head = build_head(head_name, ckpt["dims"], ckpt["n_classes"], ckpt["hyperparameters"],
                          getattr(data, "roles", None))
        head.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{seed_dir}/{CHECKPOINT} does not rebuild this run's {head_name} head ({exc}); {RETRAIN}") from None
    data.normalization = ({r: (v["mean"], v["std"]) for r, v in ckpt["normalization"].items()}
                          if ckpt.get("normalization") else None)
    if hasattr(data, "z_limit"):  # frame heads: z-scores clipped as in training (checkpoints before that: not)
        data.z_limit = ckpt.get("z_limit")
    return head.to(data.device)


def _checked(path: Path, head_name: str) -> dict[str, Any]:
    """The checkpoint at ``path``, refused unless it holds a ``head_name`` head with every record restoring needs."""
    ckpt = load_checkpoint(path)
    missing = [k for k, kind in CHECKPOINT_KEYS.items() if not isinstance(ckpt.get(k), kind)]
    if missing:
        raise DataError(f"{path}: not a checkpoint of `sercache train` (no valid {', '.join(missing)}); {RETRAIN}")
    if ckpt["head"] != head_name:
        where = f" (a link to {path.resolve()})" if path.is_symlink() else ""
        raise DataError(f"{path}{where} holds a {ckpt['head'][:40]!r} head, and this run trains {head_name!r}: it "
                        f"comes from another run; {RETRAIN}")
    return ckpt


def evaluate_run(run_dir: str | Path, *, fold: str | None = None, cache: str | Path | None = None,
                 labels: str | None = None, device: str = "cpu", write: bool = False) -> pd.DataFrame:
    """One row per evaluated checkpoint: metrics, and (own cache) the largest logit difference to the record.

    ``attrs`` of the table: ``cache``, ``classes`` (the shared ones with another cache), ``dropped``
    (its utterances outside them). With ``write``, the table is also written to the run directory
    (:func:`eval_csv_path`), and ``attrs["written"]`` is that path.
    """
    run = read_run(run_dir)
    config = run.config
    folds = load_folds(folds_path(run_dir))
    if fold is not None:
        from sercache.training.run import select_folds

        folds = select_folds(folds, fold)
    other = cache is not None and Path(cache).resolve() != Path(config.cache).resolve()
    store = open_cache(cache or config.cache)
    head_cls = get_head(config.head)
    roles = recorded_roles(store, config)
    own = get_preset(config.labels.preset)
    if other:
        corpus = str(store.utterances.corpus.iloc[0])
        target = get_preset(labels or DEFAULT_PRESET.get(corpus, own.name))
        shared = [c for c in own.classes if c in target.classes]
        if not shared:
            raise DataError(f"presets {own.name} {own.classes} and {target.name} {target.classes} share no class")
        preset = LabelPreset(f"{own.name}&{target.name}", corpus, tuple(shared),
                             {k: v for k, v in target.mapping.items() if v in shared})
    else:
        preset, shared = own, list(own.classes)
    table = labelled_utterances(store, preset, roles)
    dropped = int(len(store.utterances) - len(table)) if other else 0
    data = load_fold(store, table, roles, preset, head_cls, config.hyperparameters, device)
    columns = [own.classes.index(c) for c in shared]
    rows = []
    for f in folds:
        for seed_dir in finished_tasks(run_dir, f.name):
            head = restore_head(seed_dir, config.head, data)
            test_ids = table.utt_id.tolist() if other else f.test
            idx = data.indices(test_ids)
            result, _ = evaluate(head, data, idx, 64, precision=config.train.precision)
            logits = result["logits"][:, columns]
            m = classification_metrics(data.y[idx].cpu().numpy(), logits.argmax(1), len(shared))
            row = {"fold": f.name, "seed": seed_of(seed_dir), "n_test": len(idx), **m}
            if not other:
                recorded = pd.read_csv(seed_dir / PREDICTIONS).set_index("utt_id").loc[test_ids]
                rec = recorded[[f"logit_{c}" for c in own.classes]].to_numpy()
                row["max_logit_diff_vs_record"] = float(np.abs(rec - result["logits"]).max())
            rows.append(row)
    store.close()
    out = pd.DataFrame(rows)
    out.attrs["classes"] = shared
    out.attrs["cache"] = str(cache or config.cache)
    out.attrs["dropped"] = dropped  # utterances of the other corpus outside the shared classes
    if write:
        path = eval_csv_path(run_dir, cache)
        out.to_csv(path, index=False)
        out.attrs["written"] = path
    return out


def eval_csv_path(run_dir: str | Path, other_cache: str | Path | None = None) -> Path:
    """Where eval writes its table: ``RUN/eval.csv``, or ``RUN/eval-<cache folder>.csv`` for another cache."""
    return run_layout.eval_csv(run_dir, other_cache)


def reproduction_verdict(table: pd.DataFrame, tolerance: float = REPRODUCED_TOLERANCE) -> str | None:
    """Whether the checkpoints give the recorded test predictions (None when evaluated on another cache)."""
    if "max_logit_diff_vs_record" not in table:
        return None
    worst = float(table.max_logit_diff_vs_record.max())
    verdict = ("the checkpoints reproduce the recorded test predictions" if worst <= tolerance else
               "WARNING: the checkpoints do NOT reproduce the recorded test predictions (another cache state, "
               "device or library version?)")
    return f"{verdict} (largest logit difference {worst:.2g})"


def evaluation_text(table: pd.DataFrame) -> str:
    """What ``sercache eval`` prints of a table of :func:`evaluate_run`: the rows in %, their mean, the verdict."""
    lines = [f"evaluated on {table.attrs['cache']} (classes: {', '.join(table.attrs['classes'])})"]
    if table.attrs.get("dropped"):
        lines.append(f"{table.attrs['dropped']} utterances of that cache have classes outside the shared set "
                     "(or no label) and were left out")
    shown = table.copy()
    for m in METRIC_NAMES:
        shown[m] = shown[m].map(lambda v: f"{100 * v:.2f}")
    lines.append(shown.to_string(index=False))
    lines.append("mean: " + "  ".join(f"{m.label} {100 * table[m.key].mean():.2f}"
                                      for m in METRICS if m.summary and m.key in table))
    verdict = reproduction_verdict(table)
    if verdict:
        lines.append(verdict)
    if table.attrs.get("written"):
        lines.append(f"wrote {table.attrs['written']}")
    return "\n".join(lines)
