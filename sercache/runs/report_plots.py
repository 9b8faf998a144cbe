"""The figures of the HTML report (``sercache report --html``), each rendered to PNG bytes.

Everything is drawn from what a run recorded: ``predictions.csv`` (confusion matrices),
``curve.csv`` and ``metrics.json`` (training curves, the selected epoch, UA per fold) and, for
heads with learned layer weights (``wsum``), the checkpoints (loaded with ``weights_only``).
"""
from __future__ import annotations

import functools
import io
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np
import pandas as pd

from sercache.runs.report_tables import chance_levels
from sercache.training.metrics import confusion
from sercache.training.run_layout import CHECKPOINT, CURVE, task_dir

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from sercache.runs.record import RunRecord

#: Heads whose checkpoint holds learned per-layer logits, by state_dict key (softmax gives the weights).
LAYER_WEIGHT_KEYS = {"wsum": "layer_weights"}
#: One colour meaning per page: a hue of tab10 is a run (its bars, its curves, its layer weights); seeds
#: are shades of their run's hue; black and grey are references (chance, zero, differences, means).
RUN_PALETTE = "tab10"
NEUTRAL = ("black", "dimgrey")
DPI = 100
#: Figure widths in inches at DPI: a half-width grid cell of the page (~600 px) and a full-width row (~1240 px),
#: so that images show at their natural size and their text stays readable.
HALF, WIDE = 6.0, 12.4
RC = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
      "legend.fontsize": 8}
CURVE_COLUMNS, MAX_CURVE_FOLDS = 6, 24
P = ParamSpec("P")
R = TypeVar("R")


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: figures are only ever written to bytes
    import matplotlib.pyplot as plt

    return plt


def _styled(draw: Callable[P, R]) -> Callable[P, R]:
    """Draw under the report's font sizes without changing matplotlib's global settings."""
    @functools.wraps(draw)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _plt().rc_context(RC):
            return draw(*args, **kwargs)
    return wrapper


def to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _plt().close(fig)
    return buf.getvalue()


def _width(n_groups: int) -> float:
    """Half a row for a few folds, up to a full row for many (the page lays out wide figures alone)."""
    return min(max(HALF, 0.35 * n_groups + 1.5), WIDE)


def run_colour(index: int) -> Any:
    """The colour of the ``index``-th run of a report (as ``ua_per_fold_figure`` draws it)."""
    return _plt().get_cmap(RUN_PALETTE)(index % 10)


def seed_shade(colour: Any, k: int, n: int) -> tuple[float, float, float]:
    """Seed ``k`` of ``n``: the run's colour, mixed with up to 55% white (same hue, lighter)."""
    from matplotlib.colors import to_rgb

    t = 0.55 * k / max(1, n - 1)
    return tuple(float((1 - t) * c + t) for c in to_rgb(colour))  # type: ignore[return-value]


def share_y(axes: list[Any]) -> None:
    """One y-range for all of ``axes`` (every fold's panel on the same scale, so folds compare by eye)."""
    if axes:
        limits = [ax.get_ylim() for ax in axes]
        low, high = min(lo for lo, _ in limits), max(hi for _, hi in limits)
        for ax in axes:
            ax.set_ylim(low, high)


def _fold_ticks(ax: Any, folds: list[str]) -> None:
    rotation, size = (0, None) if len(folds) <= 6 else (45, None) if len(folds) <= 20 else (90, 6)
    ax.set_xticks(range(len(folds)), folds, rotation=rotation, fontsize=size,
                  ha="right" if rotation == 45 else "center")


@_styled
def confusion_figure(run: RunRecord) -> bytes:
    """Counts (all folds pooled, summed over seeds) and the row-normalised % side by side."""
    plt = _plt()
    names, k = run.label_names, len(run.label_names)
    cm = confusion(run.predictions.label.to_numpy(int), run.predictions.pred.to_numpy(int), k).astype(float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    width = max(HALF, 0.9 * k + 1.5)  # up to 5 classes in half a row
    fig, axes = plt.subplots(1, 2, figsize=(width, width / 2 + 0.5))
    for ax, values, title, text in ((axes[0], cm, "counts", lambda i, j: f"{int(cm[i, j])}"),
                                    (axes[1], norm, "row-normalised (% of true class)",
                                     lambda i, j: f"{100 * norm[i, j]:.0f}")):
        scaled = values / max(values.max(), 1e-12)
        ax.imshow(scaled, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
        for i in range(k):
            for j in range(k):
                ax.text(j, i, text(i, j), ha="center", va="center", fontsize=9,
                        color="white" if scaled[i, j] > 0.55 else "black")
        ax.set_xlabel("predicted")
        ax.set_title(title)
    axes[0].set_ylabel("true")
    fig.tight_layout()
    return to_png(fig)


def read_curves(run: RunRecord) -> pd.DataFrame:
    """Every finished fold x seed's ``curve.csv`` (selection phase), with fold and seed columns."""
    frames = []
    for r in run.metrics.itertuples():
        path = task_dir(run.path, r.fold, r.seed) / CURVE
        if path.exists():
            curve = pd.read_csv(path)
            if "phase" in curve:
                curve = curve[curve.phase == "select"]
            frames.append(curve.assign(fold=r.fold, seed=r.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@_styled
def curves_figure(run: RunRecord, index: int = 0) -> bytes | None:
    """Per fold: train/validation loss and validation UA per epoch, the selected epoch marked.

    Drawn in the colour of the page's ``index``-th run, one shade per seed; every fold's loss panel
    shares one y-range, and so does every validation-UA panel.

    None for closed-form heads (no epochs: their selection is a C/gamma grid, shown in the per-fold table).
    """
    curves = read_curves(run)
    if curves.empty or "epoch" not in curves or "train_loss" not in curves:
        return None
    plt = _plt()
    folds = list(dict.fromkeys(run.metrics.fold))
    seeds = sorted(run.metrics.seed.unique())
    base = run_colour(index)
    # one panel pair per fold, CURVE_COLUMNS to a row; past MAX_CURVE_FOLDS (CREMA-D's 91 speakers) all folds overlaid
    overlay = len(folds) > MAX_CURVE_FOLDS
    groups = [(f"all {len(folds)} folds", folds)] if overlay else [(f, [f]) for f in folds]
    cols = min(len(groups), CURVE_COLUMNS)
    blocks = -(-len(groups) // cols)
    fig, axes = plt.subplots(2 * blocks, cols, figsize=(WIDE, 4.6 * blocks), sharex=True, squeeze=False)
    best = run.metrics.set_index(["fold", "seed"]).best_epoch
    for i, (title, members) in enumerate(groups):
        loss_ax, ua_ax = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        for fold in members:
            for si, seed in enumerate(seeds):
                _draw_curve(loss_ax, ua_ax, curves[(curves.fold == fold) & (curves.seed == seed)],
                            best.get((fold, seed)), seed_shade(base, si, len(seeds)), f"seed {seed}", thin=overlay)
        loss_ax.set_title(title)
        ua_ax.set_xlabel("epoch")
        for ax in (loss_ax, ua_ax):
            ax.grid(alpha=0.3)
    share_y([axes[2 * (i // cols), i % cols] for i in range(len(groups))])
    share_y([axes[2 * (i // cols) + 1, i % cols] for i in range(len(groups))])
    for j in range(len(groups), blocks * cols):  # the last row's empty cells
        axes[2 * (j // cols), j % cols].set_visible(False)
        axes[2 * (j // cols) + 1, j % cols].set_visible(False)
    for b in range(blocks):
        axes[2 * b, 0].set_ylabel("loss (train —, valid --)")
        axes[2 * b + 1, 0].set_ylabel("validation UA %")
    if len(seeds) > 1:
        handles, labels = axes[1, 0].get_legend_handles_labels()
        unique = dict(zip(labels, handles))  # overlaid folds repeat each seed's label
        axes[1, 0].legend(list(unique.values()), list(unique), loc="lower right")
    fig.tight_layout()
    return to_png(fig)


def _draw_curve(loss_ax: Any, ua_ax: Any, c: pd.DataFrame, chosen: float | None, colour: Any, label: str,
                thin: bool) -> None:
    if c.empty:
        return
    lw, alpha = (0.7, 0.5) if thin else (1.2, 1.0)
    loss_ax.plot(c.epoch, c.train_loss, color=colour, lw=lw, alpha=alpha)
    if "valid_loss" in c and c.valid_loss.notna().any():
        loss_ax.plot(c.epoch, c.valid_loss, color=colour, lw=lw, alpha=alpha, ls="--")
    if "valid_ua" in c and c.valid_ua.notna().any():
        ua_ax.plot(c.epoch, 100 * c.valid_ua, color=colour, lw=lw, alpha=alpha, label=label)
    if chosen is None or not np.isfinite(chosen):
        return
    if not thin:
        for ax in (loss_ax, ua_ax):
            ax.axvline(chosen, color=colour, lw=0.8, ls=":")
    at = c[c.epoch == chosen]
    if len(at) and "valid_ua" in at and at.valid_ua.notna().all():
        ua_ax.plot(at.epoch, 100 * at.valid_ua, marker="*", ms=7 if thin else 10, color=colour, ls="none")


@_styled
def ua_per_fold_figure(runs: list[RunRecord]) -> bytes:
    """Test UA per fold for every run: the mean over seeds (bar), each seed (dot), std over seeds (whisker)."""
    plt = _plt()
    folds = list(dict.fromkeys(f for r in runs for f in r.metrics.fold))
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(_width(len(folds) * len(runs)), 3.4))
    for i, run in enumerate(runs):
        g = run.metrics.groupby("fold").ua
        x = np.array([folds.index(f) for f in g.mean().index]) + (i - (len(runs) - 1) / 2) * width
        std = g.std(ddof=1).fillna(0).to_numpy() if run.metrics.seed.nunique() > 1 else None
        ax.bar(x, 100 * g.mean().to_numpy(), width * 0.9, yerr=None if std is None else 100 * std, capsize=3,
               color=run_colour(i), alpha=0.55, label=run.path.name)
        for xi, fold in zip(x, g.mean().index):
            vals = run.metrics.loc[run.metrics.fold == fold, "ua"].to_numpy()
            ax.plot(np.full(len(vals), xi), 100 * vals, "o", ms=3.5, color=run_colour(i), mec="black", mew=0.4)
    chance = chance_levels(runs[0])["chance_ua"]
    ax.axhline(100 * chance, color="grey", ls="--", lw=1, label=f"chance {100 * chance:.0f}%")
    _fold_ticks(ax, folds)
    ax.set_ylabel("test UA %")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncol=min(len(runs) + 1, 5), frameon=False)  # above: bars reach 100
    fig.tight_layout()
    return to_png(fig)


def layer_weights(run: RunRecord) -> pd.DataFrame | None:
    """The learned softmax layer weights of every fold x seed (columns fold, seed, layer, weight), or None
    for heads without them."""
    import torch

    from sercache.training.trainer import load_checkpoint

    key = LAYER_WEIGHT_KEYS.get(run.config.head)
    if key is None:
        return None
    layers = next((e.get("layers") for e in run.config.encoders.values() if len(e.get("layers") or []) > 1), None)
    rows = []
    for r in run.metrics.itertuples():
        path = task_dir(run.path, r.fold, r.seed) / CHECKPOINT
        logits = load_checkpoint(path)["state_dict"][key].float()
        for i, w in enumerate(torch.softmax(logits, 0).tolist()):
            rows.append({"fold": r.fold, "seed": r.seed, "layer": layers[i] if layers and i < len(layers) else i,
                         "weight": w})
    return pd.DataFrame(rows)


@_styled
def layer_weights_figure(weights: pd.DataFrame, index: int = 0) -> bytes:
    """Mean learned weight per layer (bar) with each fold x seed (dot) and the uniform 1/L line, in run ``index``'s colour."""
    plt = _plt()
    layers = list(dict.fromkeys(weights.layer))
    fig, ax = plt.subplots(figsize=(max(HALF, 0.35 * len(layers) + 1.5), 3.4))
    mean = weights.groupby("layer", sort=False).weight.mean()
    ax.bar(range(len(layers)), mean.loc[layers].to_numpy(), 0.7, color=run_colour(index), alpha=0.55)
    for i, layer in enumerate(layers):
        vals = weights.loc[weights.layer == layer, "weight"].to_numpy()
        jitter = np.linspace(-0.15, 0.15, len(vals)) if len(vals) > 1 else np.zeros(1)
        ax.plot(i + jitter, vals, "o", ms=3, color=run_colour(index), mec="black", mew=0.4)
    ax.axhline(1 / len(layers), color="grey", ls="--", lw=1, label=f"uniform (1/{len(layers)})")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), frameon=False)
    ax.set_xticks(range(len(layers)), [str(v) for v in layers])
    ax.set_xlabel("encoder layer")
    ax.set_ylabel("softmax weight")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return to_png(fig)


@_styled
def paired_figure(base: RunRecord, other: RunRecord) -> bytes | None:
    """UA and WA of ``other`` minus ``base`` (pp) per fold x seed on identical folds, with the mean difference."""
    merged = base.metrics.merge(other.metrics, on=["fold", "seed"], suffixes=("_base", "_other"))
    if base.test_ids != other.test_ids or len(merged) < 2:
        return None
    plt = _plt()
    folds = list(dict.fromkeys(merged.fold))
    fig, ax = plt.subplots(figsize=(_width(len(folds)), 3.4))
    # neutral colours: the run hues mean runs on this page, and a difference belongs to neither run
    for offset, metric, colour, marker in ((-0.12, "ua", NEUTRAL[0], "o"), (0.12, "wa", NEUTRAL[1], "s")):
        diff = 100 * (merged[f"{metric}_other"] - merged[f"{metric}_base"])
        x = np.array([folds.index(f) for f in merged.fold]) + offset
        ax.plot(x, diff, marker, ms=4, color=colour, mfc="white" if metric == "wa" else colour, mec=colour, mew=1.0,
                label=f"{metric.upper()} (mean {diff.mean():+.2f})")
        ax.axhline(diff.mean(), color=colour, ls="--" if metric == "ua" else ":", lw=1)
    ax.axhline(0, color="black", lw=0.8)
    _fold_ticks(ax, folds)
    ax.set_ylabel(f"{other.path.name} − {base.path.name} (pp)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    return to_png(fig)
