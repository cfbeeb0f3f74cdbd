"""Shared helpers of the bench scripts: a real `rtsep serve` subprocess, percentiles, the input recording."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rtsep_server(data_dir: Path, *extra: str, config_toml: str | None = None,
                 server_cwd: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`rtsep serve` on a free loopback port; yields (http base url, process).

    ``server_cwd``: run the server from another checkout of rtsep (its root first on PYTHONPATH), to compare versions.
    """
    port = free_port()
    env = dict(os.environ)
    if server_cwd is not None:
        root = Path(server_cwd).resolve()
        env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "clients" / "python")])
    args = [sys.executable, "-m", "rtsep", "serve", "--port", str(port), "--data-dir", str(data_dir),
            "--log-level", "warning", *extra]
    if config_toml is not None:
        path = data_dir.parent / f"bench-{port}.toml"
        path.write_text(config_toml)
        args += ["--config", str(path)]
    log_path = data_dir.parent / f"server-{port}.log"  # a file, never an unread pipe that could fill up
    log_file = open(log_path, "wb")
    proc = subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=server_cwd)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(log_path.read_text()[-3000:])
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


def pct(values, q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if len(values) else None


def machine_note() -> str:
    load1, _, _ = os.getloadavg()
    return f"{os.cpu_count()} cores, load average {load1:.2f} at start"


def metric_value(metrics_text: str, name: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def add_audio_args(parser: argparse.ArgumentParser) -> None:
    """``--wav`` / ``--rttm``: the recording a bench streams and its reference (default: the pyannote sample)."""
    parser.add_argument("--wav", type=Path, help="the recording (default: pyannote's sample.wav, 30 s, 2 talkers)")
    parser.add_argument("--rttm", type=Path, help="its reference turns (default: pyannote's sample.rttm)")


def audio_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(wav, rttm) from ``add_audio_args``' options."""
    from rtsep.demo import sample_paths

    if (args.wav is None) != (args.rttm is None):
        raise SystemExit("--wav and --rttm go together (a recording and its reference turns)")
    return (args.wav, args.rttm) if args.wav is not None else sample_paths()
