"""``sercache train``: folds x seeds of one head on one cache, in parallel, resumable.

The run directory (see :mod:`run_layout`) holds ``config.json`` (a :class:`RunConfig`: everything
needed to rebuild the experiment), ``folds.json`` (utterance ids per fold) and ``<fold>/seed<k>/``
records. A fold/seed whose ``DONE`` marker exists is skipped, so an interrupted ``--fold all``
resumes where it stopped, and rerunning into a directory made with other settings is refused.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sercache import __version__
from sercache.cluster_engines import local_pool
from sercache.errors import SercacheError
from sercache.heads import get_head
from sercache.heads.base import Head
from sercache.splits import (
    DEFAULT_PRESET,
    Fold,
    check_fold_names,
    complete_options,
    default_protocol,
    filter_subset,
    get_preset,
    get_protocol,
    load_folds,
    make_folds,
    save_folds,
)
from sercache.store import open_cache
from sercache.store.atomic import write_text_atomic
from sercache.store.lock import ExclusiveLock
from sercache.store.reader import FeatureStore
from sercache.training import run_layout
from sercache.training.data import label_summary, labelled_utterances
from sercache.training.roles import check_roles_named, named_role_options, resolve_roles
from sercache.training.run_config import (  # noqa: F401 - RESUMABLE_KEYS, describe_change: moved, kept here
    RESUMABLE_KEYS,
    RunConfig,
    RunLabels,
    describe_change,
    settings_changes,
)
from sercache.training.run_layout import DONE, FAILED, task_dir  # noqa: F401 - FAILED: kept here
from sercache.training.targets import target_notes
from sercache.training.task import describe_result, result_warnings, train_task
from sercache.training.tblog import require_tensorboard
from sercache.training.train_config import TrainConfig

RUN_LOCK = run_layout.LOCK_FILE


class RunError(SercacheError, ValueError):
    """A training request that cannot be carried out (named option and the fix)."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C while training ``run``: ``kept`` of its ``total`` selected fold x seed tasks are finished and kept."""

    def __init__(self, run: Path, kept: int, total: int) -> None:
        super().__init__(f"{run}: kept {kept} of {total} fold/seed tasks")
        self.run, self.kept, self.total = run, kept, total


@dataclass
class TrainRequest:
    """What ``sercache train`` takes (see the CLI help)."""

    cache: Path
    head: str
    out: Path | None = None
    fold: str = "all"
    protocol: str | None = None  # None: the corpus's speaker-independent default (loso for IEMOCAP, lospk else)
    protocol_options: dict[str, Any] = field(default_factory=dict)
    #: An EmoBox fold folder or a CSV of utt_id,fold / utt_id,split; replaces ``protocol`` (config: "folds").
    folds: Path | None = None
    labels: str | None = None
    subset: str = "all"
    text: str | None = None  # asr | gold; None: the text stream's source (its provenance), else asr
    streams: dict[str, str] = field(default_factory=dict)
    #: role -> --layer/--text-layer: None, a layer, several ("2,3,4" or a list), "all" or "select" (see roles.py)
    layers: dict[str, Any] = field(default_factory=dict)
    seeds: int | None = None  # None: 3, or 1 for a deterministic head (svm, logreg): more seeds give the same numbers
    jobs: int = 1
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    split_seed: int = 0
    command: str = ""
    #: Seconds between progress lines inside a fold (0: every epoch and batch; None: none). Not part of the run's config.
    progress_every: float | None = 10.0
    #: Also write each fold/seed's curves as TensorBoard event files (``<fold>/seed<k>/tensorboard/``).
    tensorboard: bool = False
    #: The config.json of a run this request replays (``--config RUN/config.json``): differences are shown.
    recorded: dict[str, Any] | None = None


def is_interrupt(exc: BaseException) -> bool:
    """Ctrl-C, also when a C extension re-raised it as another error (h5py: a SystemError caused by it)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return device


def text_source(req: TrainRequest, cache: FeatureStore) -> str:
    """``asr`` or ``gold``: --text, which a --text-stream must not contradict; without it, that stream's source."""
    if req.text not in (None, "asr", "gold"):
        raise RunError(f"--text {req.text!r}: use asr or gold")
    stream = req.streams.get("text")
    found = cache.streams[stream].provenance.get("identity", {}).get("source") if stream in cache.streams else None
    if req.text is not None and found in ("asr", "gold") and found != req.text:
        raise RunError(f"--text {req.text} and --text-stream {stream} contradict each other: stream {stream!r} "
                       f"encodes the {found} transcript; give --text {found}, or a --text-stream of {req.text} "
                       f"transcripts (text_{req.text})")
    return req.text or (found if found in ("asr", "gold") else "asr")


def roles_enabled_by(head_cls: type[Head], hyper: dict[str, Any]) -> dict[str, str]:
    """role -> the ``--set KEY=true`` that makes ``head_cls`` read it (pooled heads' with_text, mmer's augmented_text)."""
    reads = set(head_cls.required_roles(hyper))
    return {role: f"--set {key}=true" for key, value in hyper.items() if value is False
            for role in head_cls.required_roles({**hyper, key: True}) if role not in reads}


#: The optimiser loop's settings (train options): a closed-form head (svm, logreg) has no loop to use them
OPTIMISER_SETTINGS = ("epochs", "lr", "batch_size", "patience", "weight_decay", "optimizer", "precision")


def head_roles(head: str, hyperparameters: dict[str, Any]) -> tuple[str, ...]:
    """The roles ``head`` reads with its defaults and ``hyperparameters`` over them."""
    head_cls = get_head(head)
    return head_cls.required_roles({**head_cls.hyperparameters(), **hyperparameters})


def refuse_optimiser_settings(head: str, head_cls: type[Head], train: dict[str, Any]) -> None:
    """Refuse optimiser settings for a closed-form head: ignored, they would say the run trained as it did not."""
    given = [f"--{k.replace('_', '-')} {train[k]}" for k in OPTIMISER_SETTINGS if train.get(k) is not None]
    if head_cls.closed_form and given:
        who = f"heads {head} are" if " " in head else f"head {head!r} is"  # sweep: "logreg and svm"
        raise RunError(f"{' and '.join(given)}: {who} fitted in closed form (the regularisation chosen on the "
                       "validation set), with no optimiser to take them; drop them (closed-form heads take "
                       "--normalize/--no-normalize and --refit/--no-refit)")


def plan_run(req: TrainRequest) -> tuple[RunConfig, list[Fold], FeatureStore]:
    """Resolve the head, streams, labels and folds; everything is checked before training starts."""
    if (req.seeds is not None and req.seeds < 1) or req.jobs < 1:
        raise RunError(f"seeds={req.seeds}, jobs={req.jobs}: both must be at least 1")
    if req.tensorboard:
        require_tensorboard()
    cache = open_cache(req.cache)
    head_cls = get_head(req.head)
    seeds = seeds_for(head_cls, req.seeds)
    valid = head_cls.hyperparameters()
    unknown = sorted(set(req.hyperparameters) - set(valid))
    if unknown:
        raise RunError(f"head {req.head!r} has no hyperparameter {unknown[0]!r}; its hyperparameters: "
                       + ", ".join(f"{k}={v!r}" for k, v in valid.items()))
    try:
        head_cls.check_hyperparameters(req.hyperparameters)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    hyper = {**valid, **req.hyperparameters}
    refuse_optimiser_settings(req.head, head_cls, req.train)
    check_roles_named(req.head, head_cls.required_roles(hyper), named_role_options(req.streams, req.layers, req.text),
                      enabled_by=roles_enabled_by(head_cls, hyper))
    streams = dict(req.streams)
    text = text_source(req, cache)
    streams.setdefault("text", f"text_{text}")
    roles = resolve_roles(cache, head_cls.required_roles(hyper), head_cls.multi_layer_roles, streams, req.layers,
                          pooled=head_cls.pooled_input, mixes=head_cls.mixes_layers)
    for role in head_cls.multi_layer_roles:
        if role in roles and "n_layers" in hyper:
            hyper["n_layers"] = len(roles[role].layers)
    if "frame_rate" in hyper and "frame_rate" not in req.hyperparameters:  # segment heads: windows in seconds
        rate = cache.streams[roles[head_cls.roles[0]].stream].frame_rate
        if rate:
            hyper["frame_rate"] = float(rate)
    corpus = str(cache.utterances.corpus.iloc[0]) if len(cache.utterances) else ""
    preset = get_preset(req.labels or DEFAULT_PRESET.get(corpus, "iemocap4"))
    table = labelled_utterances(cache, preset, roles)
    protocol, extra = req.protocol, {}
    if req.folds is not None:
        if not (reader := get_protocol(req.protocol or "folds")).fold_files:  # folds (any file), emobox...
            raise RunError(f"--folds {req.folds} replaces --protocol; drop --protocol {req.protocol}")
        asked = complete_options(reader.name, req.protocol_options)
        found = reader.function()(filter_subset(table, req.subset), req.folds, cache_ids=list(cache.utterances.utt_id),
                                  seed=req.split_seed, **asked)
        # path + SHA-1 of the files in protocol_options: resuming with other fold files is refused
        folds, protocol, options = found.folds, reader.name, {**asked, **found.options}
        extra = {"fold_warnings": found.warnings}
    else:
        if protocol is None:
            protocol = default_protocol(corpus, table)
            extra = {"protocol_default": f"{protocol}, the default for {corpus or 'this'} caches"}
        # every default spelled out, as the CLI records it: a run made through the API replays exactly
        options = complete_options(protocol, req.protocol_options)
        folds = make_folds(table, protocol, subset=req.subset, seed=req.split_seed, **options)
    check_fold_names(folds)  # a fold becomes a directory of the run: refused here, before the run writes anything
    train_cfg = TrainConfig.for_head(req.head, req.train)
    encoders = {role: {"stream": spec.stream, "layers": spec.layers,
                       **{k: v for stream in spec.streams for k, v in
                          cache.streams[stream].provenance.get("identity", {}).items()
                          if k in ("kind", "model", "source", "weights", "dtype", "precision", "synthetic")}}
                for role, spec in roles.items()}
    if head_cls.pooled_input:  # several streams per role: each one's identity, in order
        for role, spec in roles.items():
            encoders[role]["sources"] = [{"stream": st, "layer": lay, **{
                k: v for k, v in cache.streams[st].provenance.get("identity", {}).items()
                if k in ("kind", "model", "weights", "feature_set", "dtype")}} for st, lay in zip(spec.streams, spec.layers)]
    config = RunConfig(
        cache=str(Path(req.cache).resolve()), head=req.head, hyperparameters=hyper, train=train_cfg, roles=roles,
        encoders=encoders, labels=RunLabels(preset.name, list(preset.classes), preset.describe()),
        protocol=protocol, protocol_options=options, **extra, subset=req.subset, split_seed=req.split_seed,
        text_source=text if "text" in roles else None,
        speaker_independent=all(f.speaker_independent for f in folds), n_utterances=len(table),
        dropped_utterances=int(len(cache.utterances) - len(table)), seeds=list(range(seeds)),
        fold_selection=req.fold, jobs=req.jobs, tensorboard=req.tensorboard,
        threads_per_task=max(1, (os.cpu_count() or 1) // req.jobs), device=req.device, sercache_version=__version__,
        command=req.command, created=time.strftime("%Y-%m-%d %H:%M:%S"))
    return config, select_folds(folds, req.fold), cache


def seeds_for(head_cls: type[Head], requested: int | None) -> int:
    """Seeds per fold: the requested number, else 1 for a deterministic head and 3 for the others."""
    return requested if requested is not None else 1 if head_cls.deterministic else 3


def seeds_note(head: str, requested: int | None) -> str | None:
    """Why ``--seeds N`` > 1 is pointless on a deterministic head (None when it is not)."""
    if requested is None or requested < 2 or not get_head(head).deterministic:
        return None
    return (f"note: {head} is deterministic (fitted in closed form by scikit-learn; the seed changes nothing): "
            f"--seeds {requested} trains {requested} identical copies of each fold. Leave --seeds out (1 seed) "
            "to train each fold once")


def missing_targets(cache: FeatureStore, config: RunConfig) -> list[str]:
    """What of its extra targets (votes, valence/arousal, transcripts) the head finds missing, and what it does instead."""
    needs = get_head(config.head).needs
    if not needs:
        return []
    return target_notes(labelled_utterances(cache, get_preset(config.labels.preset), config.roles), needs)


def select_folds(folds: list[Fold], spec: str) -> list[Fold]:
    """``all``, a 1-based fold number (``2``: the second fold, Session 2 under loso), or fold names."""
    if spec == "all":
        return folds
    chosen = []
    for item in str(spec).split(","):
        item = item.strip()
        if item.isdigit() and 1 <= int(item) <= len(folds):
            chosen.append(folds[int(item) - 1])
        else:
            match = [f for f in folds if f.name == item]
            if not match:
                raise RunError(f"--fold {item!r}: use all, 1-{len(folds)} or a fold name "
                               f"({', '.join(f.name for f in folds)})")
            chosen += match
    return chosen


def default_run_dir(req: TrainRequest, protocol: str) -> Path:
    parts = [req.head, protocol] + ([req.subset] if req.subset != "all" else []) + [req.labels or "labels"]
    return Path("runs") / "-".join(parts)


def with_protocol_defaults(config: RunConfig) -> RunConfig:
    """A stored config with its protocol's defaults spelled out (runs made through the API before they were)."""
    return replace(config, protocol_options=complete_options(config.protocol, config.protocol_options or {}))


def prepare_run_dir(run: Path, config: RunConfig, folds: list[Fold]) -> RunConfig:
    """Create, or resume into, ``run``; refuse one made with other settings. Returns the run's config."""
    cfg_path, folds_path = run_layout.config_path(run), run_layout.folds_path(run)
    if cfg_path.exists():
        old = with_protocol_defaults(RunConfig.load(cfg_path, "Delete the run directory and train again, or give a "
                                                    "new --out."))
        changes = settings_changes(old, config)
        if changes:
            raise RunError(f"{run} holds a run made with other settings: {changes}. Give a new --out, or delete that "
                           "folder to start over")
        known = {f.name for f in load_folds(folds_path)}
        new = [f for f in folds if f.name not in known]
        if new:
            save_folds(load_folds(folds_path) + new, folds_path)
        config = replace(old, seeds=sorted(set(old.seeds) | set(config.seeds)), command=config.command,
                         tensorboard=config.tensorboard)
    run.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cfg_path, config.to_json())  # a full disk never leaves half a file
    if not folds_path.exists():
        save_folds(folds, folds_path)
    return config


def run_training(req: TrainRequest, progress: Any = print) -> tuple[Path, list[dict[str, Any]]]:
    """Plan, check, then train every selected fold x seed not yet done. Returns (run dir, results)."""
    from sercache.features.streams import stream_checks
    from sercache.store.verify import verify_cache

    config, folds, cache = plan_run(req)
    for warning in config.fold_warnings or []:  # before any training, so a bad fold file is seen early
        progress(f"warning: {warning}")
    for note in missing_targets(cache, config):  # e.g. tmn on a corpus without valence/arousal
        progress(f"{config.head}: {note}")
    progress(label_summary(cache, get_preset(config.labels.preset), config.roles))
    if (note := seeds_note(config.head, req.seeds)) is not None:
        progress(note)
    streams = sorted(config.streams)
    # Every byte training will read is checked once here (checksums, NaN/inf, completeness), so a
    # damaged cache is refused before any fold starts, with the shards and utterances to re-extract.
    problems = verify_cache(req.cache, streams, checksums=True, values=True, checks=stream_checks())
    cache.close()
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:10])
        raise RunError(f"{req.cache} fails verification for stream(s) {', '.join(streams)}:\n  {listing}\n"
                       "Repair it first: re-extract the named shards/utterances (the commands are listed above), "
                       "then rerun `sercache cache verify`.")
    if config.protocol_default is not None:
        progress(f"protocol: {config.protocol_default} (--protocol to choose another)")
    if req.recorded is not None:
        recorded = dict(req.recorded, protocol_options=complete_options(str(req.recorded.get("protocol")),
                                                                         req.recorded.get("protocol_options") or {}))
        changes = settings_changes(recorded, config)
        progress("--config: replaying a recorded run " + (f"with these differences: {changes}" if changes
                                                           else "with the same settings"))
    run = Path(req.out) if req.out else default_run_dir(req, config.protocol)
    device = resolve_device(req.device)  # the last refusal: a refused run writes nothing, not even its lock
    # One `sercache train` per run directory: a second one would train the same tasks and interleave logs.
    with ExclusiveLock(run_layout.lock_path(run), f"{run} is being trained into by another `sercache train` ({{holder}}). Wait "
                       "for it to finish, or give a new --out."):
        return _train_locked(req, run, config, folds, device, progress)


def _train_locked(req: TrainRequest, run: Path, config: RunConfig, folds: list[Fold], device: str,
                  progress: Any) -> tuple[Path, list[dict[str, Any]]]:
    from joblib import delayed

    config = prepare_run_dir(run, config, folds)
    todo = [(f, s) for f in folds for s in config.seeds if not run_layout.is_done(task_dir(run, f.name, s))]
    skipped = len(folds) * len(config.seeds) - len(todo)
    if skipped:
        progress(f"{run}: {skipped} fold/seed result(s) already done, {len(todo)} to train")
    jobs = max(1, min(req.jobs, len(todo))) if todo else 1
    # fixed when the run was made (runs from before that: from --jobs), so a resume gives identical numbers
    threads = int(config.threads_per_task or max(1, (os.cpu_count() or 1) // req.jobs))
    results = []
    if todo:
        progress(f"{run}: training {config.head} on {len(todo)} fold/seed task(s), {jobs} at a time")
    tasks = (delayed(train_task)(str(run), asdict(f), s, config, device, threads, req.progress_every, os.getpid())
             for f, s in todo)
    try:
        # each worker dies with this process, even before its first task (see exit_with_parent)
        for res in local_pool(jobs)(tasks):
            results.append(res)
            progress(describe_result(config, res))
    except BaseException as exc:  # a task's records are written by rename, DONE last: each is done or to redo
        if not is_interrupt(exc):
            raise
        kept = sum(run_layout.is_done(task_dir(run, f.name, s)) for f in folds for s in config.seeds)
        raise TrainingInterrupted(run, kept, len(folds) * len(config.seeds)) from None
    for warning in result_warnings(results, len(config.labels.classes)):
        progress(warning)
    return run, results
