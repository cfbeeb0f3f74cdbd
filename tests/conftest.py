import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from rtsep.config import AppConfig, ServerConfig, load_config
from rtsep.transport.webrtc.config import WebRtcConfig


@dataclass
class RunningServer:
    base_url: str
    ws_url: str
    services: object
    data_dir: Path


def diarization_only():
    """The default pipeline without its separator: the transport, limit and page tests run on diarization alone;
    the separator's own server tests (tests/integration/test_separation_pipeline.py, test_webrtc.py) ask for it,
    and tests/integration/test_cli.py runs the real defaults."""
    return load_config(env={}, overrides={"separator": {"name": "none"}}).pipeline


@contextlib.contextmanager
def run_server(data_dir: Path, pipeline=None, webrtc=None, **server_overrides) -> Iterator[RunningServer]:
    """A real rtsep server (real models, uvicorn, websockets) on 127.0.0.1, port chosen by the OS."""
    import uvicorn

    from rtsep.server import build_app, build_services, uvicorn_config

    config = AppConfig(server=replace(ServerConfig(data_dir=str(data_dir), port=0, log_level="warning"),
                                      **server_overrides), pipeline=pipeline or diarization_only(),
                       webrtc=webrtc or WebRtcConfig())
    services = build_services(config)
    server = uvicorn.Server(uvicorn_config(build_app(services), config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield RunningServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/v1/stream", services, data_dir)
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="session")
def sample_paths():
    from rtsep.demo import sample_paths

    return sample_paths()


@pytest.fixture(scope="session")
def meeting_wav(sample_paths, tmp_path_factory) -> Path:
    """The first 20 s of the real two-talker sample (evaluation data: used to test, never to train)."""
    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    path = tmp_path_factory.mktemp("audio") / "meeting.wav"
    sf.write(str(path), audio[: 20 * rate], rate)
    return path


def tone(seconds: float, rate: int, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres.py); each test takes its own database."""
    from tests.postgres import postgres_bin_dir, run_postgres

    if postgres_bin_dir() is None:
        pytest.skip("PostgreSQL binaries absent: apt-get install postgresql (.ci/run installs it)")
    with run_postgres() as server:
        yield server
