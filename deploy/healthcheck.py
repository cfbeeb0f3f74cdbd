"""The image's health check: GET /healthz on the port that `rtsep serve` listens on — its ``--port`` flag
(read from PID 1's command line, the container's main process), else ``RTSEP_PORT``, else 8000."""

from __future__ import annotations

import os
import sys
import urllib.request
from collections.abc import Mapping, Sequence


def serve_port(cmdline: Sequence[str], env: Mapping[str, str]) -> int:
    for i, arg in enumerate(cmdline):
        if arg == "--port" and i + 1 < len(cmdline):
            return int(cmdline[i + 1])
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
    return int(env.get("RTSEP_PORT") or 8000)


def main() -> int:
    with open("/proc/1/cmdline", "rb") as f:
        cmdline = f.read().decode(errors="replace").split("\0")
    port = serve_port(cmdline, os.environ)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"healthz on port {port}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
