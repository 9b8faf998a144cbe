"""The gradient-training loop of one fold: epochs of batches, selection on validation UA, progress.

Batches are utterances (every head but the GLAM family) or segments (``batch_unit = "segment"``,
see :mod:`sercache.training.segments`). With a validation set the best epoch by validation UA
is kept (ties: the lower validation loss) and training stops after ``patience`` epochs without
improvement; without one (a refit on training + validation) every epoch runs and the last is kept.
"""
from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sercache.errors import SercacheError
from sercache.heads.base import Head
from sercache.interrupts import stop_if_interrupted
from sercache.training.data import bucket_batches
from sercache.training.metrics import classification_metrics
from sercache.training.precision import autocast, grad_scaler, unsupported
from sercache.training.segments import SegmentTable
from sercache.training.train_config import TrainConfigError


class TrainingError(SercacheError, RuntimeError):
    """Training of one fold/seed cannot go on (diverged loss, failed checkpoint write)."""


class Progress:
    """Progress lines of one fold's training: at most one per ``every`` seconds (0: every epoch and batch).

    The first epoch, an early stop and the end are always reported, so a long first epoch never
    looks like a hang and a fast run prints a handful of lines, not one per epoch.
    """

    def __init__(self, say: Callable[[str], None] | None, every: float = 10.0) -> None:
        self.say = say
        self.every = every
        self.last = -math.inf

    def __call__(self, message: str, *, force: bool = False) -> None:
        if self.say is None:
            return
        now = time.monotonic()
        if force or now - self.last >= self.every:
            self.say(message)
            self.last = now

    def due(self) -> bool:
        return self.say is not None and time.monotonic() - self.last >= self.every


@dataclass
class FitResult:
    curve: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0                  # the selected epoch (closed-form heads: the selected candidate)
    valid_ua: float = float("nan")
    selected: dict[str, Any] = field(default_factory=dict)  # closed-form heads: the chosen hyperparameters


def make_optimizer(cfg: Any, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=cfg.momentum,
                               nesterov=cfg.nesterov)
    raise TrainConfigError(f"optimizer {cfg.optimizer!r}: use adam, adamw or sgd")


def next_lr(cfg: Any, epoch: int, lr: float) -> float:
    """The learning rate after ``epoch`` (1-based): ExponentialLR down to ``min_lr``, or StepLR."""
    if cfg.schedule == "exponential" and lr * cfg.gamma >= cfg.min_lr:
        return lr * cfg.gamma
    if cfg.schedule == "step" and epoch % cfg.step_size == 0:
        return lr * cfg.gamma
    if cfg.schedule not in ("none", "exponential", "step"):
        raise TrainConfigError(f"schedule {cfg.schedule!r}: use none, exponential or step")
    return lr


def _segment_table(head: Head, data: Any, idx: np.ndarray) -> SegmentTable:
    return SegmentTable(data, head.roles[0], idx, head.segment_frames, head.hop_frames)


def fit_epochs(head: Head, data: Any, cfg: Any, tr: np.ndarray, va: np.ndarray | None, *, epochs: int, seed: int,
               evaluate: Callable[..., tuple[dict[str, Any], float]], progress: Progress,
               log: Callable[[str], None], where: str,
               on_epoch: Callable[[dict[str, Any]], None] | None = None) -> FitResult:
    """Train ``head`` on utterances ``tr`` for up to ``epochs`` epochs; select on ``va`` when given.

    ``on_epoch`` gets each epoch's curve row as soon as it is complete (the TensorBoard log).
    """
    if why := unsupported(cfg.precision, data.device):
        raise TrainingError(f"{where}: {why}")
    rng = np.random.default_rng(seed)
    optimizer = make_optimizer(cfg, [p for p in head.parameters() if p.requires_grad])
    scaler = grad_scaler(cfg.precision, data.device)
    by_segment = getattr(head, "batch_unit", "utterance") == "segment"
    segments = _segment_table(head, data, tr) if by_segment else None  # windows cut once per fold
    lengths = data.length_of(tr)
    result = FitResult()
    best, best_state, stale = (-1.0, math.inf), copy.deepcopy(head.state_dict()), 0
    lr = cfg.lr
    for epoch in range(1, epochs + 1):
        head.train()
        start = time.perf_counter()
        total, count = 0.0, 0
        batches = segments.batches(cfg.batch_size, rng) if segments else bucket_batches(lengths, cfg.batch_size, rng)
        for k, b in enumerate(batches, 1):
            stop_if_interrupted()  # a Ctrl-C swallowed by a finaliser still stops the task here
            with autocast(cfg.precision, data.device):
                if segments is not None:
                    x, mask, y = segments.gather(b)
                    loss = head.segment_loss(x, mask, y)
                else:
                    loss = head.training_step(data.batch(tr[b]))
            if not torch.isfinite(loss.detach()):
                raise TrainingError(
                    f"{where}: the training loss became {loss.item()} at epoch {epoch}, batch {k}. This fold/seed "
                    "stopped; lower --lr, or check the cache with `sercache cache verify`"
                    + (", or train at --precision fp32." if cfg.precision != "fp32" else "."))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
                torch.nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
            scaler.step(optimizer)  # skips a step whose scaled gradients overflowed (fp16), then lowers the scale
            scaler.update()
            total += loss.item() * len(b)
            count += len(b)
            if k < len(batches) and progress.due():
                progress(f"epoch {epoch}/{epochs}, batch {k}/{len(batches)}, train loss {total / count:.4f}")
        if data.device.type == "cuda":
            torch.cuda.synchronize()
        row = {"epoch": epoch, "train_loss": total / max(count, 1), "lr": lr,
               "train_seconds": time.perf_counter() - start}
        stop = False
        if va is not None and len(va):
            valid, valid_loss = evaluate(head, data, va, max(cfg.batch_size, 32), precision=cfg.precision)
            vm = classification_metrics(data.y[va].cpu().numpy(), valid["logits"].argmax(1), data.n_classes)
            row.update(valid_loss=valid_loss, valid_ua=vm["ua"], valid_wa=vm["wa"])
            if (vm["ua"], -valid_loss) > (best[0], -best[1]):
                best, best_state, stale, result.best_epoch = (vm["ua"], valid_loss), copy.deepcopy(head.state_dict()), 0, epoch
            else:
                stale += 1
                stop = stale >= cfg.patience
            note = (f", valid UA {100 * vm['ua']:.2f}% WA {100 * vm['wa']:.2f}% "
                    f"(best {100 * best[0]:.2f}% at epoch {result.best_epoch})")
        else:
            note = ""
        result.curve.append(row)
        if on_epoch is not None:
            on_epoch(row)
        log(f"epoch {epoch:3d}  train loss {row['train_loss']:.4f}" + (f"  valid loss {row['valid_loss']:.4f}  UA "
            f"{row['valid_ua']:.4f}  WA {row['valid_wa']:.4f}" if "valid_ua" in row else "") + f"  {row['train_seconds']:.1f}s")
        progress(f"epoch {epoch}/{epochs}: train loss {row['train_loss']:.4f}{note}, {row['train_seconds']:.1f} s",
                 force=epoch == 1)
        if stop:
            progress(f"stopped at epoch {epoch}: no better validation UA for {cfg.patience} epochs", force=True)
            break
        new_lr = next_lr(cfg, epoch, lr)
        if new_lr != lr:
            lr = new_lr
            for group in optimizer.param_groups:
                group["lr"] = lr
    if va is not None and len(va):
        head.load_state_dict(best_state)
        result.valid_ua = best[0]
    else:
        result.best_epoch = len(result.curve)
    return result
