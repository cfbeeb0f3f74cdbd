#!/usr/bin/env bash
# Builds (or completes) the real-voice corpus and trains / resumes one separator on one CPU thread, in the
# background-friendly way the project runs it:
#   nohup bash training/run_training.sh ARCH [RUN_ROOT] [CPU_HOURS] > RUN_ROOT/ARCH.log 2>&1 &
# The run's state is RUN_ROOT/ARCH/state.pt (overwritten at every validation). If it does not exist yet, the
# committed training/state/ARCH.pt is copied there and resumed (a fresh clone continues where training stopped);
# with neither, a new run starts. To commit progress: cp RUN_ROOT/ARCH/state.pt training/state/ARCH.pt (and
# state.best.safetensors to training/state/ARCH.best.safetensors). Needs training/setup_train.sh first.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${1:?usage: run_training.sh ARCH [RUN_ROOT] [CPU_HOURS]}
ROOT=${2:-/work/runs/real}
CPU_HOURS=${3:-15}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD
mkdir -p "$ROOT/$ARCH"
# The corpus recipe of the committed line (states record it: recipe.hours, recipe.build): since 2026-12-07 recipe 3, the
# recorded actors + 40 blended Kokoro voices (bench/RESULTS.md, "Separator training on real voices", seventh session;
# ~35 min of one core the first time). The build is incremental (built speakers are kept), so an older corpus in the
# same folder is completed, not rebuilt.
CORPUS_ARGS=${CORPUS_ARGS:---kokoro-voices 40}
# shellcheck disable=SC2086
"$PY" -m training.corpus build --out "$ROOT/corpus" $CORPUS_ARGS
STATE="$ROOT/$ARCH/state.pt"
if [ ! -f "$STATE" ] && [ -f "training/state/$ARCH.pt" ]; then
  cp "training/state/$ARCH.pt" "$STATE"
  [ -f "training/state/$ARCH.best.safetensors" ] && cp "training/state/$ARCH.best.safetensors" "$ROOT/$ARCH/state.best.safetensors"
fi
if [ -f "$STATE" ]; then start=(--resume); else start=(--arch "$ARCH"); fi
exec "$PY" -m training.train "${start[@]}" --corpus "$ROOT/corpus" --state "$STATE" --run-dir "$ROOT/$ARCH" \
  --cpu-hours "$CPU_HOURS" --threads 1 --valid-every-cpu-s "${VALID_EVERY_CPU_S:-300}" ${TRAIN_ARGS:-}
