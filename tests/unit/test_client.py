"""The reference client (clients/python) on its own: it never reaches torch or the server package, and everyday
mistakes end with one line and a non-zero exit code. (Subprocesses, no server.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "clients" / "python"

# a finder ahead of every other: importing torch or anything of the server package fails loudly
FORBID = """
import sys
class Forbid:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "rtsep", "torchaudio", "speechbrain", "pyannote"):
            raise ImportError(f"the client imported {name}")
        return None
sys.meta_path.insert(0, Forbid())
"""


def client_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(CLIENT), env.get("PYTHONPATH", "")])
    return env


def run_client(*args: str, code: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", FORBID + (code or "import runpy; runpy.run_module('rtsep_client', "
                                                       "run_name='__main__')"), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=client_env(), cwd=CLIENT)


def test_the_client_never_imports_torch_or_the_server():
    code = ("import rtsep_protocol, rtsep_protocol.frames, rtsep_protocol.messages, rtsep_protocol.pcm, "
            "rtsep_protocol.errors, rtsep_client, rtsep_client.stream, rtsep_client.cli; "
            "import httpx, websockets; print('ok')")
    run = run_client(code=code)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]
    assert run_client(code="import torch").returncode != 0  # the hook does forbid


def test_help_shows_the_default_url():
    run = run_client("--help")
    assert run.returncode == 0, run.stderr
    assert "(default: ws://127.0.0.1:8000/v1/stream)" in " ".join(run.stdout.split())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nothing listens there


def one_line_error(run: subprocess.CompletedProcess) -> str:
    lines = run.stderr.strip().splitlines()
    assert run.returncode != 0 and len(lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    return lines[0]


def test_everyday_mistakes_say_one_line(tmp_path):
    wav = tmp_path / "tone.wav"
    sf.write(str(wav), 0.1 * np.sin(np.arange(16000) / 5).astype(np.float32), 16000)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("not audio at all")
    out = str(tmp_path / "out")
    url = f"ws://127.0.0.1:{closed_port()}/v1/stream"

    line = one_line_error(run_client(str(tmp_path / "missing.wav"), "--out", out, "--url", url))
    assert "no such file" in line and "missing.wav" in line
    line = one_line_error(run_client(str(not_audio), "--out", out, "--url", url))
    assert "cannot read audio file" in line and "notes.wav" in line
    line = one_line_error(run_client(str(wav), "--out", out, "--url", url))
    assert "cannot connect to" in line and url in line
    line = one_line_error(run_client(str(wav), "--out", out, "--url", "http://127.0.0.1:1/v1/stream"))
    assert "not a WebSocket URL" in line
