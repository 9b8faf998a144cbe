#!/usr/bin/env bash
# Which HuBERT layer holds the emotion? A wsum probe over all layers, and a linear probe per layer.
#   features: every hidden state of HuBERT-large (25 x 1024-d, about 64 GB for IEMOCAP in fp16) in a stream
#             of its own, next to the default single-layer "ssl" stream
#   folds:    5-fold LOSO, 3 seeds; labels iemocap4
#   prints:   the wsum report (its learned layer weights are in each checkpoint) and one row per layer
#   cheaper:  pooled statistics of every layer are always stored, so notebooks/cache_analysis.ipynb gives a
#             logistic-regression layer curve with no extra extraction
# Usage: examples/wsum_layer_sweep.sh IEMOCAP_ROOT [CACHE] [RUNS] [--dry-run]
set -euo pipefail
source "$(dirname "$0")/_lib.sh" "$@"
ROOT=${1:?give the IEMOCAP_full_release folder}
CACHE=${2:-cache/iemocap}
RUNS=${3:-runs/layers}

run sercache extract "$ROOT" --corpus iemocap --out "$CACHE" --streams ssl --layers all \
  --stream-name ssl=hubert_all_layers --ssl-model "$SSL_MODEL"
run sercache train "$CACHE" --head wsum --audio-stream hubert_all_layers --fold all --seeds 3 --out "$RUNS/wsum"
runs=()
for layer in $(seq 0 24); do
  run sercache train "$CACHE" --head linear --audio-stream hubert_all_layers --layer "$layer" --fold all \
    --seeds 3 --out "$RUNS/linear-L$layer"
  runs+=("$RUNS/linear-L$layer")
done
run sercache report "$RUNS/wsum" "${runs[@]}" --format csv
