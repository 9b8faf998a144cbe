"""The ``sercache`` command line: parse options, call one library function, print results.

Heavy modules (torch, transformers) are imported inside commands, so ``--help`` is instant.
Results go to stdout; progress bars and logs go to stderr.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sercache.cli_cluster import (
    CLUSTER_OPTION_NAMES,
    cache_status_command,
    cluster_options,
    cluster_request,
    run_on_cluster,
    sweep_command,
)
from sercache.cli_help import Sectioned, examples

if TYPE_CHECKING:
    from sercache.train_heads.config_file import TrainFile

CONTEXT = dict(show_default=True, help_option_names=["-h", "--help"], max_content_width=100)


def _setup_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("transformers", "urllib3", "filelock", "h5py", "matplotlib", "numba"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    if not verbose:  # transformers' "Loading weights" bars would interleave with sercache's own
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()


def _fail(exc: Exception, status: int = 2) -> None:
    """Print the error and exit: 2 for a refused request (the default), 1 for bad data."""
    # KeyError's str() quotes its message; print the message itself
    message = exc.args[0] if isinstance(exc, KeyError) and len(exc.args) == 1 else exc
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


def replayable_command(ctx: click.Context, skip: tuple[str, ...] = ("no_progress", "progress_every")) -> str:
    """The command as resolved, every setting spelled out (model ids included, defaults too).

    This is what a cache or run records, and what `cache verify` tells users to rerun: it must
    redo the same work whatever the defaults are then, and however the command was typed
    (``sercache -v extract ...``, or through the Python API).
    """
    words = ["sercache", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        two_way = getattr(param, "is_flag", False) and bool(getattr(param, "secondary_opts", None))
        if param.name in skip or value is None or (value is False and not two_way) or value == ():
            continue
        if isinstance(param, click.Argument):
            words += [_word(v) for v in (value if isinstance(value, tuple) else (value,))]
            continue
        flag = max(param.opts, key=len)
        if two_way:  # --x/--no-x
            words.append(max(param.opts, key=len) if value else max(param.secondary_opts, key=len))
        elif getattr(param, "is_flag", False):
            words.append(flag)
        else:
            for v in value if isinstance(value, tuple) else (value,):
                words += [flag, _word(v)]
    return " ".join(shlex.quote(w) for w in words)


def _word(value: object) -> str:
    return str(value.resolve()) if isinstance(value, Path) else str(value)  # paths: valid from any directory


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="sercache")
@click.option("-v", "--verbose", count=True, help="-v for progress logs, -vv for debug logs.")
def cli(verbose: int) -> None:
    """sercache: extract frozen encoder features once, then train SER fusion heads from the cache."""
    _setup_logging(verbose)


# --------------------------------------------------------------------------------------- extract
@cli.command(context_settings=CONTEXT, cls=Sectioned, sections=[
    ("Corpus", ["corpus", "out", "sessions", "shard"]),
    ("Streams and models", ["streams", "ssl_model", "asr_model", "text_model", "layers", "text_layers",
                            "stream_names", "n_mfcc", "dtype"]),
    ("Compute", ["device", "precision", "batch_seconds", "chunk_seconds", "chunk_overlap"]),
    ("Resuming and problems", ["overwrite", "strict", "flush_seconds", "no_progress"]),
    ("Cluster", CLUSTER_OPTION_NAMES)],
    epilog=examples(
        "sercache extract /data/IEMOCAP_full_release --corpus iemocap --out cache/iemocap --session 1",
        "sercache extract /data/emodb --corpus emodb --out cache/emodb --streams mfcc,logmel,egemaps,compare",
        "sercache extract /data/IEMOCAP_full_release --corpus iemocap --out cache/iemocap --streams ssl \\",
        "    --layers all --ssl-model /models/wavlm-large --stream-name ssl=wavlm_large",
        "sercache extract /data/MSP-Podcast --corpus csv --out cache/msp --executor slurm --shards 64 \\",
        "    --slurm-gpus-per-task 1 --slurm-time 4:00:00 --slurm-setup \"module load cuda\""))
@click.argument("root", type=click.Path(exists=True, path_type=Path))
@click.option("--corpus", required=True, type=click.Choice(["iemocap", "ravdess", "emodb", "cremad", "csv"]),
              help="Corpus layout of ROOT (csv: ROOT is a manifest .csv).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Cache directory (created if needed).")
@click.option("--session", "sessions", multiple=True, help="Only these sessions (repeat, or 1,3). Default: all.")
@click.option("--streams", default="ssl,asr,text_asr,text_gold,mfcc",
              help="Comma list from: ssl, asr, text_asr, text_gold, mfcc, logmel, spectrogram, egemaps, compare "
              "(egemaps and compare need the opensmile package).")
@click.option("--ssl-model", default="facebook/hubert-large-ls960-ft", help="HF id or local folder of the speech encoder.")
@click.option("--asr-model", default="facebook/wav2vec2-large-960h", help="HF id or local folder of a CTC ASR model.")
@click.option("--text-model", default="bert-base-uncased", help="HF id or local folder of a BERT-style text encoder.")
@click.option("--layers", default=None, help="SSL layers to store frame by frame: 24 | 6,12,24 | all. Default: last. "
              "Mean/std pooled statistics are stored for every layer regardless.")
@click.option("--text-layers", default=None, help="Text-encoder layers to store. Default: last.")
@click.option("--device", default="auto", help="cpu, cuda, cuda:N or auto.")
@click.option("--precision", default="auto", type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
              help="Compute precision (auto: fp16 on GPU, fp32 on CPU).")
@click.option("--dtype", default="float16", type=click.Choice(["float16", "float32"]), help="Storage dtype of model features.")
@click.option("--batch-seconds", type=float, default=None,
              help="Padded audio seconds per batch. Default per device: 0 (one utterance) on CPU, 200 on GPU.")
@click.option("--chunk-seconds", type=float, default=30.0, help="Utterances longer than this are encoded in chunks.")
@click.option("--chunk-overlap", type=float, default=5.0, help="Seconds of overlap between chunks.")
@click.option("--mfcc-coefficients", "n_mfcc", type=int, default=26, help="MFCC coefficients (GLAM uses 26).")
@click.option("--shard", default=None, help="i/N: extract only a deterministic 1/N slice (for job arrays).")
@click.option("--stream-name", "stream_names", multiple=True, help="KIND=NAME, e.g. ssl=wavlm_large (repeatable).")
@click.option("--overwrite", is_flag=True, help="Re-extract streams whose stored settings differ (or rebuild them).")
@click.option("--strict", is_flag=True, help="Stop at the first failing utterance, and exit non-zero on any error.")
@click.option("--flush-seconds", type=float, default=30.0,
              help="Checkpoint finished batches to disk at least this often (an interruption loses at most this).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@cluster_options
def extract(root: Path, corpus: str, out: Path, sessions: tuple[str, ...], streams: str, ssl_model: str,
            asr_model: str, text_model: str, layers: str | None, text_layers: str | None, device: str,
            precision: str, dtype: str, batch_seconds: float | None, chunk_seconds: float, chunk_overlap: float,
            n_mfcc: int, shard: str | None, stream_names: tuple[str, ...], overwrite: bool, strict: bool,
            flush_seconds: float, no_progress: bool, **cluster: Any) -> None:
    """Run frozen encoders over a corpus once and store their outputs in the cache OUT.

    Rerunning the same command after an interruption resumes where it stopped; rerunning it
    after success does nothing. Problems (unreadable audio, bad label lines...) are recorded
    in the cache and shown by `sercache cache info`. Exit status: 0 when anything was stored;
    1 when nothing could be extracted, or --strict met a failing utterance; 2 for a bad request
    (unknown option value, missing model, cache settings that differ without --overwrite).
    """
    from sercache.extract.options import (
        ExtractError,
        ExtractOptions,
        StrictStop,
        parse_sessions,
        parse_shard,
        parse_stream_names,
    )
    from sercache.extract.runner import run_extract
    from sercache.features.models import ModelError
    from sercache.store.errors import CacheError

    try:
        opts = ExtractOptions(
            root=root, corpus=corpus, out=out, sessions=parse_sessions(list(sessions)),
            streams=tuple(s.strip() for s in streams.split(",") if s.strip()),
            stream_names=parse_stream_names(list(stream_names)), ssl_model=ssl_model, asr_model=asr_model,
            text_model=text_model, layers=layers, text_layers=text_layers, device=device, precision=precision,
            dtype=dtype, batch_seconds=batch_seconds, chunk_seconds=chunk_seconds, chunk_overlap=chunk_overlap,
            n_mfcc=n_mfcc, shard=parse_shard(shard), overwrite=overwrite, strict=strict, progress=not no_progress,
            flush_seconds=flush_seconds,
            command=replayable_command(click.get_current_context()))
        scale_out = cluster_request(cluster)
        if scale_out is not None:
            return run_on_cluster(opts, scale_out, progress=not no_progress)
        report = run_extract(opts)
    except StrictStop as exc:  # bad data, not a bad request: exit 1 like any other failed extraction
        _fail(exc, status=1)
    except (ExtractError, ModelError, CacheError, FileNotFoundError, ValueError) as exc:
        _fail(exc)
    table = report.table()
    if len(table):
        table["seconds"] = table.seconds.map(lambda s: f"{s:.1f}")
        table["audio_seconds"] = table.audio_seconds.map(lambda s: f"{s:.1f}")
        click.echo(table.to_string(index=False))
    click.echo(f"cache: {out}  ({report.stored} utterance-streams stored, {report.failed} failed, "
               f"{report.manifest_problems} manifest problems; see `sercache cache info {out}`)")
    if report.stored == 0:
        click.echo("error: nothing could be extracted", err=True)
        sys.exit(1)
    if strict and (report.failed or report.manifest_errors):
        click.echo(f"--strict: {report.failed} utterance-stream(s) failed and {report.manifest_errors} manifest "
                   "error(s); see `sercache cache info`", err=True)
        sys.exit(1)


# --------------------------------------------------------------------------------------- cache
@cli.group(context_settings=CONTEXT)
def cache() -> None:
    """Inspect and check a feature cache."""


cache.add_command(cache_status_command)
cli.add_command(sweep_command)


@cache.command("info", context_settings=CONTEXT, epilog=examples("sercache cache info cache/iemocap",
                                                                  "sercache cache info cache/iemocap --json > info.json"))
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--errors", "max_errors", type=int, default=20, help="How many problem rows to list (-1: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def cache_info(path: Path, max_errors: int, as_json: bool) -> None:
    """Streams, layers, dims, counts, sizes, provenance, completeness, ASR WER and problems."""
    from sercache.store.errors import CacheError
    from sercache.store.info import cache_summary, format_summary

    try:
        summary = cache_summary(path)
    except CacheError as exc:
        _fail(exc)
    click.echo(json.dumps(summary, indent=1, default=str) if as_json else format_summary(summary, max_errors))


@cache.command("verify", context_settings=CONTEXT, epilog=examples("sercache cache verify cache/iemocap",
                                                                    "sercache cache verify cache/iemocap --stream ssl"))
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--stream", "streams", multiple=True, help="Only these streams (default: all).")
@click.option("--no-checksums", is_flag=True, help="Skip the per-utterance CRC-32 check (faster).")
def cache_verify(path: Path, streams: tuple[str, ...], no_checksums: bool) -> None:
    """Check offsets, frame counts against durations, NaN/inf, completeness and checksums.

    Exits 1 and lists each problem by shard, stream and utterance when anything is wrong.
    """
    from sercache.store.verify import verify_cache

    problems = verify_cache(path, list(streams) or None, checksums=not no_checksums)
    for p in problems:
        click.echo(str(p))
    if problems:
        click.echo(f"{len(problems)} problem(s) in {path}", err=True)
        sys.exit(1)
    click.echo(f"{path}: OK")


# --------------------------------------------------------------------------------------- heads, labels
def _head_names() -> list[str]:
    # kept import-light: the registry's names are listed in the help without importing torch
    return ["apcnn", "cmgi", "gate", "glam", "linear", "logreg", "mhcnn", "mlp", "mmer", "svm", "tmn", "wsum"]


@cli.command(context_settings=CONTEXT, epilog=examples("sercache heads", "sercache heads glam"))
@click.argument("name", required=False)
def heads(name: str | None) -> None:
    """List the heads, the streams they read, their hyperparameters and training defaults."""
    from sercache.train_heads.heads import HEADS, get_head

    try:
        chosen = [get_head(name)] if name else [HEADS[n] for n in sorted(HEADS)]
    except KeyError as exc:
        _fail(exc)
    for cls in chosen:
        click.echo(f"{cls.name}: {cls.summary}")
        click.echo(f"  reads: {', '.join(cls.roles)}"
                   + (f" (all stored layers of: {', '.join(cls.multi_layer_roles)})" if cls.multi_layer_roles else "")
                   + (f"; also uses: {', '.join(sorted(cls.needs))}" if cls.needs else ""))
        click.echo("  hyperparameters (--set KEY=VALUE): "
                   + ", ".join(f"{k}={v!r}" for k, v in cls.hyperparameters().items()))
        if cls.closed_form:
            click.echo("  training: fitted by scikit-learn on standardised utterance statistics; every combination of "
                       f"{', '.join(cls.grid_keys)} given as lists is scored on validation UA and the best one kept"
                       + ("; refit on training + validation by default" if cls.resolved_train_defaults().get("refit")
                          else ""))
        else:
            click.echo("  training defaults: " + ", ".join(f"{k}={v}" for k, v in cls.resolved_train_defaults().items()))


@cli.command(context_settings=CONTEXT, epilog=examples("sercache labels", "sercache labels iemocap4"))
@click.argument("preset", required=False)
def labels(preset: str | None) -> None:
    """List the label-map presets (corpus codes -> classes)."""
    from sercache.splits import DEFAULT_PRESET, PRESETS, get_preset

    try:
        chosen = [get_preset(preset)] if preset else [PRESETS[n] for n in PRESETS if n != "glam"]
    except KeyError as exc:
        _fail(exc)
    for p in chosen:
        default = [c for c, n in DEFAULT_PRESET.items() if n == p.name]
        click.echo(p.describe() + (f" [default for {default[0]}]" if default else ""))
    if not preset:
        click.echo("glam: alias of iemocap4-exc")


# --------------------------------------------------------------------------------------- train / eval / report
@cli.command(context_settings=CONTEXT, cls=Sectioned, sections=[
    ("Model", ["head", "settings"]),
    ("Data", ["label_preset", "subset", "text", "audio_stream", "text_stream", "mfcc_stream", "text_aug_stream",
              "layer", "text_layer"]),
    ("Folds and validation", ["fold", "protocol", "fold_file", "valid", "valid_speakers", "valid_fraction",
                              "holdout_session", "ratios", "split_seed"]),
    ("Optimisation (defaults: the head's, see `sercache heads`)", [
        "epochs", "lr", "batch_size", "patience", "weight_decay", "optimizer", "normalize", "refit", "seeds"]),
    ("Running and output", ["config_file", "out", "jobs", "device", "tensorboard", "progress_every", "no_progress"])],
    epilog=examples(
        "sercache train cache/iemocap --head gate --fold all --seeds 3 --jobs 2 --out runs/gate",
        "sercache train cache/emodb --head svm --audio-stream egemaps --out runs/svm        # lospk: EmoDB's default",
        "sercache train cache/ravdess --head logreg --audio-stream egemaps,mfcc --folds EmoBox/data/ravdess",
        "sercache train cache/iemocap --head tmn --set depth=6 --lr 3e-4 --out runs/tmn --tensorboard",
        "sercache train --config runs/gate/config.json --out runs/gate-again    # reproduce a run",
        "sercache train --config gate.yaml --lr 1e-4                   # a YAML file; options override it"))
@click.argument("cache_dir", metavar="CACHE", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--head", type=click.Choice(_head_names()), help="Head to train (see `sercache heads`); required, "
              "here or in --config.")
@click.option("--fold", default="all", help="all, a fold number (2 = Session 2 under loso) or fold names.")
@click.option("--protocol", default=None, type=click.Choice(["loso", "lospk", "session-holdout", "random",
                                                             "predefined"]),
              help="Fold protocol. Default: the corpus's speaker-independent one (loso over IEMOCAP's sessions; "
              "lospk for EmoDB, RAVDESS, CREMA-D; for CSV manifests loso when every utterance has a session, "
              "else lospk).")
@click.option("--folds", "fold_file", default=None, type=click.Path(exists=True, path_type=Path),
              help="Folds from a file instead of --protocol: a CSV of utt_id,fold (each fold value tested once) or "
              "utt_id,split (train/valid/test: one fold), or an EmoBox folder ROOT/fold_k/<corpus>_{train,test}"
              "_fold_k.jsonl. Validation default: --valid speakers when every utterance has a speaker.")
@click.option("--labels", "label_preset", default=None, help="Label preset (default per corpus; see `sercache labels`).")
@click.option("--subset", default="all", type=click.Choice(["all", "impro", "script"]),
              help="IEMOCAP's improvised or scripted dialogs only (filtered before folding).")
@click.option("--text", default="asr", type=click.Choice(["asr", "gold"]), help="Text source: text_asr or text_gold.")
@click.option("--audio-stream", default=None, help="Stream for the audio role (default ssl). Pooled heads (linear, mlp, "
              "svm, logreg) take several, comma-separated: --audio-stream mfcc,logmel,egemaps.")
@click.option("--text-stream", default=None, help="Stream for the text role (overrides --text).")
@click.option("--mfcc-stream", default=None, help="Stream for the mfcc role (default mfcc).")
@click.option("--text-aug-stream", default=None, help="Augmented-text stream for mmer --set augmented_text=true.")
@click.option("--layer", type=int, default=None, help="Audio-stream layer (default: the stream's last stored layer).")
@click.option("--text-layer", type=int, default=None, help="Text-stream layer.")
@click.option("--valid", default=None, type=click.Choice(["group", "fraction", "speakers"]),
              help="Validation: a held-out training session (group), a fraction of training utterances, or "
              "whole training speakers (speakers; see --valid-speakers).")
@click.option("--valid-speakers", type=click.IntRange(min=1), default=None,
              help="Training speakers held out for validation (implies --valid speakers). Default: ~20%.")
@click.option("--valid-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2,
              help="Share of training utterances for --valid fraction.")
@click.option("--session", "holdout_session", default="2", help="Test session for --protocol session-holdout.")
@click.option("--ratios", default="0.8,0.1,0.1", help="train,valid,test ratios for --protocol random.")
@click.option("--split-seed", type=int, default=0, help="Seed of the fold protocol (random splits, fractions).")
@click.option("--seeds", type=click.IntRange(min=1), default=3, help="Seeds per fold (0..N-1).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, help="Folds x seeds trained in parallel (joblib).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Maximum epochs. Default: the head's (`sercache heads`), as for every optimisation option.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Utterances per step (segments for glam, apcnn, mhcnn).")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Epochs without a better validation UA before stopping.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None, help="Weight decay.")
@click.option("--optimizer", default=None, type=click.Choice(["adam", "adamw", "sgd"]), help="Optimizer.")
@click.option("--set", "settings", multiple=True, help="Head hyperparameter KEY=VALUE (repeatable).")
@click.option("--normalize/--no-normalize", default=None,
              help="z-score features with training-fold statistics. Default per head (on; off for glam, whose "
              "reference feeds raw MFCCs).")
@click.option("--refit/--no-refit", default=None,
              help="After selecting on validation, retrain on training + validation with the selected epochs (or "
              "C/gamma) before testing. Default per head.")
@click.option("--progress-every", type=click.FloatRange(min=0), default=10.0,
              help="Seconds between progress lines inside a fold (epochs, batches, validation UA); 0: every one.")
@click.option("--no-progress", is_flag=True, help="No progress lines inside folds (fold results are still printed).")
@click.option("--device", default="auto", help="cpu, cuda or auto.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Run directory (default runs/HEAD-PROTOCOL-...).")
@click.option("--tensorboard", is_flag=True,
              help="Also write each fold and seed's curves (train loss, validation UA/WA, lr) as TensorBoard event "
              "files in RUN/<fold>/seed<k>/tensorboard: `tensorboard --logdir RUN`. Needs pip install "
              "'sercache[tensorboard]'.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Take the options from this YAML or JSON file (keys: the option names, e.g. lr: 3e-4, "
              "set: {dropout: 0.2}; train: {schedule: step} for settings without an option), or from a run's "
              "config.json to reproduce that run. Options given on the command line override the file.")
def train(**options: Any) -> None:
    """Train a head on every selected fold x seed from CACHE; rerun the same command to resume.

    Model selection uses the validation set only (carved from the training sessions or
    speakers); the test fold is evaluated once, with the selected checkpoint. --config takes the
    options from a YAML/JSON file; a run's own config.json replays that run.
    """
    from sercache.splits import ProtocolError
    from sercache.store.errors import CacheError
    from sercache.train_heads.config_file import load_train_file, request_from_options
    from sercache.train_heads.data import DataError
    from sercache.train_heads.run import RunError, run_training

    ctx = click.get_current_context()
    try:
        file, skip = None, ("no_progress", "progress_every", "config_file")
        if options["config_file"] is not None:
            file = _merge_config_file(ctx, options, load_train_file(options["config_file"]))
            if options["head"] and file.file_only(options["head"]):  # the command line alone cannot redo the run
                skip = ("no_progress", "progress_every")
        req = request_from_options(options, file, command=replayable_command(ctx, skip))
        run, results = run_training(req, progress=lambda m: click.echo(m, err=True))
    except (RunError, DataError, ProtocolError, CacheError, KeyError, ValueError) as exc:
        _fail(exc)
    failed = [r for r in results if not r["ok"]]
    click.echo(f"run: {run}  ({len(results) - len(failed)} fold/seed trained, {len(failed)} failed); "
               f"`sercache report {run}` for the table")
    if failed:
        for r in failed:
            click.echo(f"failed: {r['fold']} seed {r['seed']}: {r['error']}", err=True)
        sys.exit(1)


def _merge_config_file(ctx: click.Context, options: dict[str, Any], file: TrainFile) -> TrainFile:
    """Options not given on the command line take the --config file's values, checked as if typed."""
    from click.core import ParameterSource

    from sercache.train_heads.config_file import OPTION_KEYS, ConfigFileError

    given = {name: value for name, value in options.items()
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
    file = file.overridden_by(given)
    params = {p.name: p for p in ctx.command.params}
    for name, value in file.options.items():
        try:
            options[name] = params[name].type_cast_value(ctx, value)
        except click.BadParameter as exc:
            key = next(k for k, n in OPTION_KEYS.items() if n == name)
            raise ConfigFileError(f"{file.path}: {key}: {exc.message}") from None
    ctx.params.update(options)  # the recorded command spells out the file's values too
    return file


@cli.command("eval", context_settings=CONTEXT, epilog=examples(
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
    from sercache.store.errors import CacheError
    from sercache.train_heads.data import DataError
    from sercache.train_heads.evaluate import evaluate_run
    from sercache.train_heads.run import RunError
    from sercache.train_heads.trainer import TrainingError

    try:
        table = evaluate_run(run_dir, fold=fold, cache=other_cache, labels=label_preset, device=device)
    except (FileNotFoundError, DataError, CacheError, RunError, TrainingError, KeyError, ValueError) as exc:
        _fail(exc)
    click.echo(f"evaluated on {table.attrs['cache']} (classes: {', '.join(table.attrs['classes'])})")
    if table.attrs.get("dropped"):
        click.echo(f"{table.attrs['dropped']} utterances of that cache have classes outside the shared set "
                   "(or no label) and were left out")
    shown = table.copy()
    for m in ("wa", "ua", "macro_f1", "weighted_f1"):
        shown[m] = shown[m].map(lambda v: f"{100 * v:.2f}")
    click.echo(shown.to_string(index=False))
    click.echo(f"mean: WA {100 * table.wa.mean():.2f}  UA {100 * table.ua.mean():.2f}  "
               f"macro-F1 {100 * table.macro_f1.mean():.2f}")
    if "max_logit_diff_vs_record" in table:  # the run's own test folds: do the checkpoints give the records?
        worst = float(table.max_logit_diff_vs_record.max())
        verdict = ("the checkpoints reproduce the recorded test predictions" if worst <= 1e-3 else
                   "WARNING: the checkpoints do NOT reproduce the recorded test predictions (another cache state, "
                   "device or library version?)")
        click.echo(f"{verdict} (largest logit difference {worst:.2g})")
    name = "eval.csv" if other_cache is None else f"eval-{Path(other_cache).name}.csv"
    table.to_csv(run_dir / name, index=False)
    click.echo(f"wrote {run_dir / name}")


@cli.command(context_settings=CONTEXT, epilog=examples(
    "sercache predict runs/gate clips/ --out predictions.csv      # every fold x seed's heads, softmax averaged",
    "sercache predict runs/gate interview.wav --window 3 --hop 1 --out over_time.csv",
    "sercache predict runs/gate-gold manifest.csv --fold 1        # CSV: path,transcript (gold-text runs)"))
@click.argument("run_dir", metavar="RUN", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", metavar="INPUT...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("predictions.csv"),
              help="CSV to write: path, (start_s, end_s,) prediction, prob_<class>... (and V/A where regressed).")
@click.option("--fold", default=None, help="Only this fold's heads (number or name). Default: every fold and seed.")
@click.option("--window", type=float, default=None, help="Seconds per window: one row per window (emotion over time).")
@click.option("--hop", type=float, default=None, help="Seconds between window starts (default: --window).")
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
    from sercache.features.models import ModelError
    from sercache.store.errors import CacheError
    from sercache.train_heads.data import DataError
    from sercache.train_heads.predict import PredictError, parse_models, predict_run
    from sercache.train_heads.run import RunError
    from sercache.train_heads.trainer import TrainingError

    try:
        table, written = predict_run(run_dir, list(inputs), out=out, fold=fold, window=window, hop=hop,
                                     cache=cache_dir, device=device, models=parse_models(list(model_dirs)),
                                     allow_different_weights=allow_different_weights, progress=not no_progress)
    except (PredictError, ModelError, CacheError, DataError, RunError, TrainingError, FileNotFoundError, KeyError,
            ValueError) as exc:
        _fail(exc)
    shown = table.drop(columns=[c for c in table if c.startswith("prob_")]).assign(
        probability=table.filter(like="prob_").max(axis=1).map(lambda p: f"{p:.3f}"))
    click.echo(shown.head(20).to_string(index=False) + (f"\n... ({len(table) - 20} more rows)" if len(table) > 20 else ""))
    counts = ", ".join(f"{c} {n}" for c, n in table.prediction.value_counts().items())
    click.echo(f"wrote {written} ({len(table)} rows: {counts})")


@cli.command(context_settings=CONTEXT, epilog=examples(
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
    from sercache.train_heads.report import make_report
    from sercache.train_heads.trainer import TrainingError

    try:
        click.echo(make_report(list(runs), fmt, n_boot=bootstrap, html=html))
    except (FileNotFoundError, ValueError, TrainingError) as exc:  # a damaged or crafted run directory: name it
        _fail(exc)
    if html is not None:
        click.echo(f"wrote {html}", err=True)  # stderr: stdout stays the table (e.g. piped into a CSV file)


@cli.command(context_settings=CONTEXT, epilog=examples("sercache demo", "sercache demo --out /tmp/demo --jobs 1"))
@click.option("--out", type=click.Path(path_type=Path), default=Path("sercache-demo"), help="Where to write everything.")
@click.option("--jobs", type=int, default=2, help="Folds trained in parallel.")
@click.option("--no-progress", is_flag=True, help="No progress bars or lines.")
def demo(out: Path, jobs: int, no_progress: bool) -> None:
    """Run extract -> train -> report offline on a synthetic IEMOCAP-layout corpus (about 35 s on a 2-core CPU)."""
    from sercache.demo import run_demo

    run_demo(out, jobs=jobs, progress=not no_progress, say=click.echo)


if __name__ == "__main__":
    cli()
