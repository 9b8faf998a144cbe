"""Peak memory of ``sercache predict`` on one long recording: this checkout against the code before it streamed.

A small run is built once: the demo's random stand-in models (HuBERT and BERT 256-d, a CTC ASR model),
an 80-utterance synthetic IEMOCAP corpus, ``sercache extract`` (every stream) and a ``gate`` head
(fold 1, one epoch: the heads' weights do not change the memory). For each ``--minutes`` length a
16 kHz PCM16 noise recording is written block by block (this script never holds it), and
``sercache predict RUN WAV`` (whole-file prediction: one row, the head reads every frame) runs in its
own process, once with this checkout and once with ``--before`` (a git commit, checked out into a
folder of the work directory (``git archive``)); the peak RSS of that process alone is read from ``wait4``. Both write the same
table (the probabilities are compared).

``--head`` picks the run's head: ``gate`` (default), ``cmgi``, ``cmgi-sa`` (``cmgi`` with ``self_attn``: a
self-attention over every frame, evaluated a block of query rows at a time since issue 23's point 10), or ``mmer``
(its frames read a block at a time in evaluation: sercache/heads/mmer_streamed.py).

Target (issue 23): at most 2 GB for 2 hours (``--minutes 120``; the default lengths take minutes). Measured
(docs/benchmarks.md, 2 shared cores, 2026-12-04; before = main at 5992824):

    python benchmarks/predict_memory.py --minutes 120 --before main --workdir DIR
        120 min, gate: 1705 MB before, 1598 MB now (193 s)
    python benchmarks/predict_memory.py --head cmgi --minutes 120 --before main --workdir DIR
        120 min, cmgi: 4363 MB before, 1618 MB now (435 s)
    python benchmarks/predict_memory.py --head cmgi-sa --minutes 5 --before main --workdir DIR
        5 min, cmgi self_attn: 2420 MB before, 834 MB now
    python benchmarks/predict_memory.py --head mmer --minutes 5,15 --before 4db8305 --workdir DIR
        15 min, mmer: 2422 MB before, 1452 MB now; with --minutes 120 --before '': 1572 MB now

    python benchmarks/predict_memory.py [--minutes 5,15] [--head gate] [--before 75a2eea] [--workdir DIR]
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, benchmark_parser, machine, workdir

#: The last commit before predict streamed (issue 23, point 10).
BEFORE = "75a2eea"


#: ``--head`` choices: head name and hyperparameters (``cmgi-sa``: the self-attention version, frames x frames).
HEADS = {"gate": ("gate", {}), "cmgi": ("cmgi", {}), "cmgi-sa": ("cmgi", {"self_attn": True}), "mmer": ("mmer", {})}


def build_run(work: Path, label: str = "gate") -> Path:
    """A run of ``HEADS[label]`` on a small extracted cache (built once per work folder)."""
    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract
    from sercache.synthetic.corpus import iemocap_like, write_iemocap_tree
    from sercache.synthetic.models import make_tiny_models
    from sercache.training.run import TrainRequest, run_training

    corpus, cache, run = work / "corpus", work / "cache", work / "runs" / label
    head, hyper = HEADS[label]
    if not (corpus / "Session5").exists():
        write_iemocap_tree(corpus, iemocap_like(1, durations=(1.0, 2.0)))
    models = make_tiny_models(work / "models", width=256)
    if not (cache / "sercache.json").exists():
        run_extract(ExtractOptions(root=corpus, corpus="iemocap", out=cache, ssl_model=str(models["ssl"]),
                                   asr_model=str(models["asr"]), text_model=str(models["text"]), device="cpu",
                                   progress=False))
    if not (run / "config.json").exists():
        run_training(TrainRequest(cache=cache, head=head, out=run, fold="1", seeds=1, device="cpu", hyperparameters=hyper,
                                  train={"lr": 3e-3, "batch_size": 8, "epochs": 1}), progress=lambda m: None)
    return run


def write_noise(path: Path, minutes: float) -> Path:
    import numpy as np
    import soundfile as sf

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=16_000, channels=1, subtype="PCM_16") as fh:
        left = int(minutes * 60 * 16_000)
        while left > 0:  # a minute at a time
            n = min(60 * 16_000, left)
            fh.write((0.05 * rng.standard_normal(n)).astype("float32"))
            left -= n
    return path


def predict_peak(code: Path, run: Path, wav: Path, out: Path) -> tuple[float, float]:
    """(peak RSS MB, seconds) of one ``sercache predict`` process importing sercache from ``code``."""
    cmd = [sys.executable, "-m", "sercache", "predict", str(run), str(wav), "--device", "cpu", "--no-progress",
           "--out", str(out)]
    start = time.perf_counter()
    # run from the work folder: ``python -m`` puts the current folder first on sys.path, so started from the
    # repository's root both processes would import this checkout's sercache, whatever PYTHONPATH says
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=str(out.parent),
                            env={**os.environ, "PYTHONPATH": str(code)})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"predict ({code}) failed: {proc.stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024, seconds


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--minutes", default="5,15", help="recording lengths, comma-separated (120: the issue's 2 h)")
    ap.add_argument("--head", default="gate", choices=sorted(HEADS), help="the run's head (cmgi-sa: cmgi, self_attn)")
    ap.add_argument("--before", default=BEFORE, help="git commit to compare with ('' : this checkout alone)")
    args = ap.parse_args()
    import pandas as pd

    work = workdir(args.workdir, "predict-memory")
    run = build_run(work, args.head)
    codes = {"now": REPO}
    if args.before:
        old = work / f"before-{args.before}"
        if not (old / "sercache").exists():  # the package as it was, without touching the repository's worktrees
            old.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before, "sercache"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        codes["before"] = old
    print(f"machine: {machine()}; {args.head} run, 256-d stand-in models; whole-file predict, 16 kHz PCM16 noise; "
          f"before = {args.before or '-'}")
    print("| recording | audio MB at 16 kHz | before: peak RSS MB | now: peak RSS MB | now / before | seconds now |")
    print("|---|---|---|---|---|---|")
    for minutes in (float(m) for m in args.minutes.split(",")):
        wav = write_noise(work / f"rec-{minutes:g}min.wav", minutes)
        peaks, seconds, tables = {}, {}, {}
        for name, code in codes.items():
            out = work / f"pred-{args.head}-{name}-{minutes:g}.csv"
            peaks[name], seconds[name] = predict_peak(code, run, wav, out)
            tables[name] = pd.read_csv(out)
        if "before" in tables:
            same = (tables["now"].filter(like="prob_") - tables["before"].filter(like="prob_")).abs().max().max()
            assert same < 1e-4, f"{minutes:g} min: probabilities differ by {same}"
        before = peaks.get("before", float("nan"))
        print(f"| {minutes:g} min | {minutes * 60 * 16_000 * 4 / 2**20:.0f} | {before:.0f} | {peaks['now']:.0f} "
              f"| {peaks['now'] / before:.2f} | {seconds['now']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
