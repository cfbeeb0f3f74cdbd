#!/usr/bin/env bash
# Evaluates every new snapshot of a training run (real-speech remix + held-out synthetic), one thread,
# appending to RUN/eval.jsonl, every few minutes while training goes on.
#   nohup bash training/watch_eval.sh /work/runs/sep/run /work/runs/sep/corpus > /work/runs/sep/watch.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-/work/runs/sep/run}
CORPUS=${2:-/work/runs/sep/corpus}
PY=${PYTHON:-.venv/bin/python}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
while true; do
  nice -n 10 "$PY" bench/separation/eval.py --watch "$RUN" --corpus "$CORPUS" || true
  sleep "${INTERVAL_S:-240}"
done
