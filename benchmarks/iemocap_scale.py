"""IEMOCAP at full scale: the real 5531 ids in the release layout, extracted end to end.

Builds an IEMOCAP release tree (EmoEvaluation + transcription files, one wav per utterance)
from ``iemocap-4class.jsonl``: the real ids, sessions, speakers and labels, with synthetic
emotional audio whose durations are the real ones times ``--scale`` (1.0 = all 6.99 h).
Then, each as a separate command (so peak memory is per command):

1. ``sercache extract`` with every stream (tiny random stand-in models);
2. ``sercache cache info`` and ``sercache cache verify``;
3. a check that the reader yields exactly the 5531 ids, in every stream;
4. with ``--train``: ``sercache train --head H --fold all`` (5-fold LOSO) + ``sercache report``.

Prints wall time, peak resident memory and problems for each step.

    python benchmarks/iemocap_scale.py [--scale 0.1] [--train gate]
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from _common import REPO, benchmark_parser, iemocap_rows, machine, workdir


def run(cmd: list[str], log: Path) -> tuple[float, float, int, str]:
    """(seconds, peak RSS MB of this command, exit code, output)."""
    wrapper = ("import resource, subprocess, sys, json; p = subprocess.run(sys.argv[1:], capture_output=True, text=True);"
               "print(json.dumps({'rc': p.returncode, 'rss': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,"
               "'out': p.stdout, 'err': p.stderr[-4000:]}))")
    start = time.perf_counter()
    res = json.loads(subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True,
                                    check=True).stdout)
    seconds = time.perf_counter() - start
    log.write_text(res["out"] + "\n--- stderr ---\n" + res["err"])
    return seconds, res["rss"], res["rc"], res["out"]


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--scale", type=float, default=0.1, help="audio duration factor (1.0 = real durations)")
    ap.add_argument("--streams", default="ssl,asr,text_asr,text_gold,mfcc")
    ap.add_argument("--train", default="", help="comma list of heads to train on all LOSO folds afterwards")
    ap.add_argument("--train-args", default="--seeds 1 --jobs 2", help="extra arguments for sercache train")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from sercache.synthetic.corpus import SynthUtterance, write_iemocap_tree
    from sercache.synthetic.models import make_tiny_models

    rows = iemocap_rows(args.jsonl)
    work = workdir(args.workdir, "iemocap")
    corpus, cache = work / f"IEMOCAP_full_release_x{args.scale:g}", work / f"cache_x{args.scale:g}"
    models = make_tiny_models(work / "models")
    print(f"# {len(rows)} utterances, {sum(r['duration_s'] for r in rows) * args.scale / 3600:.2f} h of audio "
          f"(scale {args.scale:g}); tiny random stand-in models; {machine()}")
    if not (corpus / "Session5").exists():
        t = time.perf_counter()
        utts = [SynthUtterance(r["utt_id"], r["emotion"], r["duration_s"] * args.scale,
                               "i think so" if r["dialog_type"] == "impro" else "what do you want") for r in rows]
        write_iemocap_tree(corpus, utts)
        print(f"wrote the release tree in {time.perf_counter() - t:.0f} s")
    sercache = [sys.executable, "-m", "sercache"]
    steps = [("extract", [*sercache, "extract", str(corpus), "--corpus", "iemocap", "--out", str(cache), "--streams",
                          args.streams, "--ssl-model", str(models["ssl"]), "--asr-model", str(models["asr"]),
                          "--text-model", str(models["text"]), "--no-progress"]),
             ("cache info", [*sercache, "cache", "info", str(cache)]),
             ("cache verify", [*sercache, "cache", "verify", str(cache)])]
    for head in filter(None, args.train.split(",")):
        run_dir = work / f"run_{head}_x{args.scale:g}"
        steps.append((f"train {head}", [*sercache, "train", str(cache), "--head", head, "--fold", "all",
                                        "--out", str(run_dir), *args.train_args.split()]))
        steps.append((f"report {head}", [*sercache, "report", str(run_dir)]))
    print(f"{'step':16s} {'seconds':>8s} {'peak RSS MB':>11s} {'exit':>5s}")
    outputs = {}
    for name, cmd in steps:
        seconds, rss, rc, out = run(cmd, work / f"{name.replace(' ', '_')}.log")
        outputs[name] = out
        print(f"{name:16s} {seconds:8.1f} {rss:11.0f} {rc:5d}")
    print("\n" + outputs["cache info"].split("provenance:")[0].rstrip())

    import sercache as sc

    c = sc.open_cache(cache)
    expected = sorted(r["utt_id"] for r in rows)
    assert sorted(c.utterances.utt_id) == expected, "the manifest is not the 5531 ids"
    for name in c.streams:
        assert sorted(c.utt_ids(name)) == expected, f"stream {name} does not hold exactly the 5531 ids"
    counts = c.utterances.groupby("shard").size().to_dict()
    print(f"\nreader: {len(c.utterances)} utterances, every stream holds exactly the {len(expected)} ids; "
          f"per shard {counts}; problems recorded: {len(c.errors)}")
    for name in steps[3:]:
        if name[0].startswith("report"):
            print(f"\n{name[0]}:\n{outputs[name[0]]}")


if __name__ == "__main__":
    main()
