"""Whisper's encoder at its full 30 s window against only the real audio (``--whisper-window``), in one run.

On EmoDB-2s (535 clips of 2 s, 10 speakers) by default:

1. ``sercache extract --streams whisper --whisper-layers all`` three times through the CLI: ``full``
   (every clip padded to the 30 s window, as Whisper was trained), ``audio`` (only the clip, clips
   batched by length: the default) and ``audio`` one clip at a time (``--batch-seconds 0``). Seconds
   per utterance are the whole command's wall time (corpus read, model load, writes) over the clips.
   The batched and one-at-a-time ``audio`` caches must hold the same numbers (batching is exact): their
   largest difference in any pooled statistic is printed.
2. The pooled heads on each window's features, all layers' statistics (``--layer all``) and the layer
   chosen on the validation speakers (``--layer select``), and ``wsum`` over every hidden state's frames,
   leave-one-speaker-out with the same folds for both windows: UA mean +- std over the 10 test speakers,
   and the standard error of the full window's mean (std / sqrt(folds)). ``audio`` is "within one SE"
   when its mean UA is at least the full window's minus that SE.

Extraction timings are kept in ``--workdir`` (``timings.json``) with the caches: a rerun in the same
workdir reuses both and says so.

    python benchmarks/whisper_window.py [--root DIR] [--model DIR] [--labels emodb7] [--workdir DIR]
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from _common import REPO, benchmark_parser, machine, workdir
from real_speech import DEFAULT_ROOT, fmt, recorded_seconds, run_metrics, sercache_cli, slug

DEFAULT_MODEL = REPO.parent / "shared" / "models" / "whisper-base"
#: (extraction name, sercache extract arguments)
EXTRACTIONS = [
    ("full", ["--whisper-window", "full"]),
    ("audio", ["--whisper-window", "audio"]),
    ("audio, one clip at a time", ["--whisper-window", "audio", "--batch-seconds", "0"]),
]
#: (row, sercache train arguments); deterministic heads train one seed
HEADS = [
    ("logreg, all layers", ["--head", "logreg", "--layer", "all", "--seeds", "1"]),
    ("logreg, layer selected on validation", ["--head", "logreg", "--layer", "select", "--seeds", "1"]),
    ("svm, all layers", ["--head", "svm", "--layer", "all", "--seeds", "1"]),
    ("linear, all layers", ["--head", "linear", "--layer", "all", "--seeds", "3"]),
    ("mlp, all layers", ["--head", "mlp", "--layer", "all", "--seeds", "3"]),
    ("wsum, every hidden state's frames", ["--head", "wsum", "--seeds", "1"]),
]


def extract(work: Path, root: str, corpus: str, model: str, name: str, extra: list[str]) -> tuple[Path, float, bool]:
    """The cache of one extraction and its wall seconds (measured now, or recorded when it was made here)."""
    timings_file = work / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    out = work / f"cache-{slug(name)}"
    if name in timings and (out / "sercache.json").exists():
        return out, timings[name], True
    seconds, _ = sercache_cli("extract", root, "--corpus", corpus, "--out", str(out), "--streams", "whisper",
                              "--whisper-model", model, "--whisper-layers", "all", "--device", "cpu", *extra,
                              "--no-progress")
    timings[name] = seconds
    timings_file.write_text(json.dumps(timings, indent=1))
    return out, seconds, False


def largest_difference(a: Path, b: Path) -> float:
    """Max |difference| of every pooled statistic of every layer between two caches of the same clips."""
    import numpy as np

    import sercache

    with sercache.open_cache(a) as ca, sercache.open_cache(b) as cb:
        ids = sorted(ca.utt_ids("whisper"))
        layers = ca.streams["whisper"].pooled_layers
        return max(float(np.abs(ca.pooled("whisper", k, "meanstd", ids).astype(np.float64)
                                - cb.pooled("whisper", k, "meanstd", ids).astype(np.float64)).max()) for k in layers)


def feature_change(full: Path, audio: Path) -> list[tuple[int, float, float]]:
    """Per hidden state: the median over clips of ``|audio - full| / |full|`` of the frames, and their mean cosine."""
    import numpy as np

    import sercache

    out = []
    with sercache.open_cache(full) as cf, sercache.open_cache(audio) as ca:
        ids = sorted(cf.utt_ids("whisper"))[::5]  # every fifth clip: enough for a median
        for k in cf.streams["whisper"].layers:
            rel, cos = [], []
            for u in ids:
                a = cf.frames("whisper", u, k).astype(np.float64)
                b = ca.frames("whisper", u, k).astype(np.float64)
                rel.append(np.linalg.norm(b - a) / np.linalg.norm(a))
                cos.append(float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))))
            out.append((k, float(np.median(rel)), float(np.mean(cos))))
    return out


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--corpus", default="emodb")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="a Whisper model folder (or hub id)")
    ap.add_argument("--labels", default="emodb7")
    ap.add_argument("--jobs", default="2")
    args = ap.parse_args()

    import numpy as np

    import sercache

    work = workdir(args.workdir, "whisper-window")
    print(f"machine: {machine()}; corpus {args.root} ({args.corpus}); model {args.model}; workdir {work}\n")
    caches, per_utt = {}, {}
    print("| extraction | s per utterance | vs full |\n|---|---|---|")
    for name, extra in EXTRACTIONS:
        caches[name], seconds, reused = extract(work, args.root, args.corpus, args.model, name, extra)
        with sercache.open_cache(caches[name]) as cache:
            per_utt[name] = seconds / len(cache.utt_ids("whisper"))
        note = " (timed when this workdir's cache was made)" if reused else ""
        print(f"| {name} | {per_utt[name]:.3f}{note} | {per_utt['full'] / per_utt[name]:.1f}x |", flush=True)
    speedup = per_utt["full"] / per_utt["audio"]
    print(f"\naudio window (default batching) vs full window: {speedup:.1f}x faster (target >= 5x: "
          f"{'met' if speedup >= 5 else 'MISSED'})")
    diff = largest_difference(caches["audio"], caches["audio, one clip at a time"])
    print(f"batched vs one clip at a time (audio window): largest pooled-statistic difference {diff:.3g} "
          "(fp16 storage; batching is exact up to float rounding)\n")
    print("How much the audio window changes the frames (every fifth clip):\n\n| hidden state | median relative "
          "difference | mean cosine per frame |\n|---|---|---|")
    for k, rel, cos in feature_change(caches["full"], caches["audio"]):
        print(f"| {k} | {rel:.3f} | {cos:.4f} |")
    print()

    print(f"| head ({args.labels}, leave one speaker out) | full UA % | audio UA % | audio - full | full SE | "
          "within 1 SE | wall s full / audio |\n|---|---|---|---|---|---|---|")
    summary = {"seconds_per_utterance": per_utt, "speedup": speedup, "batching_max_diff": diff, "heads": {}}
    for name, extra in HEADS:
        ua, wall = {}, {}
        for window in ("full", "audio"):
            out = work / "runs" / window / slug(name)
            start = time.perf_counter()
            # a run already in this workdir resumes (finished tasks kept): the wall time is the first run's
            sercache_cli("train", str(caches[window]), "--audio-stream", "whisper", *extra, "--protocol", "lospk",
                         "--labels", args.labels, "--jobs", args.jobs, "--out", str(out), "--device", "cpu",
                         "--no-progress")
            wall[window] = recorded_seconds(out, time.perf_counter() - start)
            ua[window], _ = run_metrics(out)
        full, audio = np.array(ua["full"]), np.array(ua["audio"])
        se = full.std(ddof=1) / np.sqrt(len(full))
        ok = audio.mean() >= full.mean() - se
        print(f"| {name} | {fmt(full)} | {fmt(audio)} | {100 * (audio.mean() - full.mean()):+.1f} | {100 * se:.1f} | "
              f"{'yes' if ok else 'NO'} | {wall['full']:.0f} / {wall['audio']:.0f} |", flush=True)
        summary["heads"][name] = {"full": full.tolist(), "audio": audio.tolist(), "within_one_se": bool(ok)}
    (work / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
