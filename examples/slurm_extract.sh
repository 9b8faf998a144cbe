#!/usr/bin/env bash
# Extraction as a SLURM job array: task i extracts the deterministic slice i/N of the corpus into the
# same cache directory (one shard file set per slice, one writer per shard; the reader joins them).
# A task that dies is simply resubmitted: it resumes from its staged batches.
#SBATCH --job-name=sercache-extract
#SBATCH --array=1-8
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --time=02:00:00
# Usage: sbatch examples/slurm_extract.sh IEMOCAP_ROOT CACHE      (or: bash ... --dry-run)
set -euo pipefail
source "$(dirname "$0")/_lib.sh" "$@"
ROOT=${1:?give the corpus root}
CACHE=${2:?give the cache directory}
N=${SLURM_ARRAY_TASK_COUNT:-8}
I=${SLURM_ARRAY_TASK_ID:-1}

run sercache extract "$ROOT" --corpus iemocap --out "$CACHE" --shard "$I/$N" --device cuda \
  --streams ssl,asr,text_asr,text_gold,mfcc "${MODELS[@]}"
# when every task has finished:  sercache cache verify "$CACHE"
