"""Composition root: build every part from one AppConfig, serve, close."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from rtsep import __version__
from rtsep.config import AppConfig
from rtsep.metrics import Metrics
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.sessions import SessionManager
from rtsep.store.sqlite import SqliteSessionStore
from rtsep.transport.http import add_routes, web_root

log = logging.getLogger(__name__)


@dataclass
class Services:
    config: AppConfig
    metrics: Metrics
    runtime: DiarizationRuntime
    store: SqliteSessionStore
    manager: SessionManager

    def close(self) -> None:
        self.runtime.close()
        self.store.close()


def build_services(config: AppConfig, runtime: DiarizationRuntime | None = None) -> Services:
    metrics = Metrics()
    pipeline = config.pipeline
    step_s = pipeline.diarization.step_s
    if runtime is None:
        runtime = DiarizationRuntime(
            pipeline.runtime, pipeline.diarization,
            on_batch=lambda size, seconds: metrics.observe_batch(size, seconds, step_s),
        )
    store = SqliteSessionStore(config.server.data_dir)
    manager = SessionManager(
        config=pipeline, runtime=runtime, store=store, metrics=metrics,
        max_sessions=config.server.max_sessions, max_message_bytes=config.server.max_message_bytes,
    )
    return Services(config, metrics, runtime, store, manager)


def build_app(services: Services) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        webrtc = getattr(app.state, "webrtc", None)
        if webrtc is not None:  # end WebRTC sessions and close their peer connections
            await webrtc.close()
        services.close()

    app = FastAPI(title="rtsep", version=__version__, lifespan=lifespan,
                  description="Real-time speech separation and diarization. Protocol: docs/protocol.md")
    add_routes(app, services.manager)
    if web_root().is_dir():
        app.mount("/", StaticFiles(directory=web_root(), html=True), name="web")
    return app


def uvicorn_config(app: FastAPI, config: AppConfig, port: int | None = None):
    import uvicorn

    server = config.server
    return uvicorn.Config(
        app, host=server.host, port=server.port if port is None else port, ws="websockets",
        # above our own limit so that our check answers first, with a JSON error and 1009
        ws_max_size=server.max_message_bytes * 4, log_level=server.log_level, lifespan="on",
    )


def serve(config: AppConfig) -> None:
    import uvicorn

    services = build_services(config)
    app = build_app(services)
    log.info("data dir %s; up to %d sessions; device %s", config.server.data_dir, config.server.max_sessions,
             config.pipeline.runtime.device)
    uvicorn.Server(uvicorn_config(app, config)).run()
