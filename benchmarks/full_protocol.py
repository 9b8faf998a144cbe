"""A full 5-fold LOSO ``gate`` run at IEMOCAP scale, from the cache, timed per fold.

The cache is synthetic but IEMOCAP-shaped: the 5531 utterances of the standard 4-class list
with their real ids, sessions and durations, 1024-d fp16 audio frames at 50/s (one layer,
2.6 GB) and 768-d text tokens. ``sercache train --head gate --fold all`` then runs with the
head's published defaults (Adam, lr 1e-5, batch 2) unless ``--epochs`` etc. say otherwise.

    python benchmarks/full_protocol.py [--epochs N] [--seeds 1] [--jobs 1] [--device cpu|cuda]
"""
from __future__ import annotations

import json
import time

from _common import benchmark_parser, gate_sized_cache, iemocap_rows, machine, peak_rss_mb, workdir


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--epochs", type=int, default=None, help="default: the head's (15, early stopping patience 5)")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from sercache.training.run import TrainRequest, run_training
    from sercache.training.run_layout import METRICS, task_dir

    work = workdir(args.workdir, "full")
    cache = gate_sized_cache(work / "cache", iemocap_rows(args.jsonl), signal=0.3)
    run = work / f"run-e{args.epochs or 'default'}-s{args.seeds}"
    print(f"# 5-fold LOSO gate, 5531 utterances, 1024-d fp16 audio + 768-d text; {machine()}")
    start = time.perf_counter()
    _, results = run_training(TrainRequest(cache=cache, head="gate", out=run, fold="all", seeds=args.seeds,
                                           jobs=args.jobs, device=args.device, train={"epochs": args.epochs}),
                              progress=lambda m: print("  " + m, flush=True))
    wall = time.perf_counter() - start
    print(f"{'fold':7s} {'seed':>4s} {'epochs':>6s} {'s/epoch':>8s} {'fold s':>8s} {'test inference s':>17s} {'UA':>6s}")
    for r in sorted(results, key=lambda r: (r["fold"], r["seed"])):
        m = json.loads((task_dir(run, r["fold"], r["seed"]) / METRICS).read_text())
        print(f"{r['fold']:7s} {r['seed']:4d} {m['epochs_run']:6d} {m['train_seconds_per_epoch']:8.1f} "
              f"{r['seconds']:8.0f} {m['test_inference_seconds']:17.2f} {m['ua']:6.3f}")
    n = max(len(results), 1)
    print(f"total {wall:.0f} s for {len(results)} fold/seed runs ({wall / n:.0f} s per fold and seed, jobs {args.jobs}); "
          f"peak RSS {peak_rss_mb():.0f} MB (this process) / {peak_rss_mb(children=True):.0f} MB (workers)")


if __name__ == "__main__":
    main()
