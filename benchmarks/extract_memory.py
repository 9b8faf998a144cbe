"""Peak resident memory of ``sercache extract`` at two corpus sizes (it must not grow with the corpus).

Each size runs in its own process (``ru_maxrss`` of that process alone). The model is a small
random HuBERT (4 x 256) storing every layer in fp16, so the features written are large next to
the model: if extraction held its output in memory, the peak would grow by the feature size.
The larger corpus repeats the smaller one's durations (200 drawn from IEMOCAP), so the longest
utterance, and with it the encoder's own activation peak, is the same at both sizes.

    python benchmarks/extract_memory.py [--sizes 200,1600]
"""
from __future__ import annotations

import json
import subprocess
import sys

from _common import REPO, benchmark_parser, machine, sampled_rows, workdir

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from sercache.extract.options import ExtractOptions
from sercache.extract.runner import run_extract
t = time.perf_counter()
report = run_extract(ExtractOptions(root={corpus!r}, corpus="csv", out={out!r}, streams=("ssl", "mfcc"),
                                    ssl_model={model!r}, layers="all", progress=False))
print(json.dumps({{"seconds": time.perf_counter() - t, "stored": report.stored, "failed": report.failed,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--sizes", default="200,1600")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from sercache.synthetic.corpus import SynthUtterance, write_csv_corpus
    from sercache.synthetic.models import make_hubert

    work = workdir(args.workdir, "mem")
    model = work / "hubert-4x256"
    if not model.exists():
        make_hubert(model, hidden=256, layers=4)
    rows = sampled_rows(args.jsonl, None, 0)
    print(f"# small random HuBERT (4 x 256, all 5 hidden states stored, fp16) + MFCC; {machine()}")
    print(f"{'utterances':>10s} {'audio h':>8s} {'features GB':>11s} {'peak RSS MB':>11s} {'seconds':>8s}")
    base = rows[: min(int(x) for x in args.sizes.split(","))]
    for n in (int(x) for x in args.sizes.split(",")):
        corpus, out = work / f"corpus{n}", work / f"cache{n}"
        durations = [base[i % len(base)]["duration_s"] for i in range(n)]
        if not (corpus / "manifest.csv").exists():
            write_csv_corpus(corpus, [SynthUtterance(f"utt{i:05d}", base[i % len(base)]["emotion"], d)
                                      for i, d in enumerate(durations)])
        subprocess.run(["rm", "-rf", str(out)], check=True)
        code = CHILD.format(repo=str(REPO), corpus=str(corpus / "manifest.csv"), out=str(out), model=str(model))
        res = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1])
        size = sum(p.stat().st_size for p in out.glob("*/*.h5")) / 1e9
        print(f"{n:10d} {sum(durations) / 3600:8.2f} {size:11.2f} {res['peak_rss_mb']:11.0f} {res['seconds']:8.0f}")

if __name__ == "__main__":
    main()
