"""The pieces of a report: a run's summary (mean, std, bootstrap CI, pooled, subsets) and its tables.

:mod:`report` writes them as Markdown and CSV, :mod:`report_html` as one page.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from sercache.heads import get_head
from sercache.runs.record import RunRecord
from sercache.runs.report_tables import chance_line, per_class_columns
from sercache.training import metrics as _metrics
from sercache.training.metrics import METRIC_KEYS, METRIC_NAMES, bootstrap_ci, classification_metrics
from sercache.training.roles import RoleSpec
from sercache.training.run_config import RunConfig

#: tabulate would re-parse the formatted figures as numbers and print 61.00 as 61: keep them as written.
KEEP_TEXT = {"disable_numparse": True}

NICE = {m.key: m.label for m in _metrics.METRICS}  # display names, from the one list of metrics


def summarize(run: RunRecord, n_boot: int = 1000) -> dict[str, Any]:
    """Mean, std and bootstrap CI of every metric, plus pooled and per-subset figures."""
    k = len(run.label_names)
    groups = {(r.fold, r.seed): g for (r_fold, r_seed), g in run.predictions.groupby(["fold", "seed"], sort=False)
              for r in [pd.Series({"fold": r_fold, "seed": r_seed})]}
    keys = list(groups)
    fold_ids = {f: i for i, f in enumerate(dict.fromkeys(f for f, _ in keys))}
    ci = bootstrap_ci([(groups[key].label.to_numpy(), groups[key].pred.to_numpy()) for key in keys], k,
                      n_boot=n_boot, paired_groups=[fold_ids[f] for f, _ in keys])
    out: dict[str, Any] = {"n_runs": len(keys), "folds": len(fold_ids), "seeds": sorted({s for _, s in keys})}
    for m in METRIC_KEYS:
        if m in run.metrics and run.metrics[m].notna().any():
            vals = run.metrics[m].to_numpy(float)
            out[m] = {"mean": float(np.nanmean(vals)), "std": float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else 0.0,
                      "ci": ci.get(m)}
    pooled = [classification_metrics(g.label.to_numpy(), g.pred.to_numpy(), k)
              for _, g in run.predictions.groupby("seed")]
    out["pooled"] = {m: float(np.mean([p[m] for p in pooled])) for m in METRIC_NAMES}
    if "dialog_type" in run.predictions and run.predictions.dialog_type.notna().any():
        out["subsets"] = {}
        for subset, part in run.predictions.groupby("dialog_type"):
            per = [classification_metrics(g.label.to_numpy(), g.pred.to_numpy(), k)
                   for _, g in part.groupby(["fold", "seed"])]
            out["subsets"][str(subset)] = {m: float(np.mean([p[m] for p in per])) for m in ("wa", "ua")}
    out["timing"] = {"train_seconds_per_epoch": float(run.metrics.train_seconds_per_epoch.mean()),
                     "test_inference_seconds": float(run.metrics.test_inference_seconds.mean())}
    return out


def _layer_words(spec: RoleSpec | None, encoder: dict[str, Any], mixed: dict[str, float] | None = None) -> str:
    """``ssl layer(s) 12``; several layers of a pooled stream as ``whisper:0-6``, and how select chose among them;
    a frame head's learned mix of layers with its mean weights (``mixed``)."""
    if mixed:
        return (f"{encoder.get('stream')} layers {','.join(mixed)}, a learned mix (mean weight over tasks: "
                + " ".join(f"{k}:{v:.2f}" for k, v in mixed.items()) + ")")
    if spec is None or not any(isinstance(v, list) for v in spec.layers):
        return f"{encoder.get('stream')} layer(s) {','.join(map(str, encoder.get('layers', [])))}"
    return spec.describe() + (" (per fold, one of each single layer or all, chosen on validation: --layer select)"
                              if spec.select else "")


def header(run: RunRecord) -> list[str]:
    c = run.config
    enc = "; ".join(f"{role}: {_layer_words(c.roles.get(role), e, mean_layer_weights(run, role))}"
                    f"{' (' + str(e['model']) + ')' if e.get('model') else ''}"
                    f"{' [synthetic]' if e.get('synthetic') else ''}" for role, e in c.encoders.items())
    proto = c.protocol + (f" ({c.subset} subset)" if c.subset != "all" else "")
    if c.protocol_default is not None:  # chosen for the corpus, not given: say so
        proto += f" (not given: {c.protocol_default.split(', ', 1)[-1]})"
    return [f"run: {run.path}",
            f"head: {c.head}  {json.dumps(dict(c.hyperparameters))}",
            f"protocol: {proto}; speaker-independent: {'yes' if c.speaker_independent else 'NO (speaker-dependent split)'}",
            f"labels: {c.labels.rule}" + (f"; {c.dropped_utterances} utterances of the cache outside these "
                                          "classes (or without a label) left out" if c.dropped_utterances else ""),
            training_line(c),
            chance_line(run),
            f"text source: {c.text_source or 'none (no text stream)'}",
            f"features: {enc}",
            f"folds x seeds: {run.metrics.fold.nunique()} x {run.metrics.seed.nunique()}; model selection: "
            + ("C/gamma" if get_head(c.head).closed_form else "best epoch")
            + (" and layers" if any(spec.select for spec in c.roles.values()) else "")
            + " by validation UA (validation carved from the training side; the test fold is never used)"
            + ("; then refit on training + validation" if c.train.refit else ""),
            f"cache: {c.cache}"]


def mean_layer_weights(run: RunRecord, role: str) -> dict[str, float] | None:
    """The mean over tasks of the learned weight of each layer of ``role`` (None: the run mixes no layers there)."""
    if "layer_weights" not in run.metrics:
        return None
    per_task = [d[role] for d in run.metrics.layer_weights if isinstance(d, dict) and isinstance(d.get(role), dict)]
    if not per_task:
        return None
    return {k: float(np.mean([float(w.get(k, np.nan)) for w in per_task])) for k in per_task[0]}


def training_line(config: RunConfig) -> str:
    t = config.train
    if get_head(config.head).closed_form:
        return f"training: closed form (scikit-learn), candidates {config.hyperparameters.get('C')} for C"
    return (f"training: {t.optimizer} lr {t.lr}, batch {t.batch_size}, up to {t.epochs} "
            f"epochs (patience {t.patience}), weight decay {t.weight_decay}, schedule "
            f"{t.schedule}, {'z-scored' if t.normalize else 'raw'} features")


def _fmt(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    ci = entry.get("ci")
    text = f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}"
    return text + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def runs_table(runs: list[RunRecord], summaries: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for run, s in zip(runs, summaries):
        row = {"run": run.path.name, "head": run.config.head, "folds x seeds": f"{s['folds']} x {len(s['seeds'])}"}
        for m in METRIC_KEYS:
            if m in s:
                row[NICE[m]] = _fmt(s[m])
        row["pooled WA"] = f"{100 * s['pooled']['wa']:.2f}"
        row["pooled UA"] = f"{100 * s['pooled']['ua']:.2f}"
        rows.append(row)
    return pd.DataFrame(rows).fillna("-")


def csv_table(runs: list[RunRecord], summaries: list[dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for run, s in zip(runs, summaries):
        row = {"run": str(run.path), "head": run.config.head, "protocol": run.config.protocol,
               "labels": run.config.labels.preset, "text_source": run.config.text_source,
               "speaker_independent": run.config.speaker_independent, "folds": s["folds"], "seeds": len(s["seeds"])}
        for m in METRIC_KEYS:
            if m in s:
                row.update({f"{m}_mean": s[m]["mean"], f"{m}_std": s[m]["std"]})
                if s[m]["ci"]:
                    row.update({f"{m}_ci_low": s[m]["ci"][0], f"{m}_ci_high": s[m]["ci"][1]})
        row.update({f"pooled_{m}": v for m, v in s["pooled"].items()})
        row.update(s["timing"])
        row.update(per_class_columns(run))
        rows.append(row)
    return pd.DataFrame(rows)


SUBSET_CAPTION = ("By dialog type, % (mean over folds x seeds; scripted dialogs reuse sentences across sessions, so "
                  "text heads can memorise them)")
MAIN_CAPTION = ("Metrics in %, mean ± std over folds x seeds [bootstrap 95% CI over test utterances]; pooled = "
                "predictions of all folds pooled, per seed")


def subset_table(summary: dict[str, Any]) -> pd.DataFrame | None:
    """IEMOCAP's improvised/scripted breakdown in % (None where the corpus has no dialog types)."""
    if "subsets" not in summary:
        return None
    table = pd.DataFrame(summary["subsets"]).T.rename(columns={"wa": "WA", "ua": "UA"})
    return table.map(lambda v: f"{100 * v:.2f}")


def subset_section(summary: dict[str, Any]) -> list[str]:
    table = subset_table(summary)
    return [] if table is None else [f"{SUBSET_CAPTION}:", "", table.to_markdown(**KEEP_TEXT), ""]


def epoch_range(epochs: pd.Series) -> str:
    """Selected epochs of a fold's seeds as whole numbers: ``2``, or ``2–5`` when the seeds differ."""
    low, high = int(epochs.min()), int(epochs.max())
    return str(low) if low == high else f"{low}–{high}"


def per_fold_table(run: RunRecord) -> pd.DataFrame:
    g = run.metrics.groupby("fold", sort=False)
    table = {"UA": g.ua.mean().map(lambda v: f"{100 * v:.2f}"), "WA": g.wa.mean().map(lambda v: f"{100 * v:.2f}"),
             "test utts": g.n_test.first()}
    if "selected" in run.metrics and run.metrics.best_epoch.isna().all():  # closed-form heads: the chosen candidate
        table["selected"] = g.selected.agg(lambda v: "; ".join(sorted({" ".join(f"{k}={x}" for k, x in d.items())
                                                                        for d in v if isinstance(d, dict)})))
        table["fit s"] = g.train_seconds.mean().map(lambda v: f"{v:.2f}")
    else:
        table["best epoch"] = g.best_epoch.agg(epoch_range)
        table["s/epoch"] = g.train_seconds_per_epoch.mean().map(lambda v: f"{v:.2f}")
    if any(spec.select for spec in run.config.roles.values()) and "layers" in run.metrics:  # chosen per fold
        table["layers"] = g.layers.agg(lambda v: "; ".join(sorted({"; ".join(d.values()) for d in v
                                                                   if isinstance(d, dict)})))
    table["test inference s"] = g.test_inference_seconds.mean().map(lambda v: f"{v:.3f}")
    return pd.DataFrame(table)


def paired_table(base: RunRecord, other: RunRecord) -> pd.DataFrame | str:
    """Paired differences other - base over identical folds and seeds (or why they cannot be paired)."""
    if base.test_ids != other.test_ids:
        return f"{other.path.name} vs {base.path.name}: folds differ (not the same test utterances); no paired test"
    merged = base.metrics.merge(other.metrics, on=["fold", "seed"], suffixes=("_base", "_other"))
    if len(merged) < 2:
        return f"{other.path.name} vs {base.path.name}: fewer than 2 matching fold/seed results; no paired test"
    rows = []
    for m in METRIC_NAMES:
        if f"{m}_other" not in merged or f"{m}_base" not in merged:  # a run trained before that metric existed
            continue
        r = _metrics.paired_comparison(merged[f"{m}_other"], merged[f"{m}_base"])
        rows.append({"metric": NICE[m], "n pairs": r["n"], "mean diff (pp)": f"{100 * r['mean_diff']:+.2f}",
                     "std (pp)": f"{100 * r['std_diff']:.2f}", "paired t p": f"{r['t_p']:.3g}",
                     "Wilcoxon p": f"{r['wilcoxon_p']:.3g}"})
    return pd.DataFrame(rows)
