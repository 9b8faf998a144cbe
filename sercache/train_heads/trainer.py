"""Train one head on one fold with one seed; select on validation; record everything.

Per fold and seed the run directory gets (each written atomically, ``DONE`` last):

* ``checkpoint.pt``: the selected weights and the full config, loadable with
  ``torch.load(..., weights_only=True)`` (tensors and plain JSON-able values only);
* ``curve.csv``: per epoch train loss, validation loss/UA/WA, learning rate, seconds;
* ``predictions.csv``: test utt_id, label, prediction, logits (and valence/arousal);
* ``metrics.json``: test metrics, selected epoch, training time per epoch, test inference time.
"""
from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from sercache.train_heads.data import InMemoryData, bucket_batches
from sercache.train_heads.heads import HEADS
from sercache.train_heads.heads.base import Head, HeadOutput
from sercache.train_heads.metrics import ccc, classification_metrics

DONE = "DONE"


class TrainingError(RuntimeError):
    """Training of one fold/seed cannot go on (diverged loss, failed checkpoint write)."""


@dataclass
class TrainConfig:
    """Optimisation settings; each head's published defaults fill what the user does not set."""

    optimizer: str = "adam"     # adam | adamw | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 16
    epochs: int = 30
    patience: int = 8           # epochs without a better validation UA before stopping
    schedule: str = "none"      # none | exponential (lr *= gamma per epoch while lr >= min_lr)
    gamma: float = 0.95
    min_lr: float = 1e-6
    grad_clip: float = 5.0      # max grad norm (0: off)
    mixup_alpha: float = 0.0    # kept for the record; heads that mix inputs read their own keyword
    normalize: bool = True      # z-score every feature dimension with training-fold statistics

    @classmethod
    def for_head(cls, head: str, overrides: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown training option(s) {sorted(unknown)}; options: {sorted(names)}")
        base = {k: v for k, v in HEADS[head].resolved_train_defaults().items() if k in names}
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def make_optimizer(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)
    raise ValueError(f"optimizer {cfg.optimizer!r}: use adam, adamw or sgd")


@torch.no_grad()
def evaluate(head: Head, data: InMemoryData, idx: np.ndarray, batch_size: int) -> tuple[dict[str, Any], float]:
    """Predictions for ``idx`` in length-sorted batches: (per-utterance arrays, loss)."""
    head.eval()
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


def build_head(name: str, dims: dict[str, int], n_classes: int, hyperparameters: dict[str, Any]) -> Head:
    return HEADS[name](dims=dims, n_classes=n_classes, **hyperparameters)


def _atomic_write(path: Path, write: Any) -> None:
    """Write via a temporary file and rename; on failure the previous file stays intact."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise TrainingError(f"writing {path} failed ({exc}); the previous version (if any) is intact. "
                                "Free disk space and rerun: finished folds and seeds are kept.") from exc
        raise


def train_fold(out_dir: Path, *, head_name: str, hyperparameters: dict[str, Any], cfg: TrainConfig,
               data: InMemoryData, train_ids: list[str], valid_ids: list[str], test_ids: list[str], seed: int,
               label_names: list[str], run_config: dict[str, Any], log: Any = print) -> dict[str, Any]:
    """Train, select on validation UA, test once, write the records. Returns the metrics."""
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = data.device
    head = build_head(head_name, data.dims, data.n_classes, hyperparameters).to(device)
    optimizer = make_optimizer(cfg, [p for p in head.parameters() if p.requires_grad])
    tr, va, te = data.indices(train_ids), data.indices(valid_ids), data.indices(test_ids)
    # frozen encoders' features come at very different scales; statistics from the training fold only
    data.normalization = data.fit_normalization(tr) if cfg.normalize else None
    lengths = data.length_of(tr)
    curve, best, best_state, stale, best_epoch = [], (-1.0, math.inf), copy.deepcopy(head.state_dict()), 0, 0
    lr = cfg.lr
    for epoch in range(1, cfg.epochs + 1):
        head.train()
        start = time.perf_counter()
        total, count = 0.0, 0
        for b in bucket_batches(lengths, cfg.batch_size, rng):
            batch = data.batch(tr[b])
            loss = head.training_step(batch)
            if not torch.isfinite(loss.detach()):
                raise TrainingError(
                    f"{out_dir}: the training loss became {loss.item()} at epoch {epoch} (utterances "
                    f"{batch.utt_ids[:3]}...). This fold/seed stopped; lower --lr, or check the cache with "
                    "`sercache cache verify`.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
            optimizer.step()
            total += loss.item() * len(b)
            count += len(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_seconds = time.perf_counter() - start
        valid, valid_loss = evaluate(head, data, va, max(cfg.batch_size, 32))
        vm = classification_metrics(data.y[va].cpu().numpy(), valid["logits"].argmax(1), data.n_classes)
        curve.append({"epoch": epoch, "train_loss": total / max(count, 1), "valid_loss": valid_loss,
                      "valid_ua": vm["ua"], "valid_wa": vm["wa"], "lr": lr, "train_seconds": train_seconds})
        log(f"epoch {epoch:3d}  train loss {total / max(count, 1):.4f}  valid loss {valid_loss:.4f}  "
            f"UA {vm['ua']:.4f}  WA {vm['wa']:.4f}  {train_seconds:.1f}s")
        if (vm["ua"], -valid_loss) > (best[0], -best[1]):
            best, best_state, stale = (vm["ua"], valid_loss), copy.deepcopy(head.state_dict()), 0
            best_epoch = epoch
        else:
            stale += 1
            if stale >= cfg.patience:
                break
        if cfg.schedule == "exponential" and lr * cfg.gamma >= cfg.min_lr:
            lr *= cfg.gamma
            for group in optimizer.param_groups:
                group["lr"] = lr
    head.load_state_dict(best_state)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    test, _ = evaluate(head, data, te, max(cfg.batch_size, 32))
    if device.type == "cuda":
        torch.cuda.synchronize()
    test_seconds = time.perf_counter() - start
    metrics = test_metrics(data, te, test)
    metrics.update(best_epoch=best_epoch, epochs_run=len(curve), valid_ua=best[0], seed=seed,
                   train_seconds_per_epoch=float(np.mean([c["train_seconds"] for c in curve])),
                   test_inference_seconds=test_seconds, n_train=len(tr), n_valid=len(va), n_test=len(te),
                   n_parameters=sum(p.numel() for p in head.parameters()))
    write_records(out_dir, head, run_config, hyperparameters, cfg, curve, data, te, test, metrics, label_names)
    return metrics


def test_metrics(data: InMemoryData, idx: np.ndarray, result: dict[str, Any]) -> dict[str, Any]:
    y = data.y[idx].cpu().numpy()
    pred = result["logits"].argmax(1)
    metrics: dict[str, Any] = classification_metrics(y, pred, data.n_classes)
    if result["regression"] is not None and data.va is not None:
        va = data.va[idx].cpu().numpy()
        metrics["ccc_valence"] = ccc(result["regression"][:, 0], va[:, 0])
        metrics["ccc_arousal"] = ccc(result["regression"][:, 1], va[:, 1])
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


def write_records(out_dir: Path, head: Head, run_config: dict[str, Any], hyperparameters: dict[str, Any],
                  cfg: TrainConfig, curve: list[dict], data: InMemoryData, te: np.ndarray, test: dict[str, Any],
                  metrics: dict[str, Any], label_names: list[str]) -> None:
    state = {k: v.detach().cpu() for k, v in head.state_dict().items()}
    checkpoint = {"state_dict": state, "head": head.name,
                  "normalization": {r: {"mean": m.cpu(), "std": sd.cpu()} for r, (m, sd) in
                                    (data.normalization or {}).items()}, "hyperparameters": hyperparameters, "train": asdict(cfg),
                  "dims": data.dims, "n_classes": data.n_classes, "labels": label_names,
                  "run": json.loads(json.dumps(run_config, default=str))}
    _atomic_write(out_dir / "checkpoint.pt", lambda p: torch.save(checkpoint, p))
    _atomic_write(out_dir / "curve.csv", lambda p: pd.DataFrame(curve).to_csv(p, index=False))
    _atomic_write(out_dir / "predictions.csv",
                  lambda p: predictions_frame(data, te, test, label_names).to_csv(p, index=False))
    _atomic_write(out_dir / "metrics.json", lambda p: p.write_text(json.dumps(metrics, indent=1)))
    _atomic_write(out_dir / DONE, lambda p: p.write_text(time.strftime("%Y-%m-%d %H:%M:%S")))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint as data: never executes code from the file (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)
