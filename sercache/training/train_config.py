"""A run's optimisation settings (:class:`TrainConfig`): read by the run's config and the trainer, so it lives below both."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sercache.errors import SercacheError
from sercache.heads import HEADS
from sercache.training.precision import PRECISIONS


class TrainConfigError(SercacheError, ValueError):
    """Optimisation settings that would train nothing or fail late (the message names them and their bounds)."""


@dataclass
class TrainConfig:
    """Optimisation settings; each head's published defaults fill what the user does not set."""

    optimizer: str = "adam"     # adam | adamw | sgd
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9       # sgd only
    nesterov: bool = False      # sgd only
    batch_size: int = 16        # utterances per step (segments, for the GLAM family)
    epochs: int = 30
    patience: int = 8           # epochs without a better validation UA before stopping
    schedule: str = "none"      # none | exponential (lr *= gamma per epoch while lr >= min_lr) | step
    gamma: float = 0.95
    min_lr: float = 1e-6
    step_size: int = 10         # schedule "step": lr *= gamma every step_size epochs
    grad_clip: float = 5.0      # max grad norm (0: off)
    mixup_alpha: float = 0.0    # kept for the record; heads that mix inputs read their own keyword
    normalize: bool = True      # z-score every feature dimension with training-fold statistics
    refit: bool = False         # after selection, retrain on training + validation (selected epochs / candidate)
    precision: str = "fp32"     # fp32 | bf16 | fp16: autocast of the forward passes (sercache.training.precision)

    def check(self) -> None:
        """Refuse values that would train nothing (and still mark the fold done) or fail late in torch."""
        checks = {"lr": self.lr > 0, "batch_size": self.batch_size >= 1, "epochs": self.epochs >= 1,
                  "patience": self.patience >= 1, "weight_decay": self.weight_decay >= 0,
                  "momentum": 0 <= self.momentum < 1, "gamma": 0 < self.gamma <= 1, "min_lr": self.min_lr >= 0,
                  "step_size": self.step_size >= 1, "grad_clip": self.grad_clip >= 0,
                  "mixup_alpha": self.mixup_alpha >= 0, "optimizer": self.optimizer in ("adam", "adamw", "sgd"),
                  "schedule": self.schedule in ("none", "exponential", "step"),
                  "precision": self.precision in PRECISIONS}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = ", ".join(f"{name}={getattr(self, name)!r}" for name in bad)
            raise TrainConfigError(f"invalid training option(s): {values} (lr > 0; batch_size, epochs, patience, step_size "
                                   ">= 1; 0 <= momentum < 1; 0 < gamma <= 1; optimizer adam/adamw/sgd; schedule "
                                   "none/exponential/step; precision fp32/bf16/fp16)")

    @classmethod
    def for_head(cls, head: str, overrides: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TrainConfigError(f"unknown training option(s) {sorted(unknown)}; options: {sorted(names)}")
        base = {k: v for k, v in HEADS[head].resolved_train_defaults().items() if k in names}
        cfg = cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})
        if not HEADS[head].closed_form:  # svm/logreg fit in closed form: no optimiser settings apply
            cfg.check()
        return cfg
