"""Classical heads: an RBF support-vector machine (``svm``) and logistic regression (``logreg``).

The baseline every SER paper reports against: scikit-learn on utterance statistics (openSMILE
functionals, or mean+std of any stream, several streams concatenated), standardised with
statistics of the training fold, with C (and gamma) chosen on the validation set, never the test
fold. Training is ``sercache.training.closed_form``; it writes the same run directory,
predictions and report as every other head.

A fitted estimator is exported into the head's tensors (support vectors, dual coefficients,
intercepts; or weights), so a checkpoint is a plain ``state_dict`` loaded with
``weights_only=True`` (no pickle), and ``forward`` computes scikit-learn's ``decision_function``
exactly (a test checks it against scikit-learn's own). The logits an SVM writes are its
one-vs-rest decision values (votes plus a confidence term in (-1/3, 1/3)), not log-probabilities.
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from sercache.heads import register
from sercache.heads.base import Batch, HeadError, HeadOutput, PooledHead, masked_mean


def _grid(value: Any) -> list[Any]:
    """A hyperparameter given as one value or a list of candidates -> candidates."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


class ClassicalHead(PooledHead):
    """Shared by the closed-form heads: candidate grid, export of the fitted model, resizable tensors."""

    roles: ClassVar[tuple[str, ...]] = ("audio",)
    pooled_input: ClassVar[bool] = True
    closed_form: ClassVar[bool] = True
    #: scikit-learn's SVC and lbfgs LogisticRegression draw no random numbers: every seed fits the same model.
    deterministic: ClassVar[bool] = True
    #: Only normalisation and refit matter to these heads; optimiser, batch size and epochs are not used.
    #: Refit on training + validation with the chosen candidate: measured better inside the training
    #: speakers of every EmoDB fold (benchmarks/selection_study.py).
    train_defaults: ClassVar[dict[str, Any]] = {"optimizer": "adam", "lr": 0.0, "batch_size": 256, "epochs": 1,
                                                "patience": 1, "grad_clip": 0.0, "refit": True}
    grid_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def training_description(cls) -> str:
        return ("training: fitted by scikit-learn on standardised utterance statistics; every combination of "
                f"{', '.join(cls.grid_keys)} given as lists is scored on validation UA and the best one kept"
                + ("; refit on training + validation by default" if cls.resolved_train_defaults().get("refit") else ""))

    def __init__(self, dims: dict[str, int], n_classes: int, *, with_text: bool, pooling: str) -> None:
        super().__init__(dims, with_text=with_text, pooling=pooling)
        self.n_classes = n_classes

    def candidates(self) -> list[dict[str, Any]]:
        """Every combination of the grid hyperparameters, in the order given (ties go to the first)."""
        values = [_grid(getattr(self, k)) for k in self.grid_keys]
        return [dict(zip(self.grid_keys, combo)) for combo in itertools.product(*values)]

    def estimator(self, params: dict[str, Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def export(self, fitted: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def inputs(self, batch: Batch) -> Tensor:
        roles = ("audio", "text") if self.with_text else ("audio",)
        return torch.cat([masked_mean(batch.streams[r].x, batch.streams[r].mask) for r in roles], dim=-1)

    def _set(self, name: str, value: np.ndarray | Tensor) -> None:
        self._buffers[name] = torch.as_tensor(np.asarray(value)).to(self._buffers[name].dtype)

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A fitted model's tensors (e.g. the number of support vectors) have data-dependent sizes:
        # take each buffer's shape from the checkpoint before the usual strict, shape-checked copy.
        for name, buf in self._buffers.items():
            if prefix + name in state_dict and buf is not None:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name], dtype=buf.dtype)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@register
class SVMHead(ClassicalHead):
    """Support-vector machine (scikit-learn ``SVC``) on standardised utterance statistics.

    Args:
        C: penalty, or a list of candidates chosen by validation UA.
        gamma: RBF width (``"scale"`` = 1 / (dim x variance), i.e. 1/dim on standardised input), or candidates.
        kernel: ``"rbf"`` or ``"linear"``.
        class_weight: ``"balanced"`` (weights inverse to class frequency, as UA counts every class
            equally) or None.
        pooling: ``"meanstd"`` or ``"mean"`` for frame streams (openSMILE streams give functionals).
        with_text: also read the text role's statistics.
    """

    name: ClassVar[str] = "svm"
    summary: ClassVar[str] = "scikit-learn SVC on standardised utterance statistics; C, gamma chosen on validation"
    grid_keys: ClassVar[tuple[str, ...]] = ("C", "gamma")

    def __init__(self, dims: dict[str, int], n_classes: int, *, C: float | list[float] = (0.1, 1.0, 10.0, 100.0),
                 gamma: str | float | list = "scale", kernel: str = "rbf", class_weight: str | None = "balanced",
                 pooling: str = "meanstd", with_text: bool = False) -> None:
        super().__init__(dims, n_classes, with_text=with_text, pooling=pooling)
        if kernel not in ("rbf", "linear"):
            raise HeadError(f"kernel={kernel!r}: use 'rbf' or 'linear'")
        self.C, self.gamma, self.kernel, self.class_weight = C, gamma, kernel, class_weight
        pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
        self.register_buffer("pair_first", torch.tensor([p[0] for p in pairs], dtype=torch.long))
        self.register_buffer("pair_second", torch.tensor([p[1] for p in pairs], dtype=torch.long))
        self.register_buffer("support_vectors", torch.zeros(0, self.width, dtype=torch.float64))
        self.register_buffer("support_class", torch.zeros(0, dtype=torch.long))
        self.register_buffer("dual_coef", torch.zeros(max(n_classes - 1, 1), 0, dtype=torch.float64))
        self.register_buffer("intercept", torch.zeros(len(pairs), dtype=torch.float64))
        self.register_buffer("fitted_gamma", torch.zeros((), dtype=torch.float64))

    def estimator(self, params: dict[str, Any]) -> Any:
        from sklearn.svm import SVC

        # break_ties: predict() = argmax of decision_function, which is what the exported head computes
        return SVC(C=float(params["C"]), gamma=params["gamma"], kernel=self.kernel, class_weight=self.class_weight,
                   break_ties=True)

    def export(self, fitted: Any) -> None:
        classes = fitted.classes_.astype(np.int64)
        if not np.array_equal(classes, np.arange(len(classes))) or len(classes) != self.n_classes:
            raise HeadError(f"the SVM was fitted on classes {classes.tolist()}; every one of the {self.n_classes} "
                            "classes needs training utterances")
        self._set("support_vectors", fitted.support_vectors_)
        self._set("support_class", np.repeat(classes, fitted.n_support_))
        self._set("dual_coef", fitted._dual_coef_)     # libsvm's own signs (the public ones flip for 2 classes)
        self._set("intercept", fitted._intercept_)
        self._set("fitted_gamma", np.float64(fitted._gamma))

    def decision(self, x: Tensor) -> Tensor:
        """libsvm's one-vs-one decision values ``(batch, pairs)``: positive means the pair's first class."""
        x = x.double()
        sv = self.support_vectors
        if self.kernel == "rbf":
            sq = (x * x).sum(1, keepdim=True) - 2 * x @ sv.T + (sv * sv).sum(1)[None]
            kernel = torch.exp(-self.fitted_gamma * sq.clamp(min=0))
        else:
            kernel = x @ sv.T
        out = []
        for p, (i, j) in enumerate(zip(self.pair_first.tolist(), self.pair_second.tolist())):
            # coefficients of class i's vectors sit in row j-1, those of class j's in row i
            in_i, in_j = self.support_class == i, self.support_class == j
            value = kernel[:, in_i] @ self.dual_coef[j - 1, in_i] + kernel[:, in_j] @ self.dual_coef[i, in_j]
            out.append(value + self.intercept[p])
        return torch.stack(out, 1) if out else x.new_zeros(len(x), 0)

    def forward(self, batch: Batch) -> HeadOutput:
        """scikit-learn's one-vs-rest ``decision_function``: votes plus a bounded confidence term."""
        dec = self.decision(self.inputs(batch))
        votes = dec.new_zeros(len(dec), self.n_classes)
        confidence = dec.new_zeros(len(dec), self.n_classes)
        votes.index_add_(1, self.pair_first, (dec >= 0).to(dec.dtype))
        votes.index_add_(1, self.pair_second, (dec < 0).to(dec.dtype))
        confidence.index_add_(1, self.pair_first, dec)
        confidence.index_add_(1, self.pair_second, -dec)
        return HeadOutput((votes + confidence / (3 * (confidence.abs() + 1))).float())


@register
class LogisticRegressionHead(ClassicalHead):
    """Multinomial logistic regression (scikit-learn, lbfgs) on standardised utterance statistics.

    Args:
        C: inverse L2 strength, or a list of candidates chosen by validation UA.
        class_weight: ``"balanced"`` or None (see ``svm``).
        max_iter: lbfgs iterations.
        pooling: ``"meanstd"`` or ``"mean"`` for frame streams (openSMILE streams give functionals).
        with_text: also read the text role's statistics.
    """

    name: ClassVar[str] = "logreg"
    summary: ClassVar[str] = "scikit-learn logistic regression on standardised utterance statistics; C chosen on validation"
    grid_keys: ClassVar[tuple[str, ...]] = ("C",)

    def __init__(self, dims: dict[str, int], n_classes: int, *, C: float | list[float] = (0.001, 0.01, 0.1, 1.0, 10.0),
                 class_weight: str | None = "balanced", max_iter: int = 2000, pooling: str = "meanstd",
                 with_text: bool = False) -> None:
        super().__init__(dims, n_classes, with_text=with_text, pooling=pooling)
        self.C, self.class_weight, self.max_iter = C, class_weight, max_iter
        self.register_buffer("weight", torch.zeros(n_classes, self.width, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(n_classes, dtype=torch.float64))

    def estimator(self, params: dict[str, Any]) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=float(params["C"]), class_weight=self.class_weight, max_iter=self.max_iter)

    def export(self, fitted: Any) -> None:
        classes = fitted.classes_.astype(np.int64)
        if not np.array_equal(classes, np.arange(self.n_classes)):
            raise HeadError(f"logistic regression was fitted on classes {classes.tolist()}; every one of the "
                            f"{self.n_classes} classes needs training utterances")
        coef, intercept = fitted.coef_, fitted.intercept_
        if self.n_classes == 2:  # scikit-learn keeps one row for two classes: the logit of class 1
            coef, intercept = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        self._set("weight", coef)
        self._set("bias", intercept)

    def forward(self, batch: Batch) -> HeadOutput:
        return HeadOutput((self.inputs(batch).double() @ self.weight.T + self.bias).float())
