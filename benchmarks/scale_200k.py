"""MSP-Podcast-sized caches: does every step grow at most linearly from 20k to 200k utterances?

Writes a synthetic cache directly (no encoders: small dims, short utterances, the real store writer)
at each size, then times, in this process with the page cache warm:

- ``open_cache`` (the reader joining shard indexes);
- ``cache info`` (the summary ``sercache cache info`` prints);
- ``cache verify`` (with its checksum pass, reported in GB/s, and without);
- building LOSO (5 sessions) and leave-one-speaker-out (10 speakers) folds;
- loading one LOSO fold into memory for a pooled head (``linear``) and a frame head (``gate``);
- ``sercache report`` of a ``linear`` run over all LOSO folds (one seed, 2 epochs: what is timed is the
  report over 200k test predictions, with bootstrap CIs over them).

Target: each step's 200k / 20k ratio <= 12 and none over 60 s at 200k (verify's checksum pass
excepted; its throughput is what matters).

    python benchmarks/scale_200k.py [--sizes 20000,200000] [--workdir DIR]
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
from _common import benchmark_parser, machine, workdir

LABELS = {"neu": 0.309, "hap": 0.296, "ang": 0.199, "sad": 0.196}  # IEMOCAP 4-class shares


def manifest(n: int, seed: int = 0):  # noqa: ANN201
    from sercache.synthetic.cache import manifest_from_rows

    rng = np.random.default_rng(seed)
    labels = rng.choice(list(LABELS), size=n, p=list(LABELS.values()))
    durations = np.round(rng.uniform(0.3, 1.0, size=n), 3)
    rows = []
    for i in range(n):
        session, gender = i % 5 + 1, "FM"[(i // 5) % 2]
        speaker = f"Ses{session:02d}{gender}"
        rows.append({"utt_id": f"{speaker}_u{i:07d}", "session": session, "speaker": speaker, "gender": gender,
                     "dialog_type": "impro", "duration_s": float(durations[i]), "emotion": str(labels[i])})
    return manifest_from_rows(rows)


def build(out: Path, n: int) -> float:
    from sercache.synthetic.cache import SyntheticStream, write_synthetic_cache

    start = time.perf_counter()
    write_synthetic_cache(out, manifest(n), [SyntheticStream("ssl", "ssl", 8, (0,)),
                                             SyntheticStream("text_asr", "text", 8)])
    return time.perf_counter() - start


def timed(fn, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN201
    start = time.perf_counter()
    value = fn(*args, **kw)
    return time.perf_counter() - start, value


def measure(cache: Path, runs: Path) -> dict[str, float | str]:
    import sercache
    from sercache.features.cache_info import cache_summary, format_summary
    from sercache.heads import get_head
    from sercache.runs.report import make_report
    from sercache.splits import get_preset, make_folds
    from sercache.store.verify import verify_cache
    from sercache.training.data import labelled_utterances
    from sercache.training.pooled import load_fold
    from sercache.training.roles import resolve_roles
    from sercache.training.run import TrainRequest, run_training

    out: dict[str, float | str] = {}
    out["open_cache"], store = timed(sercache.open_cache, cache)
    out["cache info"], _ = timed(lambda: format_summary(cache_summary(cache)))
    size = sum(p.stat().st_size for p in cache.rglob("*.h5"))
    seconds, problems = timed(verify_cache, cache, checksums=True)
    assert not problems, problems[:3]
    out["cache verify (checksums)"] = seconds
    out["verify GB/s"] = f"{size / seconds / 1e9:.2f}"
    out["cache verify --no-checksums"], _ = timed(verify_cache, cache, checksums=False)
    preset = get_preset("iemocap4")
    for head in ("linear", "gate"):
        cls = get_head(head)
        hyper = cls.hyperparameters()
        roles = resolve_roles(store, cls.required_roles(hyper), cls.multi_layer_roles, {"text": "text_asr"}, {},
                              pooled=cls.pooled_input)
        table = labelled_utterances(store, preset, roles)
        if head == "linear":
            out["LOSO folds"], folds = timed(make_folds, table, "loso")
            out["speaker folds"], _ = timed(make_folds, table, "lospk")
        fold = folds[0]
        ids = set(fold.train) | set(fold.valid) | set(fold.test)
        rows = table[table.utt_id.isin(ids)]
        out[f"load one fold ({head})"], _ = timed(load_fold, store, rows, roles, preset, cls, hyper, "cpu")
    store.close()
    run = runs / f"linear-{cache.name}"
    shutil.rmtree(run, ignore_errors=True)  # trained afresh each time: a resumed run would time nothing
    start = time.perf_counter()
    run_training(TrainRequest(cache=cache, head="linear", out=run, protocol="loso", seeds=1, device="cpu",
                              train={"epochs": 2}, progress_every=None), progress=lambda m: None)
    out["(train linear 2 epochs, 5 folds)"] = time.perf_counter() - start
    out["report"], _ = timed(make_report, [run])
    return out


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--sizes", default="20000,200000", help="utterance counts, smallest first")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = workdir(args.workdir, "scale")
    print(f"# {machine()}; synthetic caches: ssl (dim 8, 1 layer) + text (dim 8), 0.3-1.0 s utterances")
    results = {}
    for n in sizes:
        cache = work / f"cache_{n}"
        if not (cache / "sercache.json").exists():
            print(f"writing {n} utterances ...", flush=True)
            print(f"  written in {build(cache, n):.1f} s", flush=True)
        results[n] = measure(cache, work / "runs")
        print(f"{n}: " + ", ".join(f"{k} {v if isinstance(v, str) else f'{v:.2f} s'}" for k, v in results[n].items()),
              flush=True)
    small, big = sizes[0], sizes[-1]
    print(f"\n| step | {small:,} | {big:,} | ratio |\n|---|---:|---:|---:|")
    for step in results[big]:
        a, b = results[small][step], results[big][step]
        if isinstance(b, str):
            print(f"| {step} | {a} | {b} | |")
        else:
            within = b / max(a, 1e-9) <= 12 * big / small / 10 and (b <= 60 or "checksums" in step)
            flag = "" if within or step.startswith("(") else " **!**"  # (...): context, not a target
            print(f"| {step} | {a:.2f} s | {b:.2f} s | {b / max(a, 1e-9):.1f}x{flag} |")


if __name__ == "__main__":
    main()
