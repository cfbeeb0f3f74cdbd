"""HTTP routes (FastAPI): health, metrics, session status, timelines and tracks; mounts the WebSocket.

The store is read in a worker thread (``asyncio.to_thread``), never on the event loop. A session live on this
replica is answered from its driver where that says more (the final timeline on demand); any other session,
including one live on another replica of a shared store, from the store alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Header, HTTPException, Query, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from rtsep.audio import wav_bytes
from rtsep.diarize.timeline import annotation_from_json, to_rttm
from rtsep.errors import NotFound, Unauthorized
from rtsep.sessions import SessionManager
from rtsep.transport.webrtc.config import WebRtcConfig
from rtsep.transport.webrtc.gateway import add_webrtc_routes
from rtsep.transport.ws import serve_stream


def add_routes(app: FastAPI, manager: SessionManager, webrtc: WebRtcConfig) -> None:
    store = manager.store

    async def authorized(session_id: str, authorization: str | None):
        try:
            return await asyncio.to_thread(manager.authorize, session_id, authorization)
        except NotFound as exc:
            raise HTTPException(404, exc.message) from None
        except Unauthorized as exc:
            raise HTTPException(401, exc.message, headers={"WWW-Authenticate": "Bearer"}) from None

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict:
        return {"status": "ok", "active_sessions": len(manager.live), "max_sessions": manager.max_sessions}

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        manager.metrics.queue_depth.set(manager.runtime.queue_depth)
        return Response(manager.metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/sessions/{session_id}", tags=["sessions"])
    async def session_status(session_id: str, authorization: str | None = Header(None)) -> dict:
        info = await authorized(session_id, authorization)
        return await asyncio.to_thread(manager.status, info)

    @app.get("/v1/sessions/{session_id}/timeline", tags=["sessions"])
    async def timeline(
        session_id: str,
        format: Literal["json", "rttm"] = Query("json"),
        kind: Literal["live", "final"] = Query("final"),
        authorization: str | None = Header(None),
    ) -> Response:
        info = await authorized(session_id, authorization)
        pipeline = manager.live.get(session_id)
        if kind == "live":
            data = pipeline.live_timeline() if pipeline else await asyncio.to_thread(_stored_live, manager, session_id)
        elif pipeline is not None and pipeline.info.state == "live":
            data = await pipeline.final_timeline_now()  # on demand, from what arrived so far
        elif info.state == "live":  # live on another replica (shared store): its final timeline comes at its end
            data = await asyncio.to_thread(_stored_live, manager, session_id)
            data["note"] = "live on another replica: the live timeline as stored; the final one comes at its end"
        else:
            data = await asyncio.to_thread(store.final_timeline, session_id)
            if data is None:  # interrupted before a final timeline was written: the live one is all there is
                live = await asyncio.to_thread(_stored_live, manager, session_id)
                data = {**live, "kind": "final", "note": "interrupted session"}
        data["state"] = info.state
        if format == "rttm":
            return PlainTextResponse(to_rttm(annotation_from_json(data)), media_type="text/x-rttm")
        return JSONResponse(data)

    @app.delete("/v1/sessions/{session_id}", tags=["sessions"], status_code=204)
    async def delete_session(session_id: str, authorization: str | None = Header(None)) -> Response:
        await authorized(session_id, authorization)
        await manager.delete(session_id)
        return Response(status_code=204)

    @app.get("/v1/sessions/{session_id}/tracks/{track}.wav", tags=["sessions"])
    async def track(session_id: str, track: str, authorization: str | None = Header(None)) -> Response:
        info = await authorized(session_id, authorization)
        pcm = await asyncio.to_thread(store.read_track, session_id, track)
        if pcm is None:
            raise HTTPException(404, f"no track {track!r} in session {session_id}")
        return Response(wav_bytes(pcm, info.sample_rate_hz), media_type="audio/wav")

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket) -> None:
        await serve_stream(ws, manager)

    add_webrtc_routes(app, manager, webrtc)  # POST /v1/webrtc/offer, GET /v1/webrtc/config; app.state.webrtc
    add_api_docs(app)


DOCS_ASSETS = "/docs/assets"


def add_api_docs(app: FastAPI) -> None:
    """``GET /docs``: Swagger UI from the swagger-ui-bundle-v2 package, not from a CDN, so that it works offline.
    (Build the app with ``docs_url=None, redoc_url=None``: FastAPI's own pages load their scripts from a CDN.)"""
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png", oauth2_redirect_url=None,
        )


def _stored_live(manager: SessionManager, session_id: str) -> dict:
    from rtsep.diarize.timeline import annotation_from_segments, to_json

    segments = manager.store.live_segments(session_id)
    return to_json(
        annotation_from_segments(((s["start_s"], s["end_s"], s["speaker"]) for s in segments), session_id), "live"
    )


def web_root() -> Path:
    return Path(__file__).resolve().parent.parent / "web"
