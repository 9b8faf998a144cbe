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

from pathlib import Path
from typing import Any

import numpy as np

from sercache.runs.errors import ReportError
from sercache.runs.record import RunRecord, read_run
from sercache.runs.report_tables import per_class_sections, run_warnings
from sercache.runs.summary import (
    KEEP_TEXT,
    MAIN_CAPTION,
    csv_table,
    header,
    paired_table,
    per_fold_table,
    runs_table,
    subset_section,
    summarize,
)
from sercache.training import run_layout
from sercache.training.metrics import confusion


def confusion_png(run: RunRecord, path: Path) -> Path:
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
        from sercache.runs.report_html import check_html_path, write_html

        html = check_html_path(html)
    runs = [read_run(p) for p in paths]
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
        raise ReportError(f"--format {fmt!r}: use md or csv")
    text = csv_table(runs, summaries).to_csv(index=False) if fmt == "csv" else markdown_report(runs, summaries)
    if html is not None:
        write_html(runs, summaries, html)
    return text


def markdown_report(runs: list[RunRecord], summaries: list[dict[str, Any]]) -> str:
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
