"""``sercache train``: train a head on every fold x seed of a cache."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sercache.cli.catalog import head_names
from sercache.cli.common import CONTEXT, MAX_INT, FiniteFloat, replayable_command, stopped_before_work
from sercache.cli.folds import protocol_choice_options, protocol_option_names, protocol_setting_options
from sercache.cli.help import Sectioned, examples
from sercache.head_catalog import stream_roles
from sercache.training.precision import PRECISIONS

if TYPE_CHECKING:
    from collections.abc import Callable

    from sercache.training.config_file import TrainFile


def stream_role_options(command: Callable[..., None]) -> Callable[..., None]:
    """One --ROLE-stream option per stream role the head modules declare (their STREAM_ROLES), in that order."""
    for role in reversed(stream_roles().values()):
        command = click.option(role.option, role.param, default=None, help=role.help)(command)
    return command


@click.command(context_settings=CONTEXT, cls=Sectioned, sections=[
    ("Model", ["head", "settings"]),
    ("Data", ["label_preset", "subset", "text", *[r.param for r in stream_roles().values()], "layer", "text_layer"]),
    ("Folds and validation", ["fold", *protocol_option_names(), "split_seed"]),
    ("Optimisation (defaults: the head's, see `sercache heads`)", [
        "epochs", "lr", "batch_size", "patience", "weight_decay", "optimizer", "precision", "normalize", "refit", "seeds"]),
    ("Running and output", ["config_file", "out", "jobs", "device", "tensorboard", "progress_every", "no_progress"])],
    epilog=examples(
        "sercache train cache/iemocap --head gate --fold all --seeds 3 --jobs 2 --out runs/gate",
        "sercache train cache/emodb --head svm --audio-stream egemaps --out runs/svm        # lospk: EmoDB's default",
        "sercache train cache/ravdess --head logreg --audio-stream egemaps,mfcc --folds EmoBox/data/ravdess",
        "sercache train cache/emodb --head logreg --audio-stream whisper,egemaps --layer select --out runs/lr-sel",
        "sercache train cache/iemocap --head tmn --set depth=6 --lr 3e-4 --out runs/tmn --tensorboard",
        "sercache train --config runs/gate/config.json --out runs/gate-again    # reproduce a run",
        "sercache train --config gate.yaml --lr 1e-4                   # a YAML file; options override it"))
@click.argument("cache_dir", metavar="CACHE", required=False,
                type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--head", type=click.Choice(head_names()), help="Head to train (see `sercache heads`); required, "
              "here or in --config.")
@click.option("--fold", default="all", help="all, a fold number (2 = Session 2 under loso) or fold names.")
@protocol_choice_options()
@click.option("--labels", "label_preset", default=None, help="Label preset (default per corpus; see `sercache labels`).")
@click.option("--subset", default="all", type=click.Choice(["all", "impro", "script"]),
              help="IEMOCAP's improvised or scripted dialogs only (filtered before folding).")
@click.option("--text", default=None, type=click.Choice(["asr", "gold"]),
              help="Text source: text_asr or text_gold. Default: the source of --text-stream, else asr.")
@stream_role_options
@click.option("--layer", default=None, metavar="LAYER",
              help="Audio-stream layer (default: the stream's last stored layer). Pooled heads (linear, mlp, svm, "
              "logreg) also take several, their statistics concatenated (2,3,4), all, or select: each single layer "
              "and all of them tried, one chosen per fold on the validation speakers. gate, cmgi, tmn and mmer "
              "take several or all as a learned softmax mix of those layers' frames.")
@click.option("--text-layer", default=None, metavar="LAYER", help="Text-stream layer (pooled heads: as --layer).")
@protocol_setting_options()
@click.option("--split-seed", type=click.IntRange(0, 2**32 - 1), default=0,
              help="Seed of the fold protocol (random splits, fractions).")
@click.option("--seeds", type=click.IntRange(1, MAX_INT), default=None,
              help="Seeds per fold (0..N-1). Default: 3, or 1 for deterministic heads (svm, logreg), whose every "
              "seed gives the same result.")
@click.option("--jobs", type=click.IntRange(1, MAX_INT), default=1, help="Folds x seeds trained in parallel (joblib).")
@click.option("--epochs", type=click.IntRange(1, MAX_INT), default=None,
              help="Maximum epochs. Default: the head's (`sercache heads`), as for every optimisation option.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=None, help="Learning rate.")
@click.option("--batch-size", type=click.IntRange(1, MAX_INT), default=None,
              help="Utterances per step (segments for glam, apcnn, mhcnn).")
@click.option("--patience", type=click.IntRange(1, MAX_INT), default=None,
              help="Epochs without a better validation UA before stopping.")
@click.option("--weight-decay", type=FiniteFloat(min=0), default=None, help="Weight decay.")
@click.option("--optimizer", default=None, type=click.Choice(["adam", "adamw", "sgd"]), help="Optimizer.")
@click.option("--precision", default=None, type=click.Choice(PRECISIONS),
              help="Autocast precision of the forward passes: bf16 trains tmn and mmer about 2x faster on a CPU with "
              "AMX/AVX-512 BF16 or an Ampere+ GPU; fp16 (loss-scaled) for GPUs without bf16. Weights stay fp32; "
              "eval and predict reuse it.  [default: fp32]")
@click.option("--set", "settings", multiple=True, help="Head hyperparameter KEY=VALUE (repeatable).")
@click.option("--normalize/--no-normalize", default=None,
              help="z-score features with training-fold statistics. Default per head (on; off for glam, whose "
              "reference feeds raw MFCCs).")
@click.option("--refit/--no-refit", default=None,
              help="After selecting on validation, retrain on training + validation with the selected epochs (or "
              "C/gamma) before testing. Default per head.")
@click.option("--progress-every", type=FiniteFloat(min=0), default=10.0,
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
    try:  # torch and the heads: seconds, during which Ctrl-C must not end in a bare "Aborted!"
        from sercache.interrupts import remembered_interrupts
        from sercache.training.config_file import load_train_file, request_from_options
        from sercache.training.outcome import finished_results, training_outcome
        from sercache.training.run import TrainingInterrupted, run_training
    except KeyboardInterrupt:
        stopped_before_work()

    ctx = click.get_current_context()
    try:
        file, skip = None, ("no_progress", "progress_every", "config_file")
        if options["config_file"] is not None:
            file = _merge_config_file(ctx, options, load_train_file(options["config_file"]))
            if options["head"] and file.file_only(options["head"]):  # the command line alone cannot redo the run
                skip = ("no_progress", "progress_every")
        req = request_from_options(options, file, command=replayable_command(ctx, skip))
        with remembered_interrupts():
            run, results = run_training(req, progress=lambda m: click.echo(m, err=True))
    except TrainingInterrupted as stop:
        click.echo(f"\ninterrupted. kept {stop.kept} of {stop.total} fold/seed tasks in {stop.run} (finished ones "
                   "are not trained again); rerun the same command to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:  # while planning: no task had started
        stopped_before_work()
    outcome = training_outcome(run, results, n_classes=_n_classes(run), finished=finished_results(run))
    if outcome.scores:
        click.echo(outcome.scores)
    click.echo(outcome.summary)
    for line in outcome.failures:
        click.echo(line, err=True)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _n_classes(run: Path) -> int | None:
    from sercache.training import run_layout
    from sercache.training.run_config import RunConfig

    try:
        return len(RunConfig.load(run_layout.config_path(run)).labels.classes)
    except (OSError, ValueError):
        return None


def _merge_config_file(ctx: click.Context, options: dict[str, Any], file: TrainFile) -> TrainFile:
    """Options not given on the command line take the --config file's values, checked as if typed."""
    from click.core import ParameterSource

    from sercache.training.config_file import OPTION_KEYS, ConfigFileError, short

    given = {name: value for name, value in options.items()
             if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP, None)}
    file = file.overridden_by(given)
    params = {p.name: p for p in ctx.command.params}
    for name, value in file.options.items():
        key = next(k for k, n in OPTION_KEYS.items() if n == name)
        problem = _file_value_problem(params[name], value)
        if problem:
            raise ConfigFileError(f"{file.path}: {key}: {problem}, found {short(value)}")
        try:
            options[name] = params[name].type_cast_value(ctx, value)
        except click.BadParameter as exc:
            raise ConfigFileError(f"{file.path}: {key}: {exc.message}") from None
        except OverflowError:  # float() of an integer beyond the float range
            raise ConfigFileError(f"{file.path}: {key}: {short(value)} is too large for a number") from None
    ctx.params.update(options)  # the recorded command spells out the file's values too
    return file


def _file_value_problem(param: click.Parameter, value: Any) -> str:
    """Why a file's value is not one the option takes; "" if it is.

    click converts what it is given (true -> 1, 2.5 -> 2, .inf -> OverflowError): a typed YAML or
    JSON value must already be of the option's kind. Text is converted as if typed.
    """
    if getattr(param, "multiple", False) or value is None:  # --set: KEY=VALUE words, made by the file reader
        return ""
    if getattr(param, "is_flag", False):
        return "" if isinstance(value, bool) else "expected true or false"
    if isinstance(value, bool):
        return f"expected a value for {max(param.opts, key=len)}, not true or false"
    if isinstance(param.type, click.types.IntParamType) and not isinstance(value, (int, str)):
        return "expected a whole number"
    if not isinstance(value, (int, float, str)):
        return f"expected one value for {max(param.opts, key=len)}"
    return ""
