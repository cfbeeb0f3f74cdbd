"""Composition root: build every part from one AppConfig, serve, close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import FrameType

import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from rtsep import __version__
from rtsep.compose import build_denoise, build_diarization, build_separation
from rtsep.config import AppConfig, ServerConfig
from rtsep.metrics import Metrics
from rtsep.runtime.denoise import DenoiseRuntime
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.runtime.separation import SeparationRuntime
from rtsep.sessions import SessionLimits, SessionManager
from rtsep.store.base import SessionStore
from rtsep.store.factory import open_store
from rtsep.store.writer import StoreWriter
from rtsep.stream.limits import RateLimit
from rtsep.transport.http import add_routes, web_root

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: AppConfig
    metrics: Metrics
    runtime: DiarizationRuntime
    store: SessionStore
    manager: SessionManager
    writer: StoreWriter
    separation: SeparationRuntime | None = None
    denoise: DenoiseRuntime | None = None

    def close(self) -> None:
        self.runtime.close()
        if self.separation is not None:
            self.separation.close()
        if self.denoise is not None:
            self.denoise.close()
        self.writer.close()  # what the sessions wrote reaches the store before it closes
        self.store.close()


def build_services(config: AppConfig, runtime: DiarizationRuntime | None = None) -> Services:
    metrics = Metrics()
    pipeline = config.pipeline
    if runtime is None:
        runtime = build_diarization(pipeline, metrics)
    store = open_store(config.server.store_location, replica_id=config.server.replica_id, lease_s=config.server.lease_s)
    writer = StoreWriter()
    separation = build_separation(pipeline)
    if separation is not None:  # live adaptation waits while the diarizer's steps are behind, too
        separation.yield_to(runtime.backlog_s)
    denoise = build_denoise(pipeline)
    manager = SessionManager(
        config=pipeline, runtime=runtime, store=store, metrics=metrics,
        limits=session_limits(config.server), writer=writer, separation=separation, denoise=denoise,
    )
    return Services(config, metrics, runtime, store, manager, writer, separation, denoise)


def session_limits(server: ServerConfig) -> SessionLimits:
    return SessionLimits(
        max_sessions=server.max_sessions, max_message_bytes=server.max_message_bytes,
        idle_timeout_s=server.idle_timeout_s, rate=RateLimit(server.max_realtime_ratio, server.realtime_burst_s),
        api_keys=server.api_keys,
    )


def build_app(services: Services) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep_forever(services.manager, services.config.server.retention_s))
        yield
        sweeper.cancel()
        webrtc = getattr(app.state, "webrtc", None)
        if webrtc is not None:  # end WebRTC sessions and close their peer connections
            await webrtc.close()
        services.close()

    # /docs is served from a package (rtsep.transport.http.add_api_docs); FastAPI's pages need a CDN
    app = FastAPI(title="rtsep", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Real-time speech separation and diarization. Protocol: docs/protocol.md")
    add_routes(app, services.manager, services.config.webrtc)
    if web_root().is_dir():
        app.mount("/", StaticFiles(directory=web_root(), html=True), name="web")
    return app


class RedactSecrets(logging.Filter):
    """Keeps API keys given as ``?api_key=`` (browsers cannot set WebSocket headers) out of the logs."""

    PATTERN = re.compile(r"(api_key=)[^&\s\"']+")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "api_key=" in message:
            record.msg, record.args = self.PATTERN.sub(r"\1<redacted>", message), ()
        return True


def install_log_redaction() -> None:
    for name in ("uvicorn.error", "uvicorn.access", "rtsep"):
        logging.getLogger(name).addFilter(RedactSecrets())


async def sweep_forever(manager: SessionManager, retention_s: float) -> None:
    """Retention: delete expired sessions now and then every ``min(retention / 4, 60 s)``."""
    interval_s = min(retention_s / 4, 60.0)
    while True:
        try:
            await manager.sweep(retention_s)
        except Exception:  # noqa: BLE001 - the next sweep tries again
            log.exception("retention sweep failed")
        await asyncio.sleep(interval_s)


class RtsepServer(uvicorn.Server):
    """uvicorn's server with a graceful drain on SIGTERM: new sessions are refused (1001), live ones are
    flushed (final timeline, ``done``) and closed with 1001, then the process exits; bounded by
    ``drain_timeout_s``. A second SIGTERM, or SIGINT, exits at once."""

    def __init__(self, config: uvicorn.Config, manager: SessionManager, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.manager = manager
        self.drain_timeout_s = drain_timeout_s
        self.drain_requested = False
        self.drain_task: asyncio.Task | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and not self.drain_requested:
            self.drain_requested = True  # acted on by the next on_tick, inside the event loop
            return
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.drain_requested and self.drain_task is None:
            self.drain_task = asyncio.create_task(drain(self.manager, self.drain_timeout_s))
        if self.drain_task is not None and self.drain_task.done():
            return True
        return await super().on_tick(counter)


async def drain(manager: SessionManager, timeout_s: float) -> None:
    log.info("SIGTERM: draining %d live session(s), at most %.0f s", len(manager.live), timeout_s)
    manager.begin_drain()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while manager.live and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if manager.live:
        log.warning("drain deadline passed with %d session(s) still live", len(manager.live))


def uvicorn_config(app: FastAPI, config: AppConfig, port: int | None = None) -> uvicorn.Config:
    server = config.server
    return uvicorn.Config(
        app, host=server.host, port=server.port if port is None else port, ws="websockets",
        # above our own limit so that our check answers first, with a JSON error and 1009
        ws_max_size=server.max_message_bytes * 4, ws_per_message_deflate=server.ws_per_message_deflate,
        log_level=server.log_level, lifespan="on",
    )


def serve(config: AppConfig) -> None:
    install_log_redaction()
    services = build_services(config)
    app = build_app(services)
    log.info("store %s; up to %d sessions; device %s", config.server.store_location.describe(),
             config.server.max_sessions, config.pipeline.runtime.device)
    RtsepServer(uvicorn_config(app, config), services.manager, config.server.drain_timeout_s).run()
