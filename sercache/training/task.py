"""One fold x seed of a run, as a worker trains it (joblib, dask or SLURM), and its progress line.

A task reads only what the run recorded (its :class:`RunConfig` and one fold's utterance ids),
so any process that sees the cache can run it; its records go into ``RUN/<fold>/seed<k>/``
(see :mod:`run_layout`), ``DONE`` last, and a failure leaves ``FAILED`` with the error.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sercache.cluster_engines import exit_with_parent
from sercache.heads import get_head
from sercache.splits import get_preset
from sercache.store import open_cache
from sercache.store.errors import CacheError
from sercache.training.data import labelled_utterances
from sercache.training.pooled import load_fold
from sercache.training.run_config import RunConfig, recorded_roles
from sercache.training.run_layout import FAILED, TRAIN_LOG, task_dir
from sercache.training.targets import target_notes
from sercache.training.trainer import TrainingError, train_fold


def train_task(run: str, fold: dict[str, Any], seed: int, config: RunConfig, device: str,
               threads: int, progress_every: float | None, parent: int) -> dict[str, Any]:
    """One fold x seed (runs in a joblib worker): load the fold into memory, train, record."""
    if parent and os.getpid() != parent:  # parent 0: a dask or SLURM worker, which outlives no one
        exit_with_parent(parent)  # done already where the pool's initializer ran it
    import torch

    # Pooled heads multiply a few hundred small vectors: a second intra-op thread only adds
    # synchronisation (several times slower on a loaded machine), so they always use one.
    # The thread count is the task's own, and given back afterwards: with --jobs 1 tasks run in the
    # caller's process, whose later work (an extraction, say) must not inherit it.
    before = torch.get_num_threads()
    torch.set_num_threads(1 if get_head(config.head).pooled_input else threads)
    out = task_dir(Path(run), fold["name"], seed)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / FAILED).unlink(missing_ok=True)
        with open(out / TRAIN_LOG, "a", buffering=1) as logfile:
            say = None
            if progress_every is not None:  # stderr of the worker: the terminal, or the caller's stream in-process
                prefix = f"{config.head} {fold['name']} seed {seed}: "
                say = lambda msg: print(prefix + msg, file=sys.stderr, flush=True)  # noqa: E731
            return _train_logged(out, fold, seed, config, device, logfile, say, progress_every or 0.0)
    except OSError as exc:  # the log itself could not be written (a full disk): this task fails, the others go on
        return {"fold": fold["name"], "seed": seed, "ok": False, "error": f"{out}: {exc}"}
    finally:
        torch.set_num_threads(before)


def _train_logged(out: Path, fold: dict[str, Any], seed: int, config: RunConfig, device: str,
                  logfile: Any, say: Any = None, progress_every: float = 10.0) -> dict[str, Any]:
    try:
        cache = open_cache(config.cache)
        head_cls = get_head(config.head)
        preset = get_preset(config.labels.preset)
        roles = recorded_roles(cache, config)
        ids = set(fold["train"]) | set(fold["valid"]) | set(fold["test"])
        table = labelled_utterances(cache, preset, roles)
        data = load_fold(cache, table[table.utt_id.isin(ids)], roles, preset, head_cls, config.hyperparameters,
                         device)
        cache.close()
        for note in target_notes(data.table, head_cls.needs):
            print(f"{config.head}: {note}", file=logfile)
        start = time.perf_counter()
        metrics = train_fold(out, head_name=config.head, hyperparameters=config.hyperparameters,
                             cfg=config.train, data=data, train_ids=fold["train"],
                             valid_ids=fold["valid"], test_ids=fold["test"], seed=seed,
                             label_names=config.labels.classes, run_config=config,
                             log=lambda msg: print(msg, file=logfile), progress=say, progress_every=progress_every)
        return {"fold": fold["name"], "seed": seed, "ok": True, "seconds": time.perf_counter() - start, **metrics}
    except (TrainingError, CacheError, ValueError, OSError) as exc:
        try:  # on a full disk these writes fail too: the task still fails alone, never the whole run
            (out / FAILED).write_text(str(exc))
            print(f"FAILED: {exc}", file=logfile)
        except OSError:
            pass
        return {"fold": fold["name"], "seed": seed, "ok": False, "error": str(exc)}


def describe_result(config: RunConfig, res: dict[str, Any]) -> str:
    """The progress line of one finished fold x seed."""
    where = f"{config.head} {res['fold']} seed {res['seed']}"
    if not res["ok"]:
        return f"{where}: FAILED: {res['error']}"
    chosen = (" ".join(f"{k}={v}" for k, v in res["selected"].items()) if res.get("selected")
              else f"best epoch {res['best_epoch']} of {res['epochs_run']} run")
    if res.get("layer_choices"):  # --layer select: what this fold chose on validation
        chosen = f"layers {'; '.join(res['layers'].values())}, {chosen}"
    if not res.get("selected") and res["best_epoch"] == config.train.epochs:
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
