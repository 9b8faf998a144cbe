"""``gate`` vs ``cmgi``: training time per epoch and test-set inference time on the same cached features.

Both heads train through the trainer itself (``train_fold``) on the same in-memory fold of an
IEMOCAP-shaped synthetic cache: 1024-d audio frames at 50/s and 768-d text tokens, with real
IEMOCAP durations, the paper's batch size (2) and Adam. Runs alternate (gate, cmgi, gate,
cmgi...) and each head keeps its best figures, since shared machines drift.

The paper claims gate cuts training time by 43% and inference time by 38% against CmGI (with
end-to-end fine-tuning of the encoders, so its ratios include encoder time we do not spend).

    python benchmarks/gate_vs_cmgi.py [--n 600] [--epochs 2] [--repeats 2]
"""
from __future__ import annotations

from _common import audio_text_data, benchmark_parser, gate_sized_cache, machine, sampled_rows, workdir


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--n", type=int, default=600, help="utterances (70%% train, 10%% valid, 20%% test)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    from sercache.training.train_config import TrainConfig
    from sercache.training.trainer import train_fold

    rows = sampled_rows(args.jsonl, args.n, 1)
    work = workdir(args.workdir, "gvc")
    data, table, preset = audio_text_data(gate_sized_cache(work / f"cache{args.n}", rows), args.device)
    ids = table.utt_id.tolist()
    n_tr, n_va = int(0.7 * len(ids)), int(0.1 * len(ids))
    train, valid, test = ids[:n_tr], ids[n_tr:n_tr + n_va], ids[n_tr + n_va:]
    cfg = TrainConfig(optimizer="adam", lr=1e-5, batch_size=args.batch_size, epochs=args.epochs, patience=args.epochs)
    print(f"# {len(train)} train / {len(test)} test utterances, 1024-d audio + 768-d text, batch {args.batch_size}, "
          f"{args.epochs} epochs x {args.repeats} alternating repeats; {machine()}")
    best: dict[str, dict] = {}
    for r in range(args.repeats):
        for head in ("gate", "cmgi"):
            m = train_fold(work / f"run-{head}-{r}", head_name=head, hyperparameters={}, cfg=cfg, data=data,
                           train_ids=train, valid_ids=valid, test_ids=test, seed=0, label_names=list(preset.classes),
                           run_config={}, log=lambda msg: None)
            keep = best.setdefault(head, m)
            for k in ("train_seconds_per_epoch", "test_inference_seconds"):
                keep[k] = min(keep[k], m[k])
    g, c = best["gate"], best["cmgi"]
    print(f"{'head':6s} {'parameters':>11s} {'train s/epoch':>14s} {'test inference s':>17s}")
    for name, m in best.items():
        print(f"{name:6s} {m['n_parameters']:11d} {m['train_seconds_per_epoch']:14.2f} {m['test_inference_seconds']:17.3f}")
    cut_train = 1 - g["train_seconds_per_epoch"] / c["train_seconds_per_epoch"]
    cut_test = 1 - g["test_inference_seconds"] / c["test_inference_seconds"]
    print(f"gate vs cmgi: training time per epoch {100 * cut_train:.0f}% lower (paper: 43%), test inference time "
          f"{100 * cut_test:.0f}% lower (paper: 38%); ratios cmgi/gate {1 / (1 - cut_train):.2f}x and "
          f"{1 / (1 - cut_test):.2f}x")


if __name__ == "__main__":
    main()
