#!/usr/bin/env bash
# Builds the training corpus (if not complete) and trains / resumes the causal Conv-TasNet, on one core.
#   nohup bash training/run_training.sh [RUN_ROOT] [HOURS] > RUN_ROOT/nohup.log 2>&1 &
# Re-running it resumes from RUN_ROOT/run/last.pt. Needs training/setup_train.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-/work/runs/sep}
HOURS=${2:-8}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$ROOT"
if [ ! -f "$ROOT/corpus/rirs.npz" ]; then
  "$PY" -m training.data build --out "$ROOT/corpus"
fi
"$PY" -m training.train --corpus "$ROOT/corpus" --run-dir "$ROOT/run" --hours "$HOURS" \
  --threads 1 --checkpoint-every-s 300 ${TRAIN_ARGS:-}
