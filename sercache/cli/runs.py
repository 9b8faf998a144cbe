"""``sercache eval|predict|report|demo``: use what was trained."""
from __future__ import annotations

from pathlib import Path

import click

from sercache.cli.common import CONTEXT, FiniteFloat
from sercache.cli.help import examples


@click.command("eval", context_settings=CONTEXT, epilog=examples(
    "sercache eval runs/gate                     # do the checkpoints reproduce the recorded predictions?",
    "sercache eval runs/gate --cache cache/ravdess --labels ravdess4     # cross-corpus, shared classes"))
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--fold", default=None, help="Only this fold (number or name).")
@click.option("--cache", "other_cache", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Evaluate on another corpus's cache, on the label classes both presets share.")
@click.option("--labels", "label_preset", default=None, help="Preset of the other corpus (default per corpus).")
@click.option("--device", default="cpu", help="cpu, cuda or auto.")
def eval_command(run_dir: Path, fold: str | None, other_cache: Path | None, label_preset: str | None,
                 device: str) -> None:
    """Re-evaluate saved checkpoints on their test folds (or across corpora with --cache)."""
    from sercache.runs.evaluate import evaluate_run, evaluation_text

    table = evaluate_run(run_dir, fold=fold, cache=other_cache, labels=label_preset, device=device, write=True)
    click.echo(evaluation_text(table))


@click.command(context_settings=CONTEXT, epilog=examples(
    "sercache predict runs/gate clips/ --out predictions.csv      # every fold x seed's heads, softmax averaged",
    "sercache predict runs/gate interview.wav --window 3 --hop 1 --out over_time.csv",
    "sercache predict runs/gate-gold manifest.csv --fold 1        # CSV: path,transcript (gold-text runs)"))
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("predictions.csv"),
              help="CSV to write: path, (start_s, end_s,) prediction, prob_<class>... (and V/A where regressed).")
@click.option("--fold", default=None, help="Only this fold's heads (number or name). Default: every fold and seed.")
@click.option("--window", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Seconds per window: one row per window (emotion over time).")
@click.option("--hop", type=FiniteFloat(min=0, min_open=True), default=None,
              help="Seconds between window starts (default: --window).")
@click.option("--cache", "cache_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="The run's cache, if it moved since training (its provenance says how features are computed).")
@click.option("--model", "model_dirs", multiple=True,
              help="STREAM=FOLDER: a model folder that moved (repeatable); its weights are still checked.")
@click.option("--allow-different-weights", is_flag=True,
              help="Predict even when a model's weights fingerprint differs from the one the cache recorded.")
@click.option("--device", default="auto", help="cpu, cuda or auto.")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
def predict(run_dir: Path, inputs: tuple[Path, ...], out: Path, fold: str | None, window: float | None,
            hop: float | None, cache_dir: Path | None, model_dirs: tuple[str, ...], allow_different_weights: bool,
            device: str, no_progress: bool) -> None:
    """Predict the emotion of audio files, folders of them, or a CSV manifest, with a trained RUN.

    Features are computed exactly as the run's cache computed them (same models, weights, layers,
    dtype, precision, chunking; the cache's provenance says which) and normalised with each head's
    training statistics. Any sample rate and channel count is accepted, as in extraction.
    """
    from sercache.runs.predict import parse_models, predict_run

    table, written = predict_run(run_dir, list(inputs), out=out, fold=fold, window=window, hop=hop,
                                 cache=cache_dir, device=device, models=parse_models(list(model_dirs)),
                                 allow_different_weights=allow_different_weights, progress=not no_progress)
    shown = table.drop(columns=[c for c in table if c.startswith("prob_")]).assign(
        probability=table.filter(like="prob_").max(axis=1).map(lambda p: f"{p:.3f}"))
    click.echo(shown.head(20).to_string(index=False) + (f"\n... ({len(table) - 20} more rows)" if len(table) > 20 else ""))
    counts = ", ".join(f"{c} {n}" for c, n in table.prediction.value_counts().items())
    click.echo(f"wrote {written} ({len(table)} rows: {counts})")


@click.command(context_settings=CONTEXT, epilog=examples(
    "sercache report runs/gate", "sercache report runs/gate runs/cmgi      # paired tests on identical folds and seeds",
    "sercache report runs/* --format csv > results.csv",
    "sercache report runs/gate runs/cmgi --html report.html   # one self-contained page with the plots"))
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--format", "fmt", default="md", type=click.Choice(["md", "csv"]),
              help="Markdown tables, or one CSV row per run (every metric, CI and timing).")
@click.option("--bootstrap", type=int, default=1000, help="Bootstrap resamples for the 95% CI.")
@click.option("--html", type=click.Path(path_type=Path), default=None,
              help="Also write one self-contained HTML page (tables, confusion matrices, training curves, UA per "
              "fold, layer weights, paired differences) to this file.")
def report(runs: tuple[Path, ...], fmt: str, bootstrap: int, html: Path | None) -> None:
    """Paper-style table of one or more runs (paired tests when folds and seeds match)."""
    from sercache.runs.report import make_report

    click.echo(make_report(list(runs), fmt, n_boot=bootstrap, html=html))  # a damaged run: its error, named
    if html is not None:
        click.echo(f"wrote {html}", err=True)  # stderr: stdout stays the table (e.g. piped into a CSV file)


@click.command(context_settings=CONTEXT, epilog=examples("sercache demo", "sercache demo --out /tmp/demo --jobs 1"))
@click.option("--out", type=click.Path(path_type=Path), default=Path("sercache-demo"), help="Where to write everything.")
@click.option("--jobs", type=int, default=2, help="Folds trained in parallel.")
@click.option("--no-progress", is_flag=True, help="No progress bars or lines.")
def demo(out: Path, jobs: int, no_progress: bool) -> None:
    """Run extract -> train -> report offline on a synthetic IEMOCAP-layout corpus (about 35-40 s on an idle 2-core CPU)."""
    from sercache.demo import run_demo

    run_demo(out, jobs=jobs, progress=not no_progress, say=click.echo)
