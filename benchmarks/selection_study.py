"""Choosing the defaults for validation and refit, without ever touching a reported test speaker.

The question (for speaker-independent corpora with few speakers, such as EmoDB's 10): how many
training speakers should validate, and should the selected model be refit on training +
validation before testing? To answer it without tuning on the figures ``real_speech.py`` reports,
every measurement here is *nested inside* a reported fold's training speakers:

    for each outer fold (test speaker s, never used below):
        the other speakers form an inner corpus; leave-one-speaker-out over it:
            inner test speaker t; validation: 1, 2 or 3 of the remaining speakers (the ones after t);
            train on the rest, select (epochs, or C/gamma) on validation, with and without refit;
            score UA on t.

Each cell is the mean inner-test UA over all (s, t) pairs (10 x 9 = 90 for EmoDB), with the
standard error over outer folds. ``sercache train``'s defaults come from this table.

    python benchmarks/selection_study.py --cache CACHE [--labels emodb7] [--heads svm,mlp]
        [--streams egemaps,compare,mfcc,logmel] [--workdir DIR]

CACHE: a cache of the corpus with those streams (``real_speech.py`` builds one in its workdir).
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from _common import benchmark_parser, machine

VALIDATION = (("1 speaker", "group", None), ("2 speakers", "speakers", 2), ("3 speakers", "speakers", 3))


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--labels", default="emodb7")
    ap.add_argument("--heads", default="svm,mlp")
    ap.add_argument("--streams", default="egemaps,compare,mfcc,logmel")
    ap.add_argument("--outer", type=int, default=None, help="only the first N outer folds (a quick look)")
    args = ap.parse_args()

    import numpy as np
    import torch

    import sercache
    from sercache.heads import get_head
    from sercache.splits import get_preset, make_folds
    from sercache.training.data import labelled_utterances
    from sercache.training.pooled import PooledData
    from sercache.training.roles import resolve_roles
    from sercache.training.train_config import TrainConfig
    from sercache.training.trainer import train_fold

    torch.set_num_threads(1)
    cache = sercache.open_cache(args.cache)
    preset = get_preset(args.labels)
    roles = resolve_roles(cache, ("audio",), (), {"audio": args.streams}, {}, pooled=True)
    table = labelled_utterances(cache, preset, roles)
    data = PooledData(cache, table, roles, preset)
    speakers = sorted(table.speaker.unique())[: args.outer] if args.outer else sorted(table.speaker.unique())
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="sercache-selection-"))
    print(f"machine: {machine()}; {args.cache}: {len(table)} utterances, {table.speaker.nunique()} speakers, "
          f"preset {preset.name}, streams {args.streams} ({data.dims['audio']} statistics)")
    print("| head | validation | refit | inner-test UA (mean over outer folds) | s.e. | pairs | seconds |")
    print("|---|---|---|---|---|---|---|")
    for head in args.heads.split(","):
        hyper = get_head(head).hyperparameters()
        for label, valid, n in VALIDATION:
            scores: dict[bool, list[list[float]]] = {False: [], True: []}
            start = time.perf_counter()
            for s in speakers:
                inner = table[table.speaker != s]
                folds = make_folds(inner, "lospk", valid=valid, valid_speakers=n)
                per_refit: dict[bool, list[float]] = {False: [], True: []}
                for f in folds:
                    for refit in (False, True):
                        cfg = TrainConfig.for_head(head, {"refit": refit})
                        m = train_fold(scratch / head / f"{s}-{f.name}-{refit}", head_name=head, hyperparameters=hyper,
                                       cfg=cfg, data=data, train_ids=f.train, valid_ids=f.valid, test_ids=f.test,
                                       seed=0, label_names=list(preset.classes), run_config={}, log=lambda m: None)
                        per_refit[refit].append(m["ua"])
                for refit in (False, True):
                    scores[refit].append(per_refit[refit])
            seconds = time.perf_counter() - start
            for refit in (False, True):
                outer_means = np.array([np.mean(v) for v in scores[refit]])
                se = outer_means.std(ddof=1) / np.sqrt(len(outer_means)) if len(outer_means) > 1 else float("nan")
                print(f"| {head} | {label} | {'yes' if refit else 'no'} | {100 * outer_means.mean():.2f} | "
                      f"{100 * se:.2f} | {sum(len(v) for v in scores[refit])} | {seconds / 2:.0f} |", flush=True)


if __name__ == "__main__":
    main()
