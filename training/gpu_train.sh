#!/usr/bin/env bash
# Train the separator on a lent GPU machine (no synthesisers, no network there), from files carried in
# .devcarry/ (ignored by git; made here first):
#   python -m training.pack_corpus pack /work/runs/sep/corpus .devcarry/corpus.npz --budget-mb 40
#   python bench/separation/eval.py --export-real .devcarry/real.npz
#   python bench/separation/adapt.py --export-streams .devcarry/streams.npz
#   cp <weights to start from> .devcarry/init.safetensors   # or .devcarry/last.pt to resume a run
# Then, on the device (run tool, carry .devcarry):  bash training/gpu_train.sh HOURS [train.py options]
# $OUT gets the log (progress bar apart), metrics.jsonl, last.pt (resume) and the last 7 snapshots (tar), and
# adapt.jsonl: the last snapshot adapted on the reference turns of the pyannote sample (adapt_sweep.py: adapt.py's
# 5 folds side by side on the GPU, about a minute).
set -euo pipefail
hours=$1; shift
export PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 -m training.pack_corpus unpack .devcarry/corpus.npz /tmp/corpus
run=/tmp/run; mkdir -p $run
if [ -f .devcarry/last.pt ]; then cp .devcarry/last.pt $run/; init=(); else init=(--init-from .devcarry/init.safetensors); fi
python3 -m training.train --corpus /tmp/corpus --run-dir $run "${init[@]}" --device "${DEVICE:-cuda}" --workers "${WORKERS:-14}" \
    --hours "$hours" --real-eval .devcarry/real.npz "$@" 2>"$OUT/progress.log" | tee "$OUT/train.log"
cp $run/last.pt $run/metrics.jsonl "$OUT/"
ls $run/snapshots | tail -n 7 | tar -cf "$OUT/snapshots.tar" -C $run/snapshots -T -
last=$(ls $run/snapshots/*.safetensors | tail -n 1)
python3 bench/separation/adapt_sweep.py --streams .devcarry/streams.npz --device "${DEVICE:-cuda}" --jobs 5 \
    --out "$OUT/adapt.jsonl" --recipe "last|--checkpoint $last ${ADAPT_ARGS:-}" | tail -n 1
