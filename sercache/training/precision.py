"""Mixed-precision training and evaluation (``--precision``): torch autocast around the head's forward passes.

``fp32`` (the default) runs as before. ``bf16`` runs the matrix products in bfloat16 under
``torch.autocast`` while the weights, the optimiser state and the checkpoint stay fp32; on a CPU
with AMX or AVX-512 BF16 (Sapphire Rapids and later) and on Ampere or newer GPUs it trains the
large frame heads (tmn, mmer) about 1.7-2.4 times faster on a 2-core CPU
(``benchmarks/train_precision.py``). ``fp16`` is for GPUs without bfloat16 (V100, T4): its
gradients are scaled (``torch.amp.GradScaler``) so small ones do not underflow.

A run records its precision (``config.json`` ``train.precision``), and ``eval`` and ``predict``
evaluate its checkpoints under the same precision, so their figures are the run's own.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads PRECISIONS at start-up
    import torch

#: --precision choices; fp32 first (the default)
PRECISIONS = ("fp32", "bf16", "fp16")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The forward passes' context: nothing for fp32, ``torch.autocast`` to the precision's dtype otherwise."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (gradients below fp16's range would become 0); a pass-through otherwise."""
    import torch

    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def unsupported(precision: str, device: torch.device) -> str:
    """Why ``device`` cannot train at ``precision`` ("" when it can)."""
    import torch

    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return (f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use "
                "--precision fp16 (with loss scaling) or fp32")
    return ""
