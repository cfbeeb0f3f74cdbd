#!/usr/bin/env bash
# Continue a separator's training on a lent accelerator machine (no Debian voices, no network there).
# Here, first (the corpus packed to ~45 MB; .devcarry/ is ignored by git):
#   python -m training.corpus build --out /work/runs/real/corpus --kokoro-voices 40   # the committed line's recipe (3)
#   python -m training.pack_corpus pack /work/runs/real/corpus .devcarry/corpus.npz
# Then, on the device (run tool, carry .devcarry):
#   bash training/gpu_train.sh ARCH HOURS [training.train options]        # e.g. tfmask 0.15 --batch-size 64
# It resumes from .devcarry/ARCH.pt if there, else from the committed training/state/ARCH.pt (else starts anew),
# trains on cuda with WORKERS processes mixing, and leaves in $OUT: the state (ARCH.pt: copy it over
# training/state/ARCH.pt and commit), the best export, metrics.jsonl and the log, whose lines give steps/s.
set -euo pipefail
arch=$1; hours=$2; shift 2
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
PY=${PYTHON:-python3}
nvidia-smi -L || true
$PY -m training.pack_corpus unpack .devcarry/corpus.npz /tmp/corpus
mkdir -p /tmp/state
resume=()
for seed in ".devcarry/$arch.pt" "training/state/$arch.pt"; do
  if [ -f "$seed" ]; then cp "$seed" "/tmp/state/$arch.pt"; resume=(--resume); echo "resuming from $seed"; break; fi
done
[ ${#resume[@]} -eq 0 ] && resume=(--arch "$arch")
$PY -m training.train "${resume[@]}" --corpus /tmp/corpus --state "/tmp/state/$arch.pt" --run-dir /tmp/run \
  --device "${DEVICE:-cuda}" --workers "${WORKERS:-12}" --threads "${THREADS:-4}" --hours "$hours" \
  --valid-every-s "${VALID_EVERY_S:-120}" "$@" 2>&1 | tee "${OUT:-/tmp}/train.log"
cp /tmp/state/* /tmp/run/metrics.jsonl "${OUT:-/tmp}/"
grep "steps/s" "${OUT:-/tmp}/train.log" | tail -n 3
