"""Train one head on one fold with one seed; select on validation; optionally refit; record everything.

Per fold and seed the run directory gets (each written atomically, ``DONE`` last):

* ``checkpoint.pt``: the selected weights and the full config, loadable with
  ``torch.load(..., weights_only=True)`` (tensors and plain JSON-able values only);
* ``curve.csv``: per epoch train loss, validation loss/UA/WA, learning rate, seconds (for the
  classical heads: one row per candidate of the validation grid); a refit's epochs follow with
  ``phase = refit``;
* ``predictions.csv``: test utt_id, label, prediction, logits (and valence/arousal);
* ``metrics.json``: test metrics, selected epoch (or hyperparameters), training time, test inference time.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from sercache.heads import HEADS
from sercache.heads.base import Head, HeadOutput
from sercache.training import closed_form
from sercache.training.data import InMemoryData, bucket_batches
from sercache.training.epochs import FitResult, Progress, TrainingError, fit_epochs, make_optimizer
from sercache.training.layer_selection import choose_layers
from sercache.training.metrics import REGRESSION, ccc, classification_metrics
from sercache.training.precision import autocast
from sercache.training.roles import RoleSpec
from sercache.training.run_layout import CHECKPOINT, CURVE, DONE, METRICS, PREDICTIONS
from sercache.training.segments import SegmentTable
from sercache.training.tblog import CurveLog
from sercache.training.train_config import TrainConfig

__all__ = ["DONE", "TrainingError", "evaluate", "load_checkpoint", "make_optimizer", "train_fold"]


@torch.no_grad()
def evaluate(head: Head, data: Any, idx: np.ndarray, batch_size: int,
             precision: str = "fp32") -> tuple[dict[str, Any], float]:
    """Predictions for ``idx`` (per-utterance arrays in ``idx`` order) and the mean loss.

    Utterances go in length-sorted batches; the GLAM family's segments go 256 at a time, and an
    utterance's logits are the mean of its segments'. ``precision``: the run's (``--precision``).
    """
    head.eval()
    with autocast(precision, data.device):
        return _evaluate(head, data, idx, batch_size)


def _evaluate(head: Head, data: Any, idx: np.ndarray, batch_size: int) -> tuple[dict[str, Any], float]:
    if getattr(head, "batch_unit", "utterance") == "segment":
        return _evaluate_segments(head, data, idx)
    logits, regs, positions, losses, weights = [], [], [], [], []
    for b in bucket_batches(data.length_of(idx), batch_size, None):  # b: positions into idx
        batch = data.batch(idx[b])
        out: HeadOutput = head.predict(batch)
        losses.append(float(head.loss(HeadOutput(out.logits, out.regression), batch)))
        weights.append(len(b))
        logits.append(out.logits.float().cpu().numpy())
        if out.regression is not None:
            regs.append(out.regression.float().cpu().numpy())
        positions.append(b)
    where = np.concatenate(positions) if positions else np.empty(0, np.int64)

    def in_idx_order(parts: list[np.ndarray], width: int) -> np.ndarray:
        arr = np.empty((len(idx), width), dtype=np.float32)
        if parts:
            arr[where] = np.concatenate(parts)
        return arr

    result = {"idx": idx, "logits": in_idx_order(logits, data.n_classes),
              "regression": in_idx_order(regs, 2) if regs else None}
    loss = float(np.average(losses, weights=weights)) if losses else float("nan")
    return result, loss


def _evaluate_segments(head: Head, data: InMemoryData, idx: np.ndarray, chunk: int = 256) -> tuple[dict[str, Any], float]:
    table = SegmentTable(data, head.roles[0], idx, head.segment_frames, head.hop_frames)
    parts = [head.segment_logits(*table.gather(b)[:2]) for b in table.batches(chunk, None)]
    seg_logits = torch.cat(parts) if parts else torch.zeros(0, data.n_classes, device=data.device)
    logits = table.utterance_logits(seg_logits.float(), len(idx))
    loss = float(F.cross_entropy(logits, data.y[torch.as_tensor(idx, device=data.device)])) if len(idx) else float("nan")
    return {"idx": idx, "logits": logits.cpu().numpy().astype(np.float32), "regression": None}, loss


def build_head(name: str, dims: dict[str, int], n_classes: int, hyperparameters: dict[str, Any],
               roles: dict[str, RoleSpec] | None = None) -> Head:
    """A fresh head; ``roles`` (the data's) say which frame roles it reads as a learned mix of layers."""
    head_cls = HEADS[name]
    head = head_cls(dims=dims, n_classes=n_classes, **hyperparameters)
    # a frame role loaded with several layers that the head does not weigh itself (wsum) is mixed; pooled
    # roles hold several layers' statistics instead
    mixed = {} if head_cls.pooled_input else {role: len(spec.layers) for role, spec in (roles or {}).items()
                                               if len(spec.layers) > 1 and role not in head_cls.multi_layer_roles}
    if mixed:
        head.mix_layers(mixed)
    return head


def _atomic_write(path: Path, write: Any) -> None:
    """Write via a temporary file and rename; on failure the previous file stays intact."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # torch.save reports a full disk as a RuntimeError from its zip writer, not as an OSError
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, TrainingError):
            free = shutil.disk_usage(path.parent).free if path.parent.exists() else -1
            raise TrainingError(f"writing {path} failed ({str(exc).strip().splitlines()[0]}; {free / 2**20:.1f} MB "
                                "free on that disk); the previous version (if any) is intact. "
                                "Free disk space and rerun: finished folds and seeds are kept.") from exc
        raise


def _fit(head_name: str, hyperparameters: dict[str, Any], cfg: TrainConfig, data: Any, tr: np.ndarray,
         va: np.ndarray | None, *, seed: int, epochs: int | None, selected: dict[str, Any] | None,
         progress: Progress, log: Callable[[str], None], where: str,
         on_row: Callable[[dict[str, Any]], None] | None = None) -> tuple[Head, FitResult, float]:
    """Build a fresh head (same seed, same initial weights) and fit it on ``tr``; returns (head, result, seconds).

    ``va`` given: select on it (epochs, or the classical grid). ``va`` None: a refit, for ``epochs``
    epochs or with the ``selected`` hyperparameters.
    """
    torch.manual_seed(seed)
    head = build_head(head_name, data.dims, data.n_classes, hyperparameters, data.roles).to(data.device)
    # frozen encoders' features come at very different scales; statistics from the fitting utterances only
    data.normalization = data.fit_normalization(tr) if cfg.normalize else None
    start = time.perf_counter()
    if head.closed_form:
        if selected is None:
            result = closed_form.select_and_fit(head, data, tr, va, progress=progress, log=log, where=where)
        else:
            closed_form.refit(head, data, tr, selected)
            result = FitResult(curve=[{"candidate": 0, **{k: str(v) for k, v in selected.items()},
                                       "fit_seconds": time.perf_counter() - start}], selected=dict(selected))
        if on_row is not None:  # no epochs to watch: the grid's candidates once fitted
            for row in result.curve:
                on_row(row)
    else:
        result = fit_epochs(head, data, cfg, tr, va, epochs=epochs or cfg.epochs, seed=seed, evaluate=evaluate,
                            progress=progress, log=log, where=where, on_epoch=on_row)
    return head, result, time.perf_counter() - start


def train_fold(out_dir: Path, *, head_name: str, hyperparameters: dict[str, Any], cfg: TrainConfig,
               data: Any, train_ids: list[str], valid_ids: list[str], test_ids: list[str], seed: int,
               label_names: list[str], run_config: Mapping[str, Any], log: Any = print,
               progress: Callable[[str], None] | None = None, progress_every: float = 10.0) -> dict[str, Any]:
    """Train, select on validation UA, optionally refit on train + valid, test once, write the records.

    Returns the test metrics (and timings, the selection, sizes).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = CurveLog(out_dir) if run_config.get("tensorboard") else None
    try:
        return _train_fold(out_dir, head_name, hyperparameters, cfg, data, train_ids, valid_ids, test_ids, seed,
                           label_names, run_config, log, Progress(progress, progress_every), curves)
    finally:
        if curves is not None:
            curves.close()


def _train_fold(out_dir: Path, head_name: str, hyperparameters: dict[str, Any], cfg: TrainConfig, data: Any,
                train_ids: list[str], valid_ids: list[str], test_ids: list[str], seed: int, label_names: list[str],
                run_config: Mapping[str, Any], log: Any, report: Progress, curves: CurveLog | None) -> dict[str, Any]:
    tr, va, te = data.indices(train_ids), data.indices(valid_ids), data.indices(test_ids)

    def fit_here(layers: str | None = None) -> tuple[Head, FitResult, float]:
        on_row = (lambda row: curves.row("select", row, layers)) if curves else None
        return _fit(head_name, hyperparameters, cfg, data, tr, va, seed=seed, epochs=None, selected=None,
                    progress=report, log=log, where=str(out_dir), on_row=on_row)

    layer_choices = None
    if len(getattr(data, "layer_choices", list)()) > 1:  # --layer select: one more dimension of the selection
        head, fit, seconds, curve, layer_choices = choose_layers(data, fit_here, va, progress=report, log=log,
                                                                 where=str(out_dir))
    else:
        head, fit, seconds = fit_here()
        curve = [{"phase": "select", **row} for row in fit.curve]
    final_train = tr
    if cfg.refit and len(va):
        final_train = np.concatenate([tr, va])
        what = (" ".join(f"{k}={v}" for k, v in fit.selected.items()) if head.closed_form
                else f"{fit.best_epoch} epoch(s)")
        report(f"refit on training + validation ({len(final_train)} utterances) with the selected {what}", force=True)
        log(f"refit on training + validation: {what}")
        head, refit, refit_seconds = _fit(head_name, hyperparameters, cfg, data, final_train, None, seed=seed,
                                          epochs=fit.best_epoch, selected=fit.selected if head.closed_form else None,
                                          progress=report, log=log, where=str(out_dir),
                                          on_row=(lambda row: curves.row("refit", row)) if curves else None)
        curve += [{"phase": "refit", **row} for row in refit.curve]
        seconds += refit_seconds
    if data.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    test, _ = evaluate(head, data, te, max(cfg.batch_size, 32), precision=cfg.precision)
    if data.device.type == "cuda":
        torch.cuda.synchronize()
    test_seconds = time.perf_counter() - start
    metrics = test_metrics(data, te, test)
    per_epoch = [c["train_seconds"] for c in curve if "train_seconds" in c]
    metrics.update(best_epoch=None if head.closed_form else fit.best_epoch,
                   epochs_run=None if head.closed_form else len(fit.curve), valid_ua=fit.valid_ua, seed=seed,
                   selected=fit.selected or None, refit=bool(cfg.refit and len(va)), train_seconds=seconds,
                   train_seconds_per_epoch=float(np.mean(per_epoch)) if per_epoch else seconds,
                   test_inference_seconds=test_seconds, n_train=len(final_train), n_valid=len(va), n_test=len(te),
                   n_parameters=sum(p.numel() for p in head.parameters())
                   + sum(b.numel() for b in head.buffers() if head.closed_form))
    if hasattr(data, "describe_layers"):  # pooled heads: the layers read (chosen on validation with select)
        metrics["layers"] = data.describe_layers()
    if layer_choices is not None:
        metrics["layer_choices"] = layer_choices
    if mix := head.layer_weights_of():  # frame heads mixing layers: the share each layer got, per role
        metrics["layer_weights"] = {role: {str(layer): round(w, 4) for layer, w in zip(data.roles[role].layers, weights)}
                                    for role, weights in mix.items()}
        log("learned layer weights: " + "; ".join(f"{role} " + " ".join(f"{k}:{v:.2f}" for k, v in shares.items())
                                                  for role, shares in metrics["layer_weights"].items()))
    # the log only: the caller prints each finished task's test line once (task.describe_result)
    log(f"test UA {100 * metrics['ua']:.2f}% WA {100 * metrics['wa']:.2f}%"
        + (f" (epoch {fit.best_epoch} of {len(fit.curve)} selected on validation)" if not head.closed_form else
           f" ({' '.join(f'{k}={v}' for k, v in fit.selected.items())} selected on validation)"))
    if curves is not None:
        curves.test(metrics, fit.best_epoch)
    write_records(out_dir, head, run_config, hyperparameters, cfg, curve, data, te, test, metrics, label_names)
    return metrics


def test_metrics(data: InMemoryData, idx: np.ndarray, result: dict[str, Any]) -> dict[str, Any]:
    y = data.y[idx].cpu().numpy()
    pred = result["logits"].argmax(1)
    metrics: dict[str, Any] = classification_metrics(y, pred, data.n_classes)
    if result["regression"] is not None and data.va is not None:
        va = data.va[idx].cpu().numpy()
        for m in REGRESSION:
            metrics[m.key] = ccc(result["regression"][:, m.regression_index], va[:, m.regression_index])
    return metrics


def predictions_frame(data: InMemoryData, idx: np.ndarray, result: dict[str, Any], label_names: list[str]) -> pd.DataFrame:
    logits = result["logits"]
    df = pd.DataFrame({"utt_id": [data.utt_ids[i] for i in idx], "label": data.y[idx].cpu().numpy(),
                       "pred": logits.argmax(1)})
    df["label_name"] = [label_names[i] for i in df.label]
    if "dialog_type" in data.table:
        df["dialog_type"] = data.table.dialog_type.to_numpy()[idx]
    for k, name in enumerate(label_names):
        df[f"logit_{name}"] = logits[:, k]
    if result["regression"] is not None:
        df["valence_pred"], df["arousal_pred"] = result["regression"][:, 0], result["regression"][:, 1]
        if data.va is not None:
            va = data.va[idx].cpu().numpy()
            df["valence"], df["arousal"] = va[:, 0], va[:, 1]
    return df


def write_records(out_dir: Path, head: Head, run_config: Mapping[str, Any], hyperparameters: dict[str, Any],
                  cfg: TrainConfig, curve: list[dict], data: InMemoryData, te: np.ndarray, test: dict[str, Any],
                  metrics: dict[str, Any], label_names: list[str]) -> None:
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    checkpoint = {"state_dict": state, "head": head.name,
                  "normalization": {r: {"mean": m.cpu(), "std": sd.cpu()} for r, (m, sd) in
                                    (data.normalization or {}).items()}, "hyperparameters": hyperparameters, "train": asdict(cfg),
                  "dims": data.dims, "n_classes": data.n_classes, "labels": label_names,
                  **({"layers": data.layers_in_use} if hasattr(data, "layers_in_use") else {}),
                  **({"z_limit": data.z_limit} if getattr(data, "z_limit", None) is not None else {}),
                  "run": json.loads(json.dumps(dict(run_config), default=str))}  # a RunConfig reads as its JSON
    _atomic_write(out_dir / CHECKPOINT, lambda p: torch.save(checkpoint, p))
    _atomic_write(out_dir / CURVE, lambda p: pd.DataFrame(curve).to_csv(p, index=False))
    _atomic_write(out_dir / PREDICTIONS, lambda p: predictions_frame(data, te, test, label_names).to_csv(p, index=False))
    _atomic_write(out_dir / METRICS, lambda p: p.write_text(json.dumps(metrics, indent=1)))
    _atomic_write(out_dir / DONE, lambda p: p.write_text(time.strftime("%Y-%m-%d %H:%M:%S")))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint as data: never executes code from the file (``weights_only=True``).

    Anything but a mapping with a ``state_dict`` (another file linked or copied in its place) is
    refused with the path, and where it links to.
    """
    import pickle

    path = Path(path)
    where = f"{path} (a link to {path.resolve()})" if path.is_symlink() else str(path)
    fix = "delete that task's seed directory and rerun `sercache train` to retrain it."
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise TrainingError(f"{where} is not a readable checkpoint ({exc}); {fix}") from None
    if not magic.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or a bare pickle (refused below)
        raise TrainingError(f"{where} is not a checkpoint written by `sercache train` (neither a PyTorch archive nor "
                            f"a pickle: it starts with {magic!r}); {fix}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"{where}: refused for safety. It holds objects other than tensors and plain values, "
                            f"which could run code when loaded ({first}). sercache never loads such files; use "
                            "checkpoints written by `sercache train`.") from None
    except Exception as exc:  # noqa: BLE001 - the unpickler fails on foreign bytes in no documented way
        raise TrainingError(f"{where} is not a readable checkpoint ({type(exc).__name__}: {exc}); {fix}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise TrainingError(f"{where} is not a checkpoint written by `sercache train` (no state_dict); {fix}")
    return ckpt
