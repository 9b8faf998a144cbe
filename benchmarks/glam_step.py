"""The GLAM family's training step: sercache's segment batches vs the bare network, and vs the old way.

A synthetic cache of ``--utterances`` IEMOCAP-length utterances (durations drawn from the real
list) with a 26-d MFCC stream. For each head (glam, apcnn, mhcnn) at its reference recipe, the
same segment batches (the head's batch size, one seeded shuffle of every training segment) go
through:

* bare: the network's forward + cross-entropy + backward on ready-made input images (no gather,
  no mixup, no optimizer step): the floor;
* sercache: one epoch of the trainer's own loop (``fit_epochs``: gather from the fold's frame
  block, z-scoring, mixup, forward, backward, optimizer step);
* old: the previous loop, batches of 2 utterances whose segments are cut inside the head.

Figures are milliseconds per segment (best of ``--repeats``), the sercache/bare ratio (target
<= 1.3) and the cost of APCNN's paper input (a 161-bin spectrogram at 100 frames/s) against MFCC.

    python benchmarks/glam_step.py [--utterances 120] [--repeats 2] [--workdir DIR]
"""
from __future__ import annotations

import time

from _common import benchmark_parser, machine, sampled_rows, workdir


def build_cache(path, rows):  # noqa: ANN001, ANN201
    from sercache.synthetic.cache import SyntheticStream, manifest_from_rows, write_synthetic_cache

    if not (path / "sercache.json").exists():
        write_synthetic_cache(path, manifest_from_rows(rows), [SyntheticStream("mfcc", "mfcc", 26, dtype="float32")])
    return path


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--utterances", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import torch
    import torch.nn.functional as F

    import sercache
    from sercache.heads import get_head
    from sercache.splits import get_preset
    from sercache.training.data import InMemoryData, bucket_batches, labelled_utterances
    from sercache.training.epochs import Progress, fit_epochs
    from sercache.training.roles import resolve_roles
    from sercache.training.segments import SegmentTable
    from sercache.training.train_config import TrainConfig
    from sercache.training.trainer import evaluate

    work = workdir(args.workdir, "glam-step")
    cache_dir = build_cache(work / "cache", sampled_rows(args.jsonl, args.utterances, seed=0))
    cache = sercache.open_cache(cache_dir)
    preset = get_preset("iemocap4")
    roles = resolve_roles(cache, ("mfcc",), (), {}, {})
    table = labelled_utterances(cache, preset, roles)
    data = InMemoryData(cache, table, roles, preset)
    tr = np.arange(len(table))
    audio_s = float(table.duration_s.sum())
    print(f"machine: {machine()}; {len(tr)} utterances, {audio_s:.0f} s of audio (IEMOCAP durations)")
    print("| head | segments/epoch | batch | bare ms/seg | sercache ms/seg | sercache / bare | old ms/seg (2 utts/batch) "
          "| old / sercache |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("glam", "apcnn", "mhcnn"):
        cls = get_head(name)
        cfg = TrainConfig.for_head(name, {"epochs": 1})
        data.normalization = data.fit_normalization(tr) if cfg.normalize else None

        def fresh(cls=cls):  # noqa: ANN001, ANN202
            torch.manual_seed(0)
            return cls(dims=data.dims, n_classes=4)

        head = fresh()
        segs = SegmentTable(data, "mfcc", tr, head.segment_frames, head.hop_frames)
        batches = segs.batches(cfg.batch_size, np.random.default_rng(0))
        images = [(head.images(*segs.gather(b)[:2]).detach(), segs.gather(b)[2]) for b in batches]
        best = {"bare": np.inf, "sercache": np.inf, "old": np.inf}
        for _ in range(args.repeats):
            net = fresh().train()
            start = time.perf_counter()
            for x, y in images:
                loss = F.cross_entropy(net.net(x), y)
                net.zero_grad(set_to_none=True)
                loss.backward()
            best["bare"] = min(best["bare"], time.perf_counter() - start)
            result = fit_epochs(fresh(), data, cfg, tr, None, epochs=1, seed=0, evaluate=evaluate,
                                progress=Progress(None), log=lambda m: None, where=name)
            best["sercache"] = min(best["sercache"], result.curve[0]["train_seconds"])
            old = fresh().train()
            opt = torch.optim.Adam(old.parameters(), lr=1e-3)
            start = time.perf_counter()
            for b in bucket_batches(data.length_of(tr), 2, np.random.default_rng(0)):
                loss = old.training_step(data.batch(tr[b]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            best["old"] = min(best["old"], time.perf_counter() - start)
        n = len(segs)
        ms = {k: 1000 * v / n for k, v in best.items()}
        print(f"| {name} | {n} | {cfg.batch_size} | {ms['bare']:.2f} | {ms['sercache']:.2f} | "
              f"{ms['sercache'] / ms['bare']:.2f} | {ms['old']:.2f} | {ms['old'] / ms['sercache']:.2f} |")

    # APCNN's paper input against MFCC: the bare network per 2 s segment at each input size
    net = get_head("apcnn")({"mfcc": 26}, 4).net.train()
    for label, shape in (("MFCC 26 x 63", (26, 63)), ("spectrogram 161 x 201", (161, 201))):
        x, y = torch.randn(128, 1, *shape), torch.randint(0, 4, (128,))
        times = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            loss = F.cross_entropy(net(x), y)
            net.zero_grad(set_to_none=True)
            loss.backward()
            times.append(time.perf_counter() - start)
        print(f"apcnn on {label}: {1000 * min(times[1:]) / 128:.2f} ms per segment (forward + backward, batch 128)")


if __name__ == "__main__":
    main()
