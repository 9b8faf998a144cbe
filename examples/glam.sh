#!/usr/bin/env bash
# GLAM (ICASSP 2022) and its baselines APCNN/MHCNN on 26-d MFCC, on the improvised, scripted and full subsets.
#   labels:   iemocap4-exc ("glam": happy = excited only, hap dropped)
#   folds:    GLAM's random utterance split, speaker-DEPENDENT: 80% train / 10% validation / 10% test,
#             3 random splits. GLAM picked the best epoch on the test split; we select on validation only.
#   also:     the same heads under 5-fold LOSO (speaker-independent), for comparison
# Usage: examples/glam.sh IEMOCAP_ROOT [CACHE] [RUNS] [--dry-run]
set -euo pipefail
source "$(dirname "$0")/_lib.sh" "$@"
ROOT=${1:?give the IEMOCAP_full_release folder}
CACHE=${2:-cache/iemocap}
RUNS=${3:-runs/glam}

run sercache extract "$ROOT" --corpus iemocap --out "$CACHE" --streams mfcc --mfcc-coefficients 26
for subset in impro script all; do
  for head in glam apcnn mhcnn; do
    run sercache train "$CACHE" --head "$head" --labels glam --subset "$subset" --protocol random \
      --ratios 0.8,0.1,0.1 --seeds 3 --out "$RUNS/$head-$subset-random"
  done
  run sercache report "$RUNS/glam-$subset-random" "$RUNS/apcnn-$subset-random" "$RUNS/mhcnn-$subset-random"
done
run sercache train "$CACHE" --head glam --labels glam --protocol loso --seeds 3 --out "$RUNS/glam-all-loso"
run sercache report "$RUNS/glam-all-loso"
