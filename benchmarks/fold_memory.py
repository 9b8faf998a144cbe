"""Peak memory and time of holding a training fold in memory: sercache vs load-then-assemble.

Every utterance of an IEMOCAP-scale synthetic cache (the 5531 ids with their real durations,
1024-d fp16 audio frames at 50/s = 2.6 GB, and 768-d text tokens), as a ``--fold all`` run
holds each fold. Each way runs in its own process (``ru_maxrss`` of that process alone), warm
page cache, alternating, best of ``--repeats``:

* sercache: ``InMemoryData``: each layer read with ``load(..., out=)`` straight into its slice
  of one preallocated ``(layers, frames + 1, dim)`` block; NaN/inf checked in slices;
* naive: ``load`` each layer, check ``np.isfinite(frames).all()``, append a padding row with
  ``np.concatenate`` and ``np.stack`` the layers (what sercache itself did before).

Both verify checksums. Pass ``--workdir`` of ``full_protocol.py`` to reuse its cache.

    python benchmarks/fold_memory.py [--workdir DIR] [--repeats 2]
"""
from __future__ import annotations

import json
import subprocess
import sys

from _common import REPO, benchmark_parser, gate_sized_cache, iemocap_rows, machine, workdir

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
import numpy as np
import sercache
from sercache.splits import get_preset
from sercache.training.data import InMemoryData, labelled_utterances, resolve_roles

cache = sercache.open_cache({cache!r})
preset = get_preset("iemocap4")
roles = resolve_roles(cache, ("audio", "text"), (), {{"text": "text_asr"}}, {{}})
table = labelled_utterances(cache, preset, roles)
ids = table.utt_id.tolist()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
if {way!r} == "sercache":
    data = InMemoryData(cache, table, roles, preset)
    held = sum(f.nbytes for f in (t.numpy() for t in data._frames.values()))
else:
    held = 0
    for spec in roles.values():
        per_layer = []
        for layer in spec.layers:
            frames, offsets = cache.load(spec.stream, ids, layer=layer, verify=True)
            assert np.isfinite(frames).all()
            per_layer.append(np.concatenate([frames, np.zeros((1, frames.shape[1]), frames.dtype)]))
        block = np.stack(per_layer)
        held += block.nbytes
seconds = time.perf_counter() - start
print(json.dumps(dict(seconds=seconds, held_mb=held / 2**20, before_mb=before,
                      peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)))
"""


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    work = workdir(args.workdir, "foldmem")
    cache = gate_sized_cache(work / "cache", iemocap_rows(args.jsonl), signal=0.3)
    print(f"# every utterance of an IEMOCAP-scale cache (1024-d fp16 audio + 768-d text), warm; {machine()}")
    best: dict[str, dict] = {}
    for _ in range(args.repeats + 1):  # the first round warms the page cache and is dropped
        for way in ("sercache", "naive"):
            out = subprocess.run([sys.executable, "-c", CHILD.format(repo=str(REPO), cache=str(cache), way=way)],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            if _ > 0 and (way not in best or result["seconds"] < best[way]["seconds"]):
                best[way] = result
    print(f"{'way':10s} {'frames held MB':>15s} {'peak RSS MB':>12s} {'peak / held':>12s} {'seconds':>8s}")
    for way, r in best.items():
        print(f"{way:10s} {r['held_mb']:15.0f} {r['peak_mb']:12.0f} {r['peak_mb'] / r['held_mb']:12.2f} "
              f"{r['seconds']:8.1f}")
    s, n = best["sercache"], best["naive"]
    print(f"sercache: {n['peak_mb'] / s['peak_mb']:.1f}x less peak memory, {n['seconds'] / s['seconds']:.1f}x faster")


if __name__ == "__main__":
    main()
