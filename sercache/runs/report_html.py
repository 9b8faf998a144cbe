"""``sercache report RUN... --html report.html``: one self-contained page of tables and plots.

The page reuses the Markdown report's pieces (:func:`report.header`, :func:`report.runs_table`,
:func:`report.per_fold_table`, :func:`report.paired_table`, the per-class tables) and adds the
figures of :mod:`report_plots` as inline base64 PNGs. Nothing is fetched when it is viewed: no
external CSS, JavaScript, fonts or images, so it can be mailed or archived as one file.
"""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sercache import __version__
from sercache.runs import report_plots as plots
from sercache.runs.errors import ReportError, ReportPathError
from sercache.runs.record import RunRecord
from sercache.runs.report_tables import per_class_table, run_warnings
from sercache.runs.summary import MAIN_CAPTION, SUBSET_CAPTION, header, paired_table, per_fold_table, runs_table, subset_table
from sercache.store.atomic import write_text_atomic

STYLE = """
:root { --ink: #1d2430; --muted: #5b6575; --line: #d8dde5; --card: #f6f8fb; --accent: #2b5ea7; --warn: #9a4b00; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1320px; padding: 20px 28px 40px; color: var(--ink);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 24px; margin: 0 0 2px; }
h2 { font-size: 18px; margin: 26px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 0 0 6px; color: var(--accent); }
.sub, .caption, figcaption, .note { color: var(--muted); font-size: 12.5px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; margin-top: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 0; font-size: 13px; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
.warn { color: var(--warn); font-size: 13px; margin: 6px 0 0; padding-left: 18px; }
table { border-collapse: collapse; font-size: 13px; margin: 4px 0 6px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { background: var(--card); font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td .ci { color: var(--muted); font-size: 11.5px; }
.scroll { overflow-x: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 14px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 8px; }
figure.wide { grid-column: 1 / -1; }
figure img { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: 6px; }
figcaption b { color: var(--ink); }
footer { margin-top: 30px; color: var(--muted); font-size: 12px; }
"""


def check_html_path(path: str | Path) -> Path:
    """The page's path, checked before any work: a file name in an existing folder."""
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"--html {path} is a folder: give a file name, e.g. {path / 'report.html'}")
    if not path.parent.is_dir():
        raise ReportPathError(f"--html {path}: the folder {path.parent} does not exist; create it first or give "
                              "a path in an existing folder")
    return path


def write_html(runs: list[RunRecord], summaries: list[dict[str, Any]], path: str | Path) -> Path:
    path = check_html_path(path)
    write_text_atomic(path, build_html(runs, summaries))
    return path


def _e(text: Any) -> str:
    return html.escape(str(text))


def _cell(value: Any) -> str:
    """A table cell; a metric's bootstrap CI ("61.00 ± 2.00 [58.10, 63.90]") goes on a second, quieter line."""
    text = "-" if value is None or (isinstance(value, float) and value != value) else str(value)
    mean, sep, ci = text.partition(" [")
    return _e(text) if not sep else f'{_e(mean)}<br><span class="ci">[{_e(ci)}</span>'


def _table(frame: pd.DataFrame, index: str | None = None) -> str:
    """``frame`` as an HTML table; ``index``: show the index as a first column of that name."""
    if index is not None:
        frame = frame.rename_axis(index).reset_index()
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _figure(png: bytes, alt: str, caption: str) -> str:
    """An inline PNG with its caption; one wider than half the page gets a row of its own."""
    wide = int.from_bytes(png[16:20], "big") > plots.HALF * plots.DPI + 10  # the width in the PNG's IHDR chunk
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure{" class=wide" if wide else ""}><img src="data:image/png;base64,{data}" alt="{_e(alt)}">'
            f"<figcaption>{caption}</figcaption></figure>")


def facts(run: RunRecord) -> list[tuple[str, str]]:
    """The header lines of the Markdown report as (name, value) pairs, the label preset named."""
    out = []
    for line in header(run):
        name, _, value = line.partition(": ")
        if name == "labels":
            value = f"{run.config.labels.preset or '?'} ({', '.join(run.label_names)}); {value}"
        out.append((name, value))
    return out


def _card(run: RunRecord, summary: dict[str, Any]) -> str:
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts(run))
    warns = run_warnings(run, summary)
    warn = f'<ul class="warn">{"".join(f"<li>{_e(w)}</li>" for w in warns)}</ul>' if warns else ""
    return f'<div class="card"><h3>{_e(run.path.name)}</h3><dl>{rows}</dl>{warn}</div>'


def _paired_section(runs: list[RunRecord]) -> tuple[str, list[str]]:
    """The paired-test tables (runs[0] is the base) and the paired-difference figures."""
    parts, figures = [], []
    base = runs[0]
    for other in runs[1:]:
        table = paired_table(base, other)
        if isinstance(table, str):
            parts.append(f'<p class="note">{_e(table)}</p>')
            continue
        parts.append(f"<h3>{_e(other.path.name)} − {_e(base.path.name)}</h3>"
                     '<p class="caption">Differences over identical folds and seeds (positive: '
                     f"{_e(other.path.name)} better); paired t-test and Wilcoxon signed-rank test over fold x seed "
                     f"pairs.</p>{_table(table)}")
        png = plots.paired_figure(base, other)
        if png is not None:
            figures.append(_figure(png, f"paired differences {other.path.name} - {base.path.name}",
                                   f"<b>Paired differences, {_e(other.path.name)} − {_e(base.path.name)}</b>: UA "
                                   "(black dots) and WA (grey squares) difference of each fold x seed and their means (dashed, "
                                   "dotted); above 0: "
                                   f"{_e(other.path.name)} better."))
    return "".join(parts), figures


def _run_figures(run: RunRecord, index: int) -> tuple[list[str], list[str]]:
    """Half-width figures (confusion matrices, layer weights) and full-width ones (training curves)."""
    name = _e(run.path.name)
    seeds = run.metrics.seed.nunique()
    out = [_figure(plots.confusion_figure(run), f"confusion matrices of {run.path.name}",
                   f"<b>{name}: confusion matrix</b>, predictions of all folds pooled"
                   + (f", summed over {seeds} seeds" if seeds > 1 else "")
                   + "; left counts, right % of each true class (rows = true, columns = predicted).")]
    weights = plots.layer_weights(run)
    if weights is not None:
        out.append(_figure(plots.layer_weights_figure(weights, index), f"learned layer weights of {run.path.name}",
                           f"<b>{name}: learned layer weights</b> (softmax), mean over folds x seeds (bar) and "
                           "each fold x seed (dots); dashed: uniform weighting. Mean per layer: "
                           + _e(", ".join(f"{layer}: {w:.3f}" for layer, w in
                                          weights.groupby("layer", sort=False).weight.mean().items())) + "."))
    wide = []
    curves = plots.curves_figure(run, index)
    if curves is not None:
        refit = " Refit on training + validation then repeats the selected number of epochs." \
            if run.config.train.refit else ""
        wide.append(_figure(curves, f"training curves of {run.path.name}",
                           f"<b>{name}: training curves</b> per fold (columns, on shared scales), in the run's "
                           "colour, one shade per seed: train loss (solid) and validation loss (dashed) on top, "
                           "validation UA below; the dotted line and "
                           f"star mark the epoch selected by validation UA.{refit}"))
    return out, wide


def _details(run: RunRecord, summary: dict[str, Any]) -> str:
    per_class, note = per_class_table(run)
    parts = [f"<h3>{_e(run.path.name)}</h3>", '<div class="grid">',
             f'<div><p class="caption">Per fold, mean over seeds (UA, WA in %)</p>{_table(per_fold_table(run), "fold")}'
             "</div>",
             '<div><p class="caption">Per-class recall in %, mean ± std over folds x seeds; pooled = predictions of '
             f'all folds pooled, mean over seeds; support = test utterances</p>{_table(per_class)}'
             f'<p class="note">Note: {_e(note)}</p></div>']
    subsets = subset_table(summary)
    if subsets is not None:
        parts.append(f'<div><p class="caption">{_e(SUBSET_CAPTION)}</p>{_table(subsets, "dialog type")}</div>')
    return "".join(parts) + "</div>"


def build_html(runs: list[RunRecord], summaries: list[dict[str, Any]]) -> str:
    names = ", ".join(r.path.name for r in runs)
    paired, paired_figures = _paired_section(runs) if len(runs) > 1 else ("", [])
    ua_caption = ("<b>Test UA per fold</b>: mean over seeds (bar), each seed (dots), std over seeds (whisker); "
                  "dashed: chance UA (1/k).")
    figures = [_figure(plots.ua_per_fold_figure(runs), "test UA per fold", ua_caption), *paired_figures]
    per_run = [_run_figures(run, i) for i, run in enumerate(runs)]
    figures += [f for half, _ in per_run for f in half] + [f for _, wide in per_run for f in wide]
    body = [f"<header><h1>sercache report: {_e(names)}</h1>",
            f'<p class="sub">{len(runs)} run(s) · generated {_e(time.strftime("%Y-%m-%d %H:%M"))} by sercache '
            f"{_e(__version__)} · every figure is computed from the runs' recorded predictions, curves and "
            "checkpoints</p></header>",
            f'<div class="cards">{"".join(_card(r, s) for r, s in zip(runs, summaries))}</div>',
            "<h2>Results</h2>", f'<p class="caption">{_e(MAIN_CAPTION)}.</p>', _table(runs_table(runs, summaries))]
    if paired:
        body += ["<h2>Paired tests</h2>", paired]
    body += ["<h2>Plots</h2>", f'<div class="grid">{"".join(figures)}</div>',
             "<h2>Per fold and per class</h2>", *[_details(r, s) for r, s in zip(runs, summaries)],
             f"<footer>Runs: {_e('; '.join(str(r.path) for r in runs))}</footer>"]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>sercache report: {_e(names)}</title><style>{STYLE}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
