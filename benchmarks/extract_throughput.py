"""Extraction throughput: the sercache runner vs a plain per-utterance (batch-1) loop.

Same model (a HuBERT-base-sized random encoder, 12 x 768), same utterances (durations drawn
from the real IEMOCAP list), same machine, one run. Prints audio-seconds per wall-second for

* ``plain loop``: soundfile.read -> normalise -> model(x) -> last hidden state, nothing stored;
* ``sercache``: ``run_extract`` with its per-device defaults (manifest, checksums, decode-ahead
  thread, all-layer pooled statistics, staged writes, compaction: everything);
* ``sercache --batch-seconds B``: padded batches, for comparison,

and the share of the runner's wall time spent inside the model's forward.

    python benchmarks/extract_throughput.py [--n 100] [--batch-seconds 40] [--device cpu]
"""
from __future__ import annotations

import time

from _common import benchmark_parser, machine, sampled_rows, workdir


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--n", type=int, default=100, help="utterances")
    ap.add_argument("--batch-seconds", type=float, default=40.0, help="budget for the batched comparison run")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--norm", default="layer", choices=["layer", "group"], help="feature-encoder norm of the model")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each contender (best kept)")
    args = ap.parse_args()

    import numpy as np
    import soundfile as sf
    import torch
    from transformers import AutoModel, HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract
    from sercache.synthetic.corpus import SynthUtterance, write_iemocap_tree

    rows = sampled_rows(args.jsonl, args.n, 0)
    work = workdir(args.workdir, "bench")
    corpus = work / "corpus"
    utts = [SynthUtterance(r["utt_id"], r["emotion"], r["duration_s"]) for r in rows]
    if not corpus.exists():
        write_iemocap_tree(corpus, utts)
    model_dir = work / f"hubert-base-{args.norm}"
    if not model_dir.exists():
        torch.manual_seed(0)
        cfg = HubertConfig(feat_extract_norm=args.norm, do_stable_layer_norm=args.norm == "layer",
                           conv_bias=args.norm == "layer")
        HubertModel(cfg).save_pretrained(model_dir)
        Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=args.norm == "layer").save_pretrained(model_dir)
    audio_seconds = sum(u.duration_s for u in utts)
    wavs = sorted(corpus.rglob("*.wav"))
    device = torch.device(args.device)
    print(f"# {len(utts)} utterances, {audio_seconds:.0f} s of audio; model 12x768 ({args.norm} norm); {machine()}")

    def plain_loop() -> float:
        """What per-utterance extraction scripts do: load the model, then read/normalise/forward each file."""
        start = time.perf_counter()
        model = AutoModel.from_pretrained(model_dir).eval().to(device)
        with torch.inference_mode():
            for p in wavs:
                wave, sr = sf.read(p, dtype="float32")
                wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
                out = model(torch.from_numpy(wave)[None].to(device), output_hidden_states=True)
                _ = out.hidden_states[-1][0].float().cpu().numpy()
        return time.perf_counter() - start

    forward = {"t": 0.0}

    def timed_runs(batch_seconds: float | None, tag: str) -> float:
        out = work / f"cache-{tag}"
        import shutil

        shutil.rmtree(out, ignore_errors=True)
        import sercache.features.ssl as ssl_mod

        original = ssl_mod.load_audio_encoder

        def instrumented(name: str, *, ctc: bool = False):  # noqa: ANN202 - time each forward
            m = original(name, ctc=ctc)
            state = {}

            def pre(_m, _i):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                state["t"] = time.perf_counter()

            def post(_m, _i, _o):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                forward["t"] += time.perf_counter() - state["t"]

            m.register_forward_pre_hook(pre)
            m.register_forward_hook(post)
            return m

        ssl_mod.load_audio_encoder = instrumented
        forward["t"] = 0.0
        try:
            start = time.perf_counter()
            run_extract(ExtractOptions(root=corpus, corpus="iemocap", out=out, streams=("ssl",), ssl_model=str(model_dir),
                                       device=args.device, precision=args.precision, batch_seconds=batch_seconds,
                                       progress=False))
            return time.perf_counter() - start
        finally:
            ssl_mod.load_audio_encoder = original

    # alternate the two contenders and keep each one's best run: shared machines drift
    plain_runs, runner_runs = [], []
    for _ in range(args.repeats):
        plain_runs.append(plain_loop())
        runner_runs.append((timed_runs(None, "default"), forward["t"]))
    plain = min(plain_runs)
    runner, runner_forward = min(runner_runs)
    batched = timed_runs(args.batch_seconds, "batched")
    print(f"{'method':36s} {'wall s':>8s} {'audio-s/s':>10s} {'vs plain':>9s}")
    for name, t in [(f"plain batch-1 loop (best of {args.repeats})", plain), (f"sercache default (best of {args.repeats})", runner),
                    (f"sercache --batch-seconds {args.batch_seconds:g}", batched)]:
        print(f"{name:36s} {t:8.1f} {audio_seconds / t:10.1f} {plain / t:8.2f}x")
    print(f"model forward share of sercache wall time: {100 * runner_forward / runner:.1f}% "
          f"({runner_forward:.1f} s of {runner:.1f} s; the rest: manifest + checksums, model load, pooling, writes)")


if __name__ == "__main__":
    main()
