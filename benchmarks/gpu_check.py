"""GPU checks, for the machines that have one (``benchmarks/gpu_check.sh`` runs this with the defaults):

1. reduced precision: ``--precision fp16`` and ``bf16`` extraction against fp32, max |diff| per layer
   (all 13 hidden states of a HuBERT-base-sized, layer-norm encoder, stored as float32);
2. batching: ``--batch-seconds 200`` against one utterance per batch with the same layer-norm encoder
   (attention masks, so padding does not change the numbers); target >= 3x;
3. training: a 5-fold LOSO ``gate`` run with the fold resident on the device, against the CPU.

Random weights (no hub here): cost and numerical agreement are measured, not accuracy.

    python benchmarks/gpu_check.py [--n 200] [--device cuda] [--workdir DIR]
    python benchmarks/gpu_check.py --device cpu --n 20 --precisions bf16   # a dry run of the script on a CPU
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from _common import benchmark_parser, machine, sampled_rows, workdir


def layer_norm_base_hubert(path: Path) -> Path:
    import torch
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    if not (path / "config.json").exists():
        torch.manual_seed(0)
        HubertModel(HubertConfig(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)).save_pretrained(path)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True).save_pretrained(path)
    return path


def extract(corpus: Path, out: Path, models: dict[str, Path], device: str, precision: str, batch_seconds: float,
            streams: tuple[str, ...] = ("ssl",)) -> float:
    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract

    start = time.perf_counter()
    run_extract(ExtractOptions(root=corpus, corpus="iemocap", out=out, streams=streams, ssl_model=str(models["ssl"]),
                               asr_model=str(models["asr"]), text_model=str(models["text"]), layers="all",
                               dtype="float32", device=device, precision=precision, batch_seconds=batch_seconds,
                               progress=False))
    return time.perf_counter() - start


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--n", type=int, default=200, help="utterances (IEMOCAP durations)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precisions", default="fp16,bf16")
    ap.add_argument("--batch-seconds", type=float, default=200.0)
    ap.add_argument("--epochs", type=int, default=15, help="gate epochs per fold (its published default)")
    args = ap.parse_args()
    import numpy as np
    import torch

    import sercache
    from sercache.synthetic.corpus import SynthUtterance, write_iemocap_tree
    from sercache.synthetic.models import make_bert, make_ctc
    from sercache.training.run import TrainRequest, run_training

    work = workdir(args.workdir, "gpu")
    rows = sampled_rows(args.jsonl, args.n, 3)
    corpus = work / f"corpus{args.n}"
    if not corpus.exists():
        write_iemocap_tree(corpus, [SynthUtterance(r["utt_id"], r["emotion"], r["duration_s"]) for r in rows])
    models = {"ssl": layer_norm_base_hubert(work / "hubert-base-layernorm"), "asr": make_ctc(work / "ctc"),
              "text": make_bert(work / "bert")}
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"# {len(rows)} utterances ({sum(r['duration_s'] for r in rows):.0f} s); HuBERT-base-sized layer-norm "
          f"encoder, random weights; device {args.device} ({name}); {machine()}")
    results: dict[str, object] = {"device": name, "n": len(rows)}

    # 1. precision
    ref = work / "fp32"
    results["extract fp32 s (batch 1)"] = extract(corpus, ref, models, args.device, "fp32", 0)
    a = sercache.open_cache(ref)
    ids = a.utt_ids("ssl")
    for precision in args.precisions.split(","):
        out = work / precision
        results[f"extract {precision} s (batch 1)"] = extract(corpus, out, models, args.device, precision, 0)
        b = sercache.open_cache(out)
        diffs = []
        for layer in a.streams["ssl"].layers:
            x, _ = a.load("ssl", ids, layer)
            y, _ = b.load("ssl", ids, layer)
            diffs.append(float(np.abs(x.astype(np.float32) - y.astype(np.float32)).max()))
        results[f"{precision} max |diff| per layer"] = [round(d, 5) for d in diffs]
        print(f"{precision} vs fp32, max |diff| per layer 0..{len(diffs) - 1}: " + " ".join(f"{d:.4f}" for d in diffs))

    # 2. batching (same precision as the reference, so only the batching differs)
    batched = work / "batched"
    results[f"extract fp32 s (--batch-seconds {args.batch_seconds:g})"] = seconds = extract(
        corpus, batched, models, args.device, "fp32", args.batch_seconds)
    results["batched speed-up"] = round(results["extract fp32 s (batch 1)"] / seconds, 2)
    print(f"batched {seconds:.1f} s vs batch 1 {results['extract fp32 s (batch 1)']:.1f} s: "
          f"{results['batched speed-up']}x (target >= 3x)")

    # 3. gate, 5-fold LOSO, fold resident on the device vs the CPU
    full = work / "gate-cache"
    extract(corpus, full, models, args.device, "fp32", args.batch_seconds, streams=("ssl", "asr", "text_asr"))
    for device in dict.fromkeys([args.device, "cpu"]):
        start = time.perf_counter()
        _, res = run_training(TrainRequest(cache=full, head="gate", out=work / f"gate-{device.replace(':', '')}",
                                           seeds=1, device=device, train={"epochs": args.epochs},
                                           progress_every=None), progress=lambda m: None)
        results[f"gate 5-fold s on {device}"] = round(time.perf_counter() - start, 1)
        results[f"gate mean UA on {device}"] = round(float(np.mean([r["ua"] for r in res if r["ok"]])), 4)
        print(f"gate, 5 folds x 1 seed x {args.epochs} epochs on {device}: {results[f'gate 5-fold s on {device}']} s")
    (work / "gpu_check.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
