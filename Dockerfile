# rtsep, CPU image. Build: docker build -t rtsep .   Run: docker run -p 8000:8000 -v rtsep-data:/data rtsep
# CUDA variant: Dockerfile.cuda. Both run the README's commands (`rtsep serve`, `rtsep process`, `rtsep demo`).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# CPU-only torch wheels keep the image small; the CUDA variant takes PyPI's CUDA build instead
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# python3-dev: the C headers for the source builds (webrtcvad); the official python image has its own, a Debian
# base (bench/image.sh) has none; this stage is discarded either way
RUN apt-get update && apt-get install -y --no-install-recommends build-essential python3-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rtsep ./rtsep
COPY clients/python ./clients/python
RUN python -m venv /opt/rtsep \
 && /opt/rtsep/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/rtsep/bin/pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}"} "torch==2.11.*" "torchaudio==2.11.0" \
 && /opt/rtsep/bin/pip install --no-cache-dir ${TORCH_INDEX:+--extra-index-url "${TORCH_INDEX}"} ".[sepformer]"  # ships rtsep stream (clients/python) too

FROM ${PYTHON_IMAGE}
# g++: torch.compile of `rtsep process`'s adaptation step builds C++ kernels (without it the steps run uncompiled,
# ~2.4x slower); its cache lives in the data volume: one ~95 s compile per volume, not per container
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 rtsep && mkdir /data && chown rtsep:rtsep /data
COPY --from=build /opt/rtsep /opt/rtsep
ENV PATH=/opt/rtsep/bin:$PATH \
    RTSEP_HOST=0.0.0.0 \
    RTSEP_PORT=8000 \
    RTSEP_DATA_DIR=/data \
    TORCHINDUCTOR_CACHE_DIR=/data/.cache/torchinductor \
    PYTHONUNBUFFERED=1
USER rtsep
WORKDIR /home/rtsep
VOLUME ["/data"]
# 8000/tcp: HTTP + WebSocket. WebRTC media uses UDP: run with --network host, or put a TURN server in front
EXPOSE 8000
# the port of `serve --port N` if given, else RTSEP_PORT (deploy/healthcheck.py)
COPY deploy/healthcheck.py /opt/rtsep/healthcheck.py
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/opt/rtsep/healthcheck.py"]
# SIGTERM drains: live sessions are flushed and closed with 1001 (docker stop -t should exceed --drain-timeout)
STOPSIGNAL SIGTERM
ENTRYPOINT ["rtsep"]
CMD ["serve"]
