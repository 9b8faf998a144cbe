#!/usr/bin/env bash
# The GPU checks as one short script, for a machine with a CUDA device (see benchmarks/gpu_check.py):
# precision (fp16/bf16 vs fp32, per layer), batched vs batch-1 extraction, a 5-fold gate run on the GPU.
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (prints the figures and writes OUT_DIR/gpu_check.json)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-$(mktemp -d)}}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible: nothing to check')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python benchmarks/gpu_check.py --device cuda --n 200 --workdir "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
