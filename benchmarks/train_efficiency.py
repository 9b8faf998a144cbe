"""Training efficiency of ``gate``: achieved GFLOP/s as a fraction of this machine's fp32 matmul peak.

Both are measured in the same run. The head trains from an in-memory fold (the trainer's own
data path and step) on 1024-d audio frames and 768-d text tokens with IEMOCAP durations; its
FLOPs are counted analytically per utterance:

* forward: text projection 2*Tt*768*1024; the audio gate's frame half 2*Ta*1024^2 and its context
  half on the text values before attention 2*Tt*1024^2 (``gated_attention``); the text gate
  4*Tt*1024^2; parameter-free attention both ways, the text-on-audio one carrying 2048-wide values,
  10*Ta*Tt*1024; (classifier negligible);
* backward: the same products' weight gradients, input gradients only where an input needs one
  (not the cached frames, not the data into the text projection), and the attention's twice over:
  2*Tt*768*1024 + 2*Ta*1024^2 + 12*Tt*1024^2 + 20*Ta*Tt*1024.

"useful" counts real frames only; "executed" counts the padded frames the batch computes too.

    python benchmarks/train_efficiency.py [--n 400] [--batch-sizes 2,8,32]
"""
from __future__ import annotations

import time

from _common import audio_text_data, benchmark_parser, gate_sized_cache, machine, sampled_rows, train_epoch, workdir


def matmul_peak(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9)
    return best


def gate_flops(ta: int, tt: int, d: int = 1024, dt: int = 768) -> float:
    forward = 2 * tt * dt * d + 2 * ta * d * d + 6 * tt * d * d + 10 * ta * tt * d
    backward = 2 * tt * dt * d + 2 * ta * d * d + 12 * tt * d * d + 20 * ta * tt * d
    return forward + backward


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--n", type=int, default=400, help="training utterances")
    ap.add_argument("--batch-sizes", default="2,8,32")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import numpy as np
    import torch

    from sercache.heads import get_head
    from sercache.training.data import bucket_batches

    rows = sampled_rows(args.jsonl, args.n, 0)
    work = workdir(args.workdir, "eff")
    data, _, _ = audio_text_data(gate_sized_cache(work / f"cache{args.n}", rows), args.device)
    peak = matmul_peak(torch.get_num_threads())
    idx = np.arange(len(data))
    ta, tt = data.lengths["audio"], data.lengths["text"]
    useful = float(sum(gate_flops(a, t) for a, t in zip(ta, tt)))
    print(f"# gate on {len(idx)} utterances (IEMOCAP durations; {ta.sum()} audio frames x 1024, {tt.sum()} text tokens "
          f"x 768); {machine()}")
    print(f"fp32 matmul peak (2048^3, measured now): {peak:.1f} GFLOP/s")
    print(f"{'batch':>5s} {'s/epoch':>8s} {'useful GFLOP/s':>15s} {'% of peak':>9s} {'executed GFLOP/s':>17s} "
          f"{'% of peak':>9s}")
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        torch.manual_seed(0)
        head = get_head("gate")(dims=data.dims, n_classes=4).to(data.device)
        opt = torch.optim.Adam(head.parameters(), lr=1e-5)
        rng = np.random.default_rng(0)
        batches = bucket_batches(data.length_of(idx), bs, rng)
        executed = sum(gate_flops(int(ta[b].max()), int(tt[b].max())) * len(b) for b in batches)
        for b in batches[:2]:  # warm-up
            head.training_step(data.batch(idx[b])).backward()
        seconds = train_epoch(head, opt, [lambda b=b: data.batch(idx[b]) for b in batches])
        if data.device.type == "cuda":
            torch.cuda.synchronize()
        u, e = useful / seconds / 1e9, executed / seconds / 1e9
        print(f"{bs:5d} {seconds:8.2f} {u:15.1f} {100 * u / peak:8.1f}% {e:17.1f} {100 * e / peak:8.1f}%")


if __name__ == "__main__":
    main()
