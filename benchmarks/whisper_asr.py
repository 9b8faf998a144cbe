"""Whisper transcripts on real speech: word error rate and speed, transformers against faster-whisper.

Default corpus ``../shared/data/emodb-2s`` (EmoDB, 535 utterances, ten fixed German sentences; the
gold text comes from the EmoDB reader's table of the sentences), default model
``../shared/models/whisper-base``. Everything on the transformers side runs through the CLI:

1. ``sercache extract ROOT --corpus emodb --streams asr --asr-model MODEL --asr-language de``, then
   ``sercache cache info``: the WER it prints, and seconds per utterance (the asr stream's time in
   the extract report, over the stored utterances: audio reading and model loading included).
2. The same with the language detected per utterance (no ``--asr-language``): WER and the
   detected languages.
3. ``--batches 1,8``: step 1 again at each batch size (``--batch-seconds 30 x N``: every clip is
   padded to Whisper's 30 s window), for the CPU batch default.
4. ``--asr-backend faster-whisper`` and ``faster-whisper-int8`` (CTranslate2), where the
   ``faster_whisper`` package is importable: step 1 again, then seconds per utterance, WER, and how
   many transcripts equal the transformers backend's. The one-off conversion of MODEL with
   ctranslate2's converter (into ``--workdir``/ctranslate2) happens before the timing; the backends
   then run in turn, ``--rounds`` times (a backend's figure is its median over the rounds); it works
   with transformers 5.24 and ctranslate2 4.8 as they are. faster-whisper pads the log-mel with
   zeros after normalising where transformers pads the audio, so transcripts of short clips can
   differ for that reason alone (../shared/models/README.md).

EmoDB-2s's clips are cut to 2 s, so many sentences are truncated while the gold text is the whole
sentence: the missing words count as deletions, and the WER is far above Whisper's on whole
sentences. ``--limit N`` takes N clips spread over the corpus (a quick look).

    python benchmarks/whisper_asr.py [--root DIR] [--model DIR] [--limit N] [--batches 1,8]
        [--backends faster-whisper,faster-whisper-int8] [--rounds 2] [--skip-detect] [--workdir DIR]
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from _common import REPO, benchmark_parser, machine, workdir

DEFAULT_ROOT = REPO.parent / "shared" / "data" / "emodb-2s"
DEFAULT_MODEL = REPO.parent / "shared" / "models" / "whisper-base"


def sercache_cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "sercache", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        sys.exit(f"sercache {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def subset_corpus(root: Path, limit: int | None, work: Path) -> Path:
    """``root`` itself, or an EmoDB-layout folder of links to ``limit`` of its clips, spread over the corpus."""
    if not limit:
        return root
    wavs = sorted((root / "wav").glob("*.wav"))
    chosen = wavs[:: max(1, len(wavs) // limit)][:limit]
    out = work / f"corpus-{limit}"
    (out / "wav").mkdir(parents=True, exist_ok=True)
    for wav in chosen:
        if not (out / "wav" / wav.name).exists():
            (out / "wav" / wav.name).symlink_to(wav.resolve())
    return out


def extract(corpus: Path, cache: Path, model: Path, *more: str) -> float:
    """Runs the CLI; returns the asr stream's seconds per stored utterance."""
    shutil.rmtree(cache, ignore_errors=True)
    out = sercache_cli("extract", str(corpus), "--corpus", "emodb", "--out", str(cache), "--streams", "asr",
                       "--asr-model", str(model), "--device", "cpu", "--no-progress", *more)
    row = next(line.split() for line in out.splitlines() if re.match(r"\s*\S+\s+asr\s+extracted", line))
    stored, seconds = int(row[3]), float(row[6])
    return seconds / stored


def wer_lines(cache: Path) -> list[str]:
    """``sercache cache info``'s WER table, as printed."""
    lines = sercache_cli("cache", "info", str(cache)).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ASR word error rate"))
    return [line for line in lines[start:start + 3] if line.strip()]


def hypotheses(cache: Path) -> dict[str, tuple[str, str]]:
    """utt_id -> (transcript, language) from a cache's asr stream."""
    from sercache.features.asr_report import transcripts
    from sercache.store import open_cache

    with open_cache(cache) as c:
        df = transcripts(c, "asr")
    return {r.utt_id: (r.text, r.language) for r in df.itertuples()}


def cache_wer(cache: Path) -> float:
    """The corpus WER of a cache's asr stream (what ``cache info`` prints as its total)."""
    from sercache.features.asr_report import wer_by_shard
    from sercache.store import open_cache

    with open_cache(cache) as c:
        w = wer_by_shard(c, "asr")
    return float(w.word_errors.sum() / w.ref_words.sum())


def convert_for_faster_whisper(model: Path) -> None:
    """The backend's one-off CTranslate2 conversion, done before anything is timed."""
    from sercache.features.streams import Runtime, build_extractor
    from sercache.features.streams.asr import ASRConfig

    build_extractor("asr", ASRConfig(model=str(model), backend="faster-whisper"), Runtime("cpu")).load()


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--root", default=str(DEFAULT_ROOT), help="EmoDB folder (wav/SSTTTEV.wav)")
    ap.add_argument("--model", default=str(DEFAULT_MODEL), help="a Whisper model folder (transformers layout)")
    ap.add_argument("--limit", type=int, default=None, help="only this many clips, spread over the corpus")
    ap.add_argument("--batches", default="", help="batch sizes to time, e.g. 1,8 (default: only the CPU default)")
    ap.add_argument("--backends", default="faster-whisper,faster-whisper-int8",
                    help="--asr-backend values to compare with transformers (need faster-whisper)")
    ap.add_argument("--skip-detect", action="store_true", help="skip the language-detection run")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the backend timing (each backend once per round)")
    args = ap.parse_args()
    work = workdir(args.workdir, "whisper-asr")
    root, model = Path(args.root), Path(args.model)
    for path in (root, model):
        if not path.exists():
            sys.exit(f"{path} not found")
    corpus = subset_corpus(root, args.limit, work)
    print(f"# Whisper ASR on {root.name} ({args.limit or 'all'} clips), model {model.name}; {machine()}")

    given = work / "cache-de"
    given_per_utt = extract(corpus, given, model, "--asr-language", "de")
    print(f"\n## transformers generate, --asr-language de: {given_per_utt:.2f} s per utterance (CPU batch default)")
    print("\n".join(wer_lines(given)))
    reference = hypotheses(given)

    if not args.skip_detect:
        detected = work / "cache-detect"
        per_utt = extract(corpus, detected, model)
        found = hypotheses(detected)
        languages = sorted({lang for _, lang in found.values()})
        counts = ", ".join(f"{lang}: {sum(v[1] == lang for v in found.values())}" for lang in languages)
        print(f"\n## transformers generate, language detected: {per_utt:.2f} s per utterance; detected {counts}")
        print("\n".join(wer_lines(detected)))

    for batch in [int(b) for b in args.batches.split(",") if b.strip()]:
        per_utt = extract(corpus, work / f"cache-batch{batch}", model, "--asr-language", "de",
                          "--batch-seconds", str(30 * batch))
        print(f"\n## batch {batch}: {per_utt:.2f} s per utterance")

    try:
        import faster_whisper  # noqa: F401
    except ImportError:
        print("\n## faster-whisper: not installed here (pip install 'sercache[faster-whisper]'); skipped")
        return
    os.environ.setdefault("SERCACHE_CT2_CACHE", str(work / "ctranslate2"))
    convert_for_faster_whisper(model)
    ours = {u: text for u, (text, _) in reference.items()}
    backends = ["transformers", *[b for b in args.backends.split(",") if b]]
    # Side by side: every round runs each backend once, in turn, so a change of the machine's load falls on
    # all of them; a backend's figure is its median over the rounds (round 1 of transformers is the run above).
    seconds = {b: [] for b in backends}
    seconds["transformers"].append(given_per_utt)
    for round_ in range(args.rounds):
        for backend in backends:
            if round_ == 0 and backend == "transformers":
                continue
            cache = work / f"cache-{backend}"
            seconds[backend].append(extract(corpus, cache, model, "--asr-language", "de", "--asr-backend", backend))
    print("\n## --asr-backend, language de, greedy; identical: transcripts equal to transformers generate's")
    print(f"s/utt: the median of {args.rounds} round(s), each backend once per round in turn (each round's figure in brackets)")
    print(f"{'backend':<22} {'s/utt':>7} {'vs transformers':>16} {'WER':>7} {'identical':>10}  rounds")
    base = float(np.median(seconds["transformers"]))
    for backend in backends:
        cache = given if backend == "transformers" else work / f"cache-{backend}"
        texts = {u: text for u, (text, _) in hypotheses(cache).items()}
        same = sum(texts[u] == ours.get(u) for u in texts)
        median = float(np.median(seconds[backend]))
        rounds = ", ".join(f"{x:.2f}" for x in seconds[backend])
        print(f"{backend:<22} {median:>7.2f} {base / median:>15.2f}x {100 * cache_wer(cache):>6.1f}% "
              f"{same:>4}/{len(texts)}  [{rounds}]")


if __name__ == "__main__":
    main()
