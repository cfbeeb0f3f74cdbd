#!/usr/bin/env bash
# Builds the CPU image with podman on a Debian bookworm base made here (debootstrap + podman import: no
# registry needed), runs it, checks /healthz and the container health check (with a non-default --port),
# streams the sample into it with `rtsep stream`, and runs `rtsep process` inside it on a mounted folder that
# the image's uid 10001 owns. Needs root, podman, runc, debootstrap, and the Debian mirror + PyPI.
# This machine (itself a container: cgroups v1 + v2 hybrid, no raising of rlimits) needs the build in chroot
# isolation and containers run by runc with rlimits no higher than ours: PODMAN_BUILD / PODMAN_RUN below.
#
#   bash bench/image.sh [WORKDIR]        (default /var/tmp/rtsep-image; the base rootfs is kept there)
#
# Prints one JSON line per step and a summary; exits non-zero at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/var/tmp/rtsep-image}
BASE=localhost/rtsep-base:bookworm
IMAGE=localhost/rtsep:cpu
PY=${PYTHON:-.venv/bin/python}
PODMAN_BUILD=${PODMAN_BUILD:---isolation=chroot}
# --format docker: the OCI image format has no HEALTHCHECK; podman drops it there
PODMAN_RUN=${PODMAN_RUN:---runtime runc --ulimit nofile=20000:20000 --ulimit nproc=4096:4096}
mkdir -p "$WORK"
step() { echo "{\"step\": \"$1\", \"at\": \"$(date -u +%H:%M:%S)\"${2:+, $2}}"; }

if ! podman image exists "$BASE"; then
  if [ ! -x "$WORK/rootfs/usr/bin/python3" ]; then
    step debootstrap
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
      bookworm "$WORK/rootfs" http://deb.debian.org/debian > "$WORK/debootstrap.log" 2>&1
  fi
  # this machine's own CA certificates (here: a TLS-intercepting egress) go into the base, and pip is told to
  # use the system bundle (its vendored certifi does not have them); a base made elsewhere needs neither
  if ls /usr/local/share/ca-certificates/*.crt > /dev/null 2>&1; then
    cp /usr/local/share/ca-certificates/*.crt "$WORK/rootfs/usr/local/share/ca-certificates/"
    chroot "$WORK/rootfs" update-ca-certificates > /dev/null
  fi
  step import
  tar -C "$WORK/rootfs" --exclude=./proc --exclude=./sys --exclude=./dev -c . \
    | podman import --change 'CMD ["/bin/bash"]' --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      - "$BASE" > /dev/null
fi

step build
start=$(date +%s)
# TORCH_INDEX empty: PyPI alone (the CPU wheel index is not reachable here)
podman build $PODMAN_BUILD --format docker --build-arg PYTHON_IMAGE="$BASE" --build-arg TORCH_INDEX= -t "$IMAGE" -f Dockerfile . \
  > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; exit 1; }
step built "\"seconds\": $(( $(date +%s) - start )), \"size\": \"$(podman image inspect "$IMAGE" --format '{{.Size}}')\""

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman rm -f rtsep-image-check > /dev/null 2>&1 || true
step run "\"port\": $PORT"
podman run $PODMAN_RUN -d --name rtsep-image-check -p "127.0.0.1:$PORT:9100" "$IMAGE" serve --port 9100 --separator none > /dev/null
trap 'podman logs rtsep-image-check > "$WORK/serve.log" 2>&1 || true; podman rm -f rtsep-image-check > /dev/null 2>&1 || true' EXIT
for _ in $(seq 1 180); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null
# the image's own HEALTHCHECK, on --port 9100 (not RTSEP_PORT = 8000)
[ "$(podman inspect "$IMAGE" --format '{{json .HealthCheck.Test}}')" = '["CMD","python","/opt/rtsep/healthcheck.py"]' ]
podman healthcheck run rtsep-image-check
step healthy

SAMPLE=$($PY -c 'from rtsep.demo import sample_paths; print(sample_paths()[0])')
rm -rf "$WORK/stream"
$PY -m rtsep stream "$SAMPLE" --url "ws://127.0.0.1:$PORT/v1/stream" --out "$WORK/stream" --speed 0 > "$WORK/stream.json"
speakers=$($PY -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["speakers"]))' "$WORK/stream.json")
[ "$speakers" -ge 1 ]
step streamed "\"speakers\": $speakers"

rm -rf "$WORK/mounted" && mkdir -p "$WORK/mounted" && cp "$SAMPLE" "$WORK/mounted/meeting.wav"
chown -R 10001:10001 "$WORK/mounted"  # the image's user must be able to write there
podman run $PODMAN_RUN --rm -v "$WORK/mounted:/work" "$IMAGE" process /work/meeting.wav --out /work/out --quiet \
  --adapt-steps 4 --no-adapt-compile --ensemble 2 --no-wiener > "$WORK/process.json"
for f in timeline.rttm timeline.json timeline.png; do [ -s "$WORK/mounted/out/$f" ]; done
step processed "\"files\": $(ls "$WORK/mounted/out" | wc -l)"
echo '{"image": "ok"}'
