"""Per-class tables for ``sercache report``: chance levels, per-class recall and the confusion matrix.

On a real corpus the classes are imbalanced (IEMOCAP 4-class: neutral 31%, sad 20%), so WA and UA
have different chance levels and a head can trade one class for another; these tables show both.
Everything is computed from the recorded ``predictions.csv`` of a run (see :func:`record.read_run`).
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sercache.training.metrics import confusion, per_class_recall

if TYPE_CHECKING:
    from sercache.runs.record import RunRecord


def _pct(value: float) -> str:
    return "-" if not np.isfinite(value) else f"{100 * value:.2f}"


def class_support(run: RunRecord) -> np.ndarray:
    """Test utterances per class, each counted once (not once per seed, nor per fold it recurs in)."""
    once = run.predictions.drop_duplicates("utt_id")
    return np.bincount(once.label.to_numpy(int), minlength=len(run.label_names))


def chance_levels(run: RunRecord) -> dict[str, Any]:
    """UA and WA of a classifier that knows nothing: ``1/k`` and the majority class's share."""
    support = class_support(run)
    present = int((support > 0).sum())  # UA averages over the classes present in the test sets
    major = [run.label_names[i] for i in np.flatnonzero(support == support.max())]
    return {"chance_ua": 1 / present, "chance_wa": float(support.max() / support.sum()), "k": present,
            "k_configured": len(run.label_names), "majority_class": "+".join(major),
            "majority_n": int(support.max()), "n_test": int(support.sum())}


def chance_line(run: RunRecord) -> str:
    c = chance_levels(run)
    k = f"k={c['k']}" + (f" classes present of {c['k_configured']}" if c["k"] != c["k_configured"] else "")
    tied = "+" in c["majority_class"]
    major = (f"classes {c['majority_class'].replace('+', ', ')} tied" if tied else f"class {c['majority_class']}")
    return (f"chance: UA {_pct(c['chance_ua'])}% (1/k, {k}); WA {_pct(c['chance_wa'])}% (majority {major} in the "
            f"test sets: {c['majority_n']} of {c['n_test']} utterances{' each' if tied else ''})")


def per_class_recall_summary(run: RunRecord) -> pd.DataFrame:
    """One row per class: recall mean/std over folds x seeds, results averaged, pooled recall, support.

    A fold whose test set lacks a class contributes no recall for it (NaN, skipped), not a 0.
    """
    k = len(run.label_names)
    per_result = np.array([per_class_recall(confusion(g.label.to_numpy(int), g.pred.to_numpy(int), k))
                           for _, g in run.predictions.groupby(["fold", "seed"], sort=False)])
    pooled = np.array([per_class_recall(confusion(g.label.to_numpy(int), g.pred.to_numpy(int), k))
                       for _, g in run.predictions.groupby("seed")])
    n = np.isfinite(per_result).sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column: a class absent from every test set
        mean = np.nanmean(per_result, 0)
        std = np.where(n > 1, np.nanstd(per_result, 0, ddof=1), np.where(n == 1, 0.0, np.nan))
        pooled_mean = np.nanmean(pooled, 0)
    return pd.DataFrame({"class": run.label_names, "recall_mean": mean, "recall_std": std, "n_results": n,
                         "pooled_recall": pooled_mean, "support": class_support(run)})


def pooled_confusion(run: RunRecord) -> pd.DataFrame:
    """Counts of all folds' predictions pooled and summed over seeds (as in confusion.png)."""
    k = len(run.label_names)
    cm = confusion(run.predictions.label.to_numpy(int), run.predictions.pred.to_numpy(int), k)
    return pd.DataFrame(cm, index=pd.Index(run.label_names, name="true \\ predicted"), columns=run.label_names)


def per_class_columns(run: RunRecord) -> dict[str, Any]:
    """The per-class and chance figures as flat CSV columns (fractions, like the other metric columns)."""
    c = chance_levels(run)
    row: dict[str, Any] = {"chance_ua": c["chance_ua"], "chance_wa": c["chance_wa"], "majority_class": c["majority_class"]}
    for r in per_class_recall_summary(run).itertuples():
        row.update({f"recall_{r[1]}_mean": r.recall_mean, f"recall_{r[1]}_std": r.recall_std,
                    f"pooled_recall_{r[1]}": r.pooled_recall, f"support_{r[1]}": r.support})
    cm = pooled_confusion(run)
    row.update({f"confusion_{t}_as_{p}": int(cm.loc[t, p]) for t in cm.index for p in cm.columns})
    return row


def per_class_table(run: RunRecord) -> tuple[pd.DataFrame, str]:
    """The per-class recall table as printed (recall mean ± std in %, pooled recall, support) and its note."""
    s = per_class_recall_summary(run)
    n_results = run.predictions.groupby(["fold", "seed"]).ngroups
    table = pd.DataFrame({"class": s["class"],
                          "recall": [f"{_pct(m)} ± {_pct(d)}" if np.isfinite(m) else "-"
                                     for m, d in zip(s.recall_mean, s.recall_std)],
                          "pooled recall": s.pooled_recall.map(_pct), "support": s.support.astype(str)})
    skipped = {c: n_results - n for c, n in zip(s["class"], s.n_results) if n < n_results}
    if skipped:
        table["folds x seeds"] = [str(n) for n in s.n_results]
    note = "a fold whose test set lacks a class has no recall for it and is skipped for that class (not counted as 0)"
    note += ("; here: " + ", ".join(f"{c} missing from {m} of {n_results} fold x seed results"
                                    for c, m in skipped.items()) + "." if skipped else "; no class was missing here.")
    return table, note


def per_class_sections(run: RunRecord, title: str) -> list[str]:
    """Markdown lines: the per-class recall table and the confusion matrix (counts and row-normalised %)."""
    table, note = per_class_table(run)
    seeds = run.predictions.seed.nunique()
    cm = pooled_confusion(run)
    norm = cm.div(cm.sum(axis=1).clip(lower=1), axis=0).map(_pct)
    where = "one seed" if seeds == 1 else f"summed over {seeds} seeds: each test utterance counted once per seed"
    right = ("left", *["right"] * len(run.label_names))  # numbers as strings keep their 2 decimals, right-aligned
    return [f"{title}: per-class recall in %, mean ± std over folds x seeds; pooled = predictions of all folds "
            "pooled, mean over seeds; support = test utterances:", "",
            table.to_markdown(index=False, disable_numparse=True, colalign=("left", *["right"] * (table.shape[1] - 1))),
            "", f"Note: {note}", "",
            f"{title}: confusion matrix, counts of the predictions of all folds pooled ({where}); rows = true class, "
            "columns = predicted:", "", cm.to_markdown(), "",
            f"{title}: the same, row-normalised (% of each true class):", "",
            norm.to_markdown(disable_numparse=True, colalign=right), ""]


def run_warnings(run: RunRecord, summary: dict[str, Any]) -> list[str]:
    """What a reader must know before trusting the table: undertraining, chance, classes missing from test."""
    out = []
    m, config = run.metrics, run.config
    max_epochs = config.train.epochs
    if "best_epoch" in m and m.best_epoch.notna().any() and max_epochs:
        last = int((m.best_epoch == max_epochs).sum())
        if last:
            out.append(f"warning: {last} of {len(m)} fold/seed(s) were best at their last epoch ({max_epochs}): they "
                       "may be undertrained; train again with a larger --epochs")
    levels = chance_levels(run)
    ua = summary.get("ua") or {}
    ci = ua.get("ci")
    if ua and ci and ci[0] <= levels["chance_ua"]:
        out.append(f"warning: UA {100 * ua['mean']:.2f}% is within noise of chance ({100 * levels['chance_ua']:.2f}%): "
                   f"its 95% CI [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}] includes chance")
    for fold in run.test_ids:
        labels = set(run.predictions.loc[run.predictions.fold == fold, "label"].astype(int))
        if not labels:
            continue
        absent = [name for i, name in enumerate(run.label_names) if i not in labels]
        if absent:
            out.append(f"note: fold {fold} has no test utterance of {', '.join(absent)}; its UA averages the recall of "
                       f"the {len(labels)} classes present (the rule for every fold), so it is not comparable with "
                       "the other folds' UA")
    return out
