"""Mixed precision (``sercache train --precision bf16``) against fp32 for the large frame heads, in one run.

On real encoder features: EmoDB-2s's Whisper-base frames (audio window, every layer) and MiniLM tokens of
Whisper-base's German transcripts, as ``benchmarks/real_speech.py`` extracts them (into ``--workdir``'s
``cache``, or ``--cache`` an existing one). For each head (default ``tmn`` and ``mmer``, their own
defaults otherwise), ``sercache train`` runs the same folds, seed and a fixed number of epochs
(``--epochs N --patience N``: no early stop, so both precisions do the same work) once at fp32 and once at
bf16. Printed per head: training seconds per epoch (the runs' own ``train_seconds_per_epoch``, mean over the
folds), the bf16/fp32 speed ratio, and test UA/WA of each, mean over the folds. The UA at a few epochs is a
sanity check that bf16 learns as fp32 does, not a result: ``real_speech.py --train-precision bf16`` trains
the full rows.

bf16 pays off where the CPU multiplies bfloat16 in hardware (AMX or AVX-512 BF16: Intel Sapphire Rapids and
later, AMD Zen 4 and later) or on an Ampere or newer GPU; elsewhere it can be slower than fp32. The CPU's
capability as torch sees it is printed first.

    python benchmarks/train_precision.py [--cache DIR | --workdir DIR] [--heads tmn,mmer] [--folds 1,2]
        [--epochs 3] [--labels emodb4] [--threads 2]
"""
from __future__ import annotations

import json
from pathlib import Path

from _common import benchmark_parser, machine, workdir
from real_speech import DEFAULT_ROOT, extract_real_encoders, minilm_folder, recorded_seconds, sercache_cli

PRECISIONS = ("fp32", "bf16")


def train(cache: Path, run: Path, head: str, precision: str, args) -> float:  # noqa: ANN001 - argparse namespace
    """One ``sercache train`` call (skipped when ``run`` is finished); its wall seconds (recorded at first)."""
    if (run / "config.json").exists() and len(list(run.glob("*/seed0/DONE"))) == len(args.folds.split(",")):
        return recorded_seconds(run, float("nan"))
    seconds, _ = sercache_cli("train", str(cache), "--head", head, "--audio-stream", "whisper", "--text", "asr",
                              "--labels", args.labels, "--protocol", "lospk", "--fold", args.folds, "--seeds", "1",
                              "--epochs", str(args.epochs), "--patience", str(args.epochs), "--precision", precision,
                              "--device", "cpu", "--jobs", "1", "--no-progress", "--out", str(run))
    return recorded_seconds(run, seconds)


def fold_metrics(run: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run.glob("*/seed0/metrics.json"))]


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--cache", default=None, help="a cache with whisper, asr and text_asr streams (else extracted)")
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--heads", default="tmn,mmer")
    ap.add_argument("--folds", default="1", help="fold numbers, e.g. 1,2 (leave one speaker out)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--labels", default="emodb4")
    args = ap.parse_args()

    import numpy as np
    import torch

    work = workdir(args.workdir, "train-precision")
    cache = Path(args.cache) if args.cache else work / "cache"
    if not args.cache:
        extract_real_encoders(args.root, "emodb", cache, str(Path(DEFAULT_ROOT).parents[1] / "models" / "whisper-base"),
                              minilm_folder(), "auto")
    print(f"machine: {machine()}; torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"cache {cache}; {args.labels}, folds {args.folds}, {args.epochs} epochs, one seed\n")
    print("| head | precision | s per epoch | bf16 speed-up | test UA % | test WA % | wall s |\n|---|---|---|---|---|---|---|")
    for head in args.heads.split(","):
        per_epoch = {}
        for precision in PRECISIONS:
            run = work / "runs" / f"{head}-{args.labels}-{precision}"
            wall = train(cache, run, head, precision, args)
            metrics = fold_metrics(run)
            per_epoch[precision] = float(np.mean([m["train_seconds_per_epoch"] for m in metrics]))
            ratio = f"{per_epoch['fp32'] / per_epoch[precision]:.2f}x" if precision != "fp32" else ""
            print(f"| {head} | {precision} | {per_epoch[precision]:.1f} | {ratio} | "
                  f"{100 * np.mean([m['ua'] for m in metrics]):.1f} | {100 * np.mean([m['wa'] for m in metrics]):.1f} "
                  f"| {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
