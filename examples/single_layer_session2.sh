#!/usr/bin/env bash
# The single-layer paper's protocol: IEMOCAP Session 2 held out, gate vs its multi-layer baseline CmGI.
#   features: HuBERT-large last layer (1024-d) + BERT-base tokens of wav2vec2-large-960h ASR transcripts
#   labels:   iemocap4-fru (the paper's code merges frustration into angry)
#   folds:    test = Session 2; validation = 20% of the other sessions' utterances (speaker-dependent
#             validation, as in the paper); selection on validation only (the paper's code differs)
#   prints:   WA/UA per head, training time per epoch and test inference time, and the paired comparison
# Usage: examples/single_layer_session2.sh IEMOCAP_ROOT [CACHE] [RUNS] [--dry-run]
set -euo pipefail
source "$(dirname "$0")/_lib.sh" "$@"
ROOT=${1:?give the IEMOCAP_full_release folder}
CACHE=${2:-cache/iemocap}
RUNS=${3:-runs/single_layer}

run sercache extract "$ROOT" --corpus iemocap --out "$CACHE" --streams ssl,asr,text_asr "${MODELS[@]}"
for head in gate cmgi; do
  run sercache train "$CACHE" --head "$head" --protocol session-holdout --session 2 --labels iemocap4-fru \
    --text asr --seeds 3 --out "$RUNS/$head"
done
run sercache report "$RUNS/cmgi" "$RUNS/gate"
