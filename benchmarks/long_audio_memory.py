"""Peak memory of ``sercache extract`` on one long recording against a 10-second one.

Two one-file corpora (CSV manifests): a 10-second file and a ``--hours`` long one (default 3 h),
both low-level noise at ``--rate`` Hz with ``--channels`` channels, written block by block. Each is
extracted by ``sercache extract`` (the CLI, in its own process) with ``--streams`` (default: a small
random HuBERT with its pooled statistics of every layer, a small random CTC ASR model and the tiny
text model on its transcript, MFCC and log-mel), and the peak RSS of that process alone is read
from ``wait4``. Target: the long file's peak at most 2 GB above the short file's.

The 16 kHz mono samples themselves are held whole (691 MB for 3 hours: every stream reads them);
everything else goes block by block or chunk by chunk (``sercache.features.longaudio``, the spectral
blocks, ``AudioEncoder.encode_long``).

    python benchmarks/long_audio_memory.py [--hours 3] [--rate 16000] [--channels 1]
        [--streams ssl,asr,text_asr,mfcc,logmel] [--workdir DIR]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, benchmark_parser, machine, workdir


def write_noise(path: Path, seconds: float, rate: int, channels: int) -> Path:
    import numpy as np
    import soundfile as sf

    if path.exists():
        return path
    rng = np.random.default_rng(0)
    block = rate * 60
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=channels, subtype="PCM_16") as fh:
        left = int(seconds * rate)
        while left > 0:
            n = min(block, left)
            fh.write((0.05 * rng.standard_normal((n, channels))).astype("float32"))
            left -= n
    return path


def extract_peak(corpus: Path, out: Path, streams: str, models: dict[str, Path]) -> tuple[float, float, int]:
    """(peak RSS MB, seconds, exit status) of one ``sercache extract`` process."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-m", "sercache", "extract", str(corpus), "--corpus", "csv", "--out", str(out),
           "--streams", streams, "--ssl-model", str(models["ssl"]), "--asr-model", str(models["asr"]),
           "--text-model", str(models["text"]), "--device", "cpu", "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"extract failed ({code}): {proc.stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024, seconds, code


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--rate", type=int, default=16_000)
    ap.add_argument("--channels", type=int, default=1)
    ap.add_argument("--streams", default="ssl,asr,text_asr,mfcc,logmel")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from sercache.synthetic.models import make_bert, make_ctc, make_hubert

    work = workdir(args.workdir, "long-audio")
    models = {"ssl": work / "hubert", "asr": work / "ctc", "text": work / "bert"}
    if not models["ssl"].exists():
        make_hubert(models["ssl"], hidden=64, layers=4)
        make_ctc(models["asr"])
        make_bert(models["text"])
    print(f"machine: {machine()}; streams {args.streams}; {args.rate} Hz, {args.channels} channel(s), PCM16 noise")
    print("| recording | audio MB at 16 kHz | peak RSS MB | seconds |\n|---|---|---|---|")
    peaks = {}
    for name, seconds in (("10 s", 10.0), (f"{args.hours:g} h", args.hours * 3600)):
        corpus = work / f"corpus-{int(seconds)}"
        corpus.mkdir(exist_ok=True)
        write_noise(corpus / "rec.wav", seconds, args.rate, args.channels)
        (corpus / "manifest.csv").write_text("utt_id,path,label\nrec,rec.wav,neu\n")
        peak, wall, _ = extract_peak(corpus, work / f"cache-{int(seconds)}", args.streams, models)
        peaks[name] = peak
        print(f"| {name} | {seconds * 16_000 * 4 / 2**20:.0f} | {peak:.0f} | {wall:.0f} |", flush=True)
    short, long = peaks["10 s"], peaks[f"{args.hours:g} h"]
    print(f"\nlong - short: {long - short:.0f} MB (target <= 2048 MB: {'met' if long - short <= 2048 else 'MISSED'})")


if __name__ == "__main__":
    main()
