"""Training throughput of the pooled heads: utterances per second per epoch, sercache vs the old frame path.

A synthetic cache of ``--utterances`` IEMOCAP-length utterances (durations drawn from the real list)
with a 26-d MFCC stream (31.25 frames/s) and a 80-d log-mel stream. One LOSO fold: train on
sessions 1-3, validate on 4. Each way trains a linear probe for ``--epochs`` epochs through the
trainer's own epoch loop (``sercache.training.epochs.fit_epochs``: batches, loss, clipping,
optimizer step, validation every epoch):

* sercache: ``PooledData`` (statistics pooled once per fold, z-scored once, a batch is a row
  gather), ``linear`` on mean+std, batch 64, one intra-op thread (what ``sercache train`` uses);
* old: ``InMemoryData`` frames, the previous ``linear`` (z-scored frames gathered and padded per
  batch, masked mean inside the head), batch 32, all threads (what ``sercache train`` did).

Figures: training utterances / median train seconds per epoch, and the same including validation.

``--busy N`` runs N CPU-bound busy loops alongside (a shared machine): intra-op threads then wait on
each other, which is why sercache trains pooled heads on one thread.

    python benchmarks/small_heads.py [--utterances 960] [--epochs 30] [--busy 0] [--workdir DIR]
"""
from __future__ import annotations

import statistics
import time

from _common import benchmark_parser, machine, sampled_rows, workdir


def build_cache(path, rows):  # noqa: ANN001, ANN201
    from sercache.synthetic.cache import SyntheticStream, manifest_from_rows, write_synthetic_cache

    if not (path / "sercache.json").exists():
        write_synthetic_cache(path, manifest_from_rows(rows), [
            SyntheticStream("mfcc", "mfcc", 26, dtype="float32", signal=0.5),
            SyntheticStream("logmel", "mfcc", 80, dtype="float32", signal=0.5)])
    return path


def run(way: str, cache_dir, epochs: int) -> dict:  # noqa: ANN001
    import numpy as np
    import torch

    import sercache
    from sercache.heads.base import Head, HeadOutput, masked_mean
    from sercache.splits import get_preset
    from sercache.training.data import InMemoryData, labelled_utterances
    from sercache.training.epochs import Progress, fit_epochs
    from sercache.training.pooled import PooledData
    from sercache.training.roles import resolve_roles
    from sercache.training.train_config import TrainConfig
    from sercache.training.trainer import evaluate

    class FrameMeanLinear(Head):
        """The previous ``linear``: masked mean of (z-scored) frames -> linear."""

        name = "old-linear"

        def __init__(self, dims: dict, n_classes: int) -> None:
            super().__init__()
            self.classifier = torch.nn.Linear(dims["audio"], n_classes)

        def forward(self, batch):  # noqa: ANN001, ANN201
            s = batch.streams["audio"]
            return HeadOutput(self.classifier(masked_mean(s.x, s.mask)))

    cache = sercache.open_cache(cache_dir)
    preset = get_preset("iemocap4")
    pooled = way == "sercache"
    roles = resolve_roles(cache, ("audio",), (), {"audio": "mfcc,logmel" if pooled else "mfcc"}, {}, pooled=pooled)
    table = labelled_utterances(cache, preset, roles)
    start = time.perf_counter()
    if pooled:
        torch.set_num_threads(1)
        data = PooledData(cache, table, roles, preset)
        cfg = TrainConfig.for_head("linear", {"epochs": epochs, "patience": epochs})
        from sercache.heads import get_head

        head = get_head("linear")(dims=data.dims, n_classes=4)
    else:
        torch.set_num_threads(torch.get_num_threads())
        data = InMemoryData(cache, table, roles, preset)
        cfg = TrainConfig(optimizer="adam", lr=1e-3, batch_size=32, epochs=epochs, patience=epochs)
        head = FrameMeanLinear(data.dims, 4)
    load_seconds = time.perf_counter() - start
    sessions = table.session.astype(str).to_numpy()
    tr = np.flatnonzero(np.isin(sessions, ["1", "2", "3"]))
    va = np.flatnonzero(sessions == "4")
    data.normalization = data.fit_normalization(tr)
    torch.manual_seed(0)
    wall = time.perf_counter()
    result = fit_epochs(head, data, cfg, tr, va, epochs=epochs, seed=0, evaluate=evaluate, progress=Progress(None),
                        log=lambda m: None, where=way)
    wall = time.perf_counter() - wall
    train_s = statistics.median(r["train_seconds"] for r in result.curve)
    return {"way": way, "threads": torch.get_num_threads(), "train": len(tr), "valid": len(va), "dim": data.dims["audio"],
            "load_s": load_seconds, "train_s_per_epoch": train_s, "epoch_s_with_valid": wall / len(result.curve),
            "utt_per_s": len(tr) / train_s, "utt_per_s_with_valid": len(tr) / (wall / len(result.curve)),
            "valid_ua": result.valid_ua}


def _spin() -> None:
    while True:
        pass


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--utterances", type=int, default=960)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--busy", type=int, default=0, help="CPU-bound busy loops running alongside")
    args = ap.parse_args()
    import multiprocessing

    busy = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for p in busy:
        p.start()
    work = workdir(args.workdir, "small-heads")
    cache = build_cache(work / "cache", sampled_rows(args.jsonl, args.utterances, seed=0))
    print(f"machine: {machine()}; {args.utterances} utterances, {args.epochs} epochs, {args.busy} busy loops alongside; "
          f"cache {cache}")
    rows = [run("old", cache, args.epochs), run("sercache", cache, args.epochs)]
    print("| way | threads | train utts | input dim | s/epoch (train) | utt/s | s/epoch (with validation) | utt/s | "
          "valid UA |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['way']} | {r['threads']} | {r['train']} | {r['dim']} | {r['train_s_per_epoch']:.4f} | "
              f"{r['utt_per_s']:,.0f} | {r['epoch_s_with_valid']:.4f} | {r['utt_per_s_with_valid']:,.0f} | "
              f"{100 * r['valid_ua']:.1f} |")
    print(f"speed-up per epoch (train): {rows[1]['utt_per_s'] / rows[0]['utt_per_s']:.1f}x; "
          f"with validation: {rows[1]['utt_per_s_with_valid'] / rows[0]['utt_per_s_with_valid']:.1f}x; "
          f"target >= 10,000 utt/s: {'met' if rows[1]['utt_per_s'] >= 10_000 else 'MISSED'}")


if __name__ == "__main__":
    main()
