"""``sercache train``: folds x seeds of one head on one cache, in parallel, resumable.

The run directory holds ``config.json`` (everything needed to rebuild the experiment),
``folds.json`` (utterance ids per fold) and ``<fold>/seed<k>/`` records. A fold/seed whose
``DONE`` marker exists is skipped, so an interrupted ``--fold all`` resumes where it stopped,
and rerunning into a directory made with other settings is refused.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sercache import __version__
from sercache.splits import (
    DEFAULT_PRESET,
    Fold,
    default_protocol,
    filter_subset,
    get_preset,
    get_protocol,
    load_folds,
    make_folds,
    save_folds,
)
from sercache.store import open_cache
from sercache.store.atomic import read_json, write_text_atomic
from sercache.store.errors import CacheError
from sercache.store.lock import ExclusiveLock
from sercache.store.reader import FeatureStore
from sercache.train_heads.data import labelled_utterances, recorded_roles, resolve_roles
from sercache.train_heads.heads import get_head
from sercache.train_heads.pooled import load_fold
from sercache.train_heads.tblog import require_tensorboard
from sercache.train_heads.trainer import DONE, TrainConfig, TrainingError, train_fold

log = logging.getLogger(__name__)

FAILED = "FAILED"
#: Keys of config.json that may differ when resuming a run (everything else must match).
#: tensorboard: logging only; fold_warnings: follow from the fold files, whose SHA-1s protocol_options holds.
RESUMABLE_KEYS = ("jobs", "command", "created", "fold_selection", "device", "seeds", "threads_per_task",
                  "protocol_default", "tensorboard", "fold_warnings")
RUN_LOCK = ".lock"


class RunError(ValueError):
    """A training request that cannot be carried out (named option and the fix)."""


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
    text: str = "asr"
    streams: dict[str, str] = field(default_factory=dict)
    layers: dict[str, int | None] = field(default_factory=dict)
    seeds: int = 3
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


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RunError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return device


def plan_run(req: TrainRequest) -> tuple[dict[str, Any], list[Fold], FeatureStore]:
    """Resolve the head, streams, labels and folds; everything is checked before training starts."""
    if req.seeds < 1 or req.jobs < 1:
        raise RunError(f"seeds={req.seeds}, jobs={req.jobs}: both must be at least 1")
    if req.tensorboard:
        require_tensorboard()
    cache = open_cache(req.cache)
    head_cls = get_head(req.head)
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
    streams = dict(req.streams)
    if req.text not in ("asr", "gold"):
        raise RunError(f"--text {req.text!r}: use asr or gold")
    streams.setdefault("text", f"text_{req.text}")
    roles = resolve_roles(cache, head_cls.required_roles(hyper), head_cls.multi_layer_roles, streams, req.layers,
                          pooled=head_cls.pooled_input)
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
    protocol, options, extra = req.protocol, req.protocol_options, {}
    if req.folds is not None:
        if not (reader := get_protocol(req.protocol or "folds")).fold_files:  # folds (any file), emobox...
            raise RunError(f"--folds {req.folds} replaces --protocol; drop --protocol {req.protocol}")
        found = reader.function()(filter_subset(table, req.subset), req.folds, cache_ids=list(cache.utterances.utt_id),
                                  seed=req.split_seed, **req.protocol_options)
        # path + SHA-1 of the files in protocol_options: resuming with other fold files is refused
        folds, protocol, options = found.folds, reader.name, {**req.protocol_options, **found.options}
        extra = {"fold_warnings": found.warnings}
    else:
        if protocol is None:
            protocol = default_protocol(corpus, table)
            extra = {"protocol_default": f"{protocol}, the default for {corpus or 'this'} caches"}
        folds = make_folds(table, protocol, subset=req.subset, seed=req.split_seed, **req.protocol_options)
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
    config = {
        "cache": str(Path(req.cache).resolve()), "head": req.head, "hyperparameters": hyper,
        "train": asdict(train_cfg), "roles": {r: s.to_dict() for r, s in roles.items()}, "encoders": encoders,
        "labels": {"preset": preset.name, "classes": list(preset.classes), "rule": preset.describe()},
        "protocol": protocol, "protocol_options": options, **extra, "subset": req.subset,
        "split_seed": req.split_seed, "text_source": req.text if "text" in roles else None,
        "speaker_independent": all(f.speaker_independent for f in folds), "n_utterances": len(table),
        "dropped_utterances": int(len(cache.utterances) - len(table)), "seeds": list(range(req.seeds)),
        "fold_selection": req.fold, "jobs": req.jobs, "tensorboard": req.tensorboard,
        "threads_per_task": max(1, (os.cpu_count() or 1) // req.jobs), "device": req.device, "sercache_version": __version__,
        "command": req.command, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return config, select_folds(folds, req.fold), cache


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


def prepare_run_dir(run: Path, config: dict[str, Any], folds: list[Fold]) -> dict[str, Any]:
    """Create, or resume into, ``run``; refuse one made with other settings. Returns the run's config."""
    cfg_path = run / "config.json"
    if cfg_path.exists():
        old = read_json(cfg_path, "the run's settings", "Delete the run directory and train again, or give a new --out.")
        changes = settings_changes(old, config)
        if changes:
            raise RunError(f"{run} holds a run made with other settings: {changes}. Give a new --out, or delete that "
                           "folder to start over")
        known = {f.name for f in load_folds(run / "folds.json")}
        new = [f for f in folds if f.name not in known]
        if new:
            save_folds(load_folds(run / "folds.json") + new, run / "folds.json")
        seeds = sorted(set(old.get("seeds", [])) | set(config["seeds"]))
        config = {**old, "seeds": seeds, "command": config["command"], "tensorboard": config.get("tensorboard", False)}
    run.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cfg_path, json.dumps(config, indent=1, default=str))  # a full disk never leaves half a file
    if not (run / "folds.json").exists():
        save_folds(folds, run / "folds.json")
    return config


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The settings two run configs differ in (not the RESUMABLE_KEYS), down to the values; "" if none."""
    diff = [k for k in sorted(set(old) | set(new)) if k not in RESUMABLE_KEYS
            and json.dumps(old.get(k), sort_keys=True, default=str) != json.dumps(new.get(k), sort_keys=True, default=str)]
    return "; ".join(describe_change(k, old.get(k), new.get(k)) for k in diff)


def describe_change(key: str, stored: Any, asked: Any, width: int = 80) -> str:
    """``train.lr: stored 1e-05, asked 0.001``: nested settings down to the values that differ."""
    if isinstance(stored, dict) and isinstance(asked, dict):
        keys = sorted(k for k in set(stored) | set(asked) if json.dumps(stored.get(k), sort_keys=True, default=str)
                      != json.dumps(asked.get(k), sort_keys=True, default=str))
        return "; ".join(describe_change(f"{key}.{k}", stored.get(k), asked.get(k), width) for k in keys)

    def short(value: Any) -> str:
        text = json.dumps(value, default=str)
        return text if len(text) <= width else text[: width - 3] + "..."

    return f"{key}: stored {short(stored)}, asked {short(asked)}"


def task_dir(run: Path, fold: str, seed: int) -> Path:
    return run / fold / f"seed{seed}"


def _train_task(run: str, fold: dict[str, Any], seed: int, config: dict[str, Any], device: str,
                threads: int, progress_every: float | None, parent: int) -> dict[str, Any]:
    """One fold x seed (runs in a joblib worker): load the fold into memory, train, record."""
    import torch

    if parent and os.getpid() != parent:  # parent 0: a dask or SLURM worker, which outlives no one
        exit_with_parent(parent)

    # Pooled heads multiply a few hundred small vectors: a second intra-op thread only adds
    # synchronisation (several times slower on a loaded machine), so they always use one.
    # The thread count is the task's own, and given back afterwards: with --jobs 1 tasks run in the
    # caller's process, whose later work (an extraction, say) must not inherit it.
    before = torch.get_num_threads()
    torch.set_num_threads(1 if get_head(config["head"]).pooled_input else threads)
    out = task_dir(Path(run), fold["name"], seed)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / FAILED).unlink(missing_ok=True)
        with open(out / "train.log", "a", buffering=1) as logfile:
            say = None
            if progress_every is not None:  # stderr of the worker: the terminal, or the caller's stream in-process
                prefix = f"{config['head']} {fold['name']} seed {seed}: "
                say = lambda msg: print(prefix + msg, file=sys.stderr, flush=True)  # noqa: E731
            return _train_logged(out, fold, seed, config, device, logfile, say, progress_every or 0.0)
    except OSError as exc:  # the log itself could not be written (a full disk): this task fails, the others go on
        return {"fold": fold["name"], "seed": seed, "ok": False, "error": f"{out}: {exc}"}
    finally:
        torch.set_num_threads(before)


_WATCHED: set[int] = set()


def exit_with_parent(parent: int, every: float = 1.0) -> None:
    """In a worker process: exit when ``parent`` (the `sercache train` process) is gone.

    A killed parent does not take joblib's workers with it; left alone they would go on
    training, writing into a run nobody is watching. Finished records are written by rename,
    so exiting at any moment leaves each task either done or to be retrained.
    """
    if parent in _WATCHED:
        return
    _WATCHED.add(parent)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        os._exit(3)

    threading.Thread(target=watch, name="sercache-parent-watch", daemon=True).start()


def _train_logged(out: Path, fold: dict[str, Any], seed: int, config: dict[str, Any], device: str,
                  logfile: Any, say: Any = None, progress_every: float = 10.0) -> dict[str, Any]:
    try:
        cache = open_cache(config["cache"])
        head_cls = get_head(config["head"])
        preset = get_preset(config["labels"]["preset"])
        roles = recorded_roles(cache, config)
        ids = set(fold["train"]) | set(fold["valid"]) | set(fold["test"])
        table = labelled_utterances(cache, preset, roles)
        data = load_fold(cache, table[table.utt_id.isin(ids)], roles, preset, head_cls, config["hyperparameters"],
                         device)
        cache.close()
        start = time.perf_counter()
        metrics = train_fold(out, head_name=config["head"], hyperparameters=config["hyperparameters"],
                             cfg=TrainConfig(**config["train"]), data=data, train_ids=fold["train"],
                             valid_ids=fold["valid"], test_ids=fold["test"], seed=seed,
                             label_names=config["labels"]["classes"], run_config=config,
                             log=lambda msg: print(msg, file=logfile), progress=say, progress_every=progress_every)
        return {"fold": fold["name"], "seed": seed, "ok": True, "seconds": time.perf_counter() - start, **metrics}
    except (TrainingError, CacheError, ValueError, OSError) as exc:
        try:  # on a full disk these writes fail too: the task still fails alone, never the whole run
            (out / FAILED).write_text(str(exc))
            print(f"FAILED: {exc}", file=logfile)
        except OSError:
            pass
        return {"fold": fold["name"], "seed": seed, "ok": False, "error": str(exc)}


def run_training(req: TrainRequest, progress: Any = print) -> tuple[Path, list[dict[str, Any]]]:
    """Plan, check, then train every selected fold x seed not yet done. Returns (run dir, results)."""
    from sercache.store.verify import verify_cache

    config, folds, cache = plan_run(req)
    for warning in config.get("fold_warnings", []):  # before any training, so a bad fold file is seen early
        progress(f"warning: {warning}")
    streams = sorted({name for s in config["roles"].values() for name in s["stream"].split(",")})
    # Every byte training will read is checked once here (checksums, NaN/inf, completeness), so a
    # damaged cache is refused before any fold starts, with the shards and utterances to re-extract.
    problems = verify_cache(req.cache, streams, checksums=True, values=True)
    cache.close()
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:10])
        raise RunError(f"{req.cache} fails verification for stream(s) {', '.join(streams)}:\n  {listing}\n"
                       "Repair it first: re-extract the named shards/utterances (the commands are listed above), "
                       "then rerun `sercache cache verify`.")
    if "protocol_default" in config:
        progress(f"protocol: {config['protocol_default']} (--protocol to choose another)")
    if req.recorded is not None:
        changes = settings_changes(req.recorded, config)
        progress("--config: replaying a recorded run " + (f"with these differences: {changes}" if changes
                                                           else "with the same settings"))
    run = Path(req.out) if req.out else default_run_dir(req, config["protocol"])
    # One `sercache train` per run directory: a second one would train the same tasks and interleave logs.
    with ExclusiveLock(run / RUN_LOCK, f"{run} is being trained into by another `sercache train` ({{holder}}). Wait "
                       "for it to finish, or give a new --out."):
        return _train_locked(req, run, config, folds, progress)


def _train_locked(req: TrainRequest, run: Path, config: dict[str, Any], folds: list[Fold],
                  progress: Any) -> tuple[Path, list[dict[str, Any]]]:
    from joblib import Parallel, delayed

    config = prepare_run_dir(run, config, folds)
    device = resolve_device(req.device)
    todo = [(f, s) for f in folds for s in config["seeds"] if not (task_dir(run, f.name, s) / DONE).exists()]
    skipped = len(folds) * len(config["seeds"]) - len(todo)
    if skipped:
        progress(f"{run}: {skipped} fold/seed result(s) already done, {len(todo)} to train")
    jobs = max(1, min(req.jobs, len(todo))) if todo else 1
    # fixed when the run was made (runs from before that: from --jobs), so a resume gives identical numbers
    threads = int(config.get("threads_per_task") or max(1, (os.cpu_count() or 1) // req.jobs))
    results = []
    if todo:
        progress(f"{run}: training {config['head']} on {len(todo)} fold/seed task(s), {jobs} at a time")
    tasks = (delayed(_train_task)(str(run), asdict(f), s, config, device, threads, req.progress_every, os.getpid())
             for f, s in todo)
    for res in Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks):
        results.append(res)
        progress(describe_result(config, res))
    for warning in result_warnings(results, len(config["labels"]["classes"])):
        progress(warning)
    return run, results


def describe_result(config: dict[str, Any], res: dict[str, Any]) -> str:
    """The progress line of one finished fold x seed."""
    where = f"{config['head']} {res['fold']} seed {res['seed']}"
    if not res["ok"]:
        return f"{where}: FAILED: {res['error']}"
    chosen = (" ".join(f"{k}={v}" for k, v in res["selected"].items()) if res.get("selected")
              else f"best epoch {res['best_epoch']} of {res['epochs_run']} run")
    if not res.get("selected") and res["best_epoch"] == config["train"]["epochs"]:
        chosen += "; the last epoch allowed: undertrained? raise --epochs"
    return (f"{where}: test UA {100 * res['ua']:.2f}% WA {100 * res['wa']:.2f}% "
            f"({chosen}{', refit' if res.get('refit') else ''}, {res['seconds']:.0f} s)")


def result_warnings(results: list[dict[str, Any]], n_classes: int) -> list[str]:
    """Warnings on what this call trained (the report gives them for the whole run, with bootstrap CIs)."""
    uas = np.array([r["ua"] for r in results if r.get("ok")])
    if len(uas) < 2:
        return []
    se = uas.std(ddof=1) / np.sqrt(len(uas))
    if uas.mean() - 2 * se <= 1 / n_classes:
        return [f"warning: mean test UA {100 * uas.mean():.2f}% is within noise of chance ({100 / n_classes:.2f}%, "
                f"2 standard errors: {200 * se:.2f} points); check the features, --labels and the training settings "
                "(--lr, --epochs) before reading anything into it"]
    return []
