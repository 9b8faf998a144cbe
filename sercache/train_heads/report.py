"""``sercache report``: paper-style tables from one or more run directories.

For each run: WA, UA, macro-F1, weighted-F1 (and CCC for heads that regress valence/arousal)
as mean +- std over folds x seeds, with a bootstrap 95% CI over test utterances; the pooled
variant (predictions of all folds pooled, per seed); impro/script breakdowns where known; a
per-fold table; per-class recall, the confusion matrix (counts and row-normalised %, also as a
PNG) and the chance levels of UA and WA (see :mod:`report_tables`). With several runs on
identical folds and seeds, paired differences with a paired t-test and a Wilcoxon signed-rank test.
``--html`` adds one self-contained page of these tables and their plots (:mod:`report_html`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sercache.splits import load_folds
from sercache.store.atomic import read_json
from sercache.train_heads import metrics as _metrics
from sercache.train_heads import run_layout
from sercache.train_heads.heads import get_head
from sercache.train_heads.metrics import METRIC_KEYS, METRIC_NAMES, bootstrap_ci, classification_metrics, confusion
from sercache.train_heads.report_tables import chance_line, per_class_columns, per_class_sections, run_warnings
from sercache.train_heads.roles import RoleSpec
from sercache.train_heads.run_config import REQUIRED_KEYS, RunConfig

#: tabulate would re-parse the formatted figures as numbers and print 61.00 as 61: keep them as written.
KEEP_TEXT = {"disable_numparse": True}

NICE = {m.key: m.label for m in _metrics.METRICS}  # display names, from the one list of metrics


@dataclass
class RunResults:
    path: Path
    config: RunConfig            # a mapping (the run's config.json) is read into one
    metrics: pd.DataFrame        # one row per fold x seed
    predictions: pd.DataFrame    # all test predictions, with fold and seed columns
    test_ids: dict[str, list[str]]

    def __post_init__(self) -> None:
        if not isinstance(self.config, RunConfig):
            self.config = RunConfig.from_dict(self.config)

    @property
    def label_names(self) -> list[str]:
        return self.config.labels.classes

    def predict(self, waveform: Any, sample_rate: int, **options: Any) -> pd.DataFrame:
        """Emotion of one waveform as ``sercache predict`` gives it: one row (or one per ``window``/``hop``).

        Options: ``fold``, ``window``, ``hop``, ``cache``, ``device``, ``models``, ``allow_different_weights``
        (see :class:`sercache.train_heads.predict.Predictor`). Models load on the first call and are kept.
        """
        from sercache.train_heads.predict import run_predict

        return run_predict(self, waveform, sample_rate, **options)


#: What report and eval read from a run's config.json (checked once, so a damaged run never gives a KeyError).
RUN_CONFIG_KEYS = REQUIRED_KEYS


def load_run(path: str | Path) -> RunResults:
    path = Path(path)
    if not run_layout.config_path(path).exists():
        raise FileNotFoundError(f"{path} is not a run directory (no {run_layout.CONFIG_FILE}): give the --out of "
                                "`sercache train`")
    config = RunConfig.load(run_layout.config_path(path))
    folds = load_folds(run_layout.folds_path(path))
    rows, preds = [], []
    for fold in folds:
        for seed_dir in run_layout.finished_tasks(path, fold.name):
            m = read_json(seed_dir / run_layout.METRICS, "a finished task's metrics", f"Delete {seed_dir} and rerun "
                          "`sercache train` with the same settings: only that task is retrained.")
            seed = run_layout.seed_of(seed_dir)
            rows.append({"fold": fold.name, "seed": seed, **m})
            preds.append(pd.read_csv(seed_dir / run_layout.PREDICTIONS).assign(fold=fold.name, seed=seed))
    if not rows:
        raise FileNotFoundError(f"{path} has no finished fold yet (no */seed*/{run_layout.DONE}); run `sercache train` "
                                "first")
    return RunResults(path, config, pd.DataFrame(rows), pd.concat(preds, ignore_index=True),
                      {f.name: f.test for f in folds})


def summarize(run: RunResults, n_boot: int = 1000) -> dict[str, Any]:
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


def _layer_words(spec: RoleSpec | None, encoder: dict[str, Any]) -> str:
    """``ssl layer(s) 12``; several layers of a pooled stream as ``whisper:0-6``, and how select chose among them."""
    if spec is None or not any(isinstance(v, list) for v in spec.layers):
        return f"{encoder.get('stream')} layer(s) {','.join(map(str, encoder.get('layers', [])))}"
    return spec.describe() + (" (per fold, one of each single layer or all, chosen on validation: --layer select)"
                              if spec.select else "")


def header(run: RunResults) -> list[str]:
    c = run.config
    enc = "; ".join(f"{role}: {_layer_words(c.roles.get(role), e)}"
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


def runs_table(runs: list[RunResults], summaries: list[dict[str, Any]]) -> pd.DataFrame:
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


def csv_table(runs: list[RunResults], summaries: list[dict[str, Any]]) -> pd.DataFrame:
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


def per_fold_table(run: RunResults) -> pd.DataFrame:
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


def paired_table(base: RunResults, other: RunResults) -> pd.DataFrame | str:
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


def confusion_png(run: RunResults, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(run.label_names)
    cm = confusion(run.predictions.label.to_numpy(), run.predictions.pred.to_numpy(), k).astype(float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2, 1.1 * k + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), run.label_names, rotation=45, ha="right")
    ax.set_yticks(range(k), run.label_names)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{100 * norm[i, j]:.0f}%\n({int(cm[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{run.config.head} ({run.config.protocol}): all folds x seeds, row-normalised")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_report(paths: list[str | Path], fmt: str = "md", n_boot: int = 1000, html: str | Path | None = None) -> str:
    """Build the report text; also write report.md/.csv and confusion.png into each run directory.

    With ``html``, also write the self-contained HTML report (tables and plots) to that file
    (see :mod:`report_html`); the path is checked before any work.
    """
    if html is not None:
        from sercache.train_heads.report_html import check_html_path, write_html

        html = check_html_path(html)
    runs = [load_run(p) for p in paths]
    summaries = [summarize(r, n_boot) for r in runs]
    for run, s in zip(runs, summaries):
        png = confusion_png(run, run.path / run_layout.CONFUSION_PNG)
        single = [f"# {run.config.head} on {run.config.protocol}", "", *[f"- {h}" for h in header(run)],
                  *[f"- **{w}**" for w in run_warnings(run, s)], "",
                  runs_table([run], [s]).to_markdown(index=False, **KEEP_TEXT), "", "Per fold (mean over seeds):", "",
                  per_fold_table(run).to_markdown(**KEEP_TEXT), "", *per_class_sections(run, "All folds")]
        single += subset_section(s)
        single += [f"Confusion matrix: {png.name}", ""]
        (run.path / run_layout.REPORT_MD).write_text("\n".join(single))
        csv_table([run], [s]).to_csv(run.path / run_layout.REPORT_CSV, index=False)
    if fmt not in ("md", "csv"):
        raise ValueError(f"--format {fmt!r}: use md or csv")
    text = csv_table(runs, summaries).to_csv(index=False) if fmt == "csv" else markdown_report(runs, summaries)
    if html is not None:
        write_html(runs, summaries, html)
    return text


def markdown_report(runs: list[RunResults], summaries: list[dict[str, Any]]) -> str:
    lines = []
    for run, s in zip(runs, summaries):
        lines += [*[f"- {h}" for h in header(run)], *[f"- **{w}**" for w in run_warnings(run, s)], ""]
    lines += [f"{MAIN_CAPTION}:", "", runs_table(runs, summaries).to_markdown(index=False, **KEEP_TEXT), ""]
    for run, s in zip(runs, summaries):
        lines += [f"{run.path.name}: per fold (mean over seeds)", "", per_fold_table(run).to_markdown(**KEEP_TEXT), "",
                  *per_class_sections(run, run.path.name), *subset_section(s)]
    for other in runs[1:]:
        table = paired_table(runs[0], other)
        if isinstance(table, str):
            lines += [table, ""]
        else:
            lines += [f"Paired differences, {other.path.name} - {runs[0].path.name} (identical folds and seeds):", "",
                      table.to_markdown(index=False, **KEEP_TEXT), ""]
    lines += [f"Confusion matrices: {', '.join(str(r.path / run_layout.CONFUSION_PNG) for r in runs)}"]
    return "\n".join(lines)
