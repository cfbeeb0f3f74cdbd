"""HTTP routes (FastAPI): health, metrics, session status, timelines and tracks; mounts the WebSocket.

The store is read in a worker thread (``asyncio.to_thread``), never on the event loop. A session live on this
replica is answered from its driver where that says more (the final timeline on demand); any other session,
including one live on another replica of a shared store, from the store alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Header, HTTPException, Query, Request, WebSocket
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from rtsep.audio import wav_bytes
from rtsep.diarize.timeline import annotation_from_json, to_rttm
from rtsep.errors import BadApiKey, BadEnrollment, ClientError, NotFound, Unauthorized, VoiceExists
from rtsep.sessions import SessionManager
from rtsep.transport.auth import api_key_of
from rtsep.transport.webrtc.config import WebRtcConfig
from rtsep.transport.webrtc.gateway import add_webrtc_routes
from rtsep.transport.ws import serve_stream

MAX_ENROLL_BYTES = 32 << 20  # an enrollment clip's file (the clip's length is limited by [voices] max_enroll_s)


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

    # --- enrolled voices (named speakers): only embeddings are kept, never the audio ---

    def voice_key(request: Request) -> None:
        try:
            manager.check_api_key(api_key_of(request))
        except BadApiKey as exc:
            raise HTTPException(401, exc.message.replace("create a session", "manage voices"),
                                headers={"WWW-Authenticate": "Bearer"}) from None

    @app.post("/v1/voices", tags=["voices"], status_code=201,
              openapi_extra={"requestBody": {"required": True, "description": "the enrollment clip: a wav, flac or "
                                             "ogg file of one talker, at least a few seconds of speech",
                                             "content": {"application/octet-stream": {}, "audio/wav": {},
                                                         "audio/flac": {}, "audio/ogg": {}}}})
    async def enroll_voice(request: Request, name: str = Query(..., description="1-64 of A-Z a-z 0-9 _ -"),
                           replace: bool = Query(False)) -> JSONResponse:
        """Enroll a named voice from an audio clip; sessions that name it (``start`` option ``voices``) label the
        matching speaker with it."""
        voice_key(request)
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_ENROLL_BYTES:
            raise HTTPException(413, f"the enrollment file is {size} bytes; at most {MAX_ENROLL_BYTES}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_ENROLL_BYTES:
                raise HTTPException(413, f"the enrollment file is larger than {MAX_ENROLL_BYTES} bytes")
        try:
            record = await manager.enroll(name, bytes(body), replace)
        except VoiceExists as exc:
            raise HTTPException(409, exc.message) from None
        except BadEnrollment as exc:
            raise HTTPException(422 if exc.error_code == "too_little_speech" else 400, exc.message) from None
        except ClientError as exc:
            raise HTTPException(400, exc.message) from None
        return JSONResponse(record.public(), 201)

    @app.get("/v1/voices", tags=["voices"])
    async def list_voices(request: Request) -> dict:
        voice_key(request)
        return {"voices": [v.public() for v in await asyncio.to_thread(manager.voice_store.voices)]}

    @app.get("/v1/voices/{name}", tags=["voices"])
    async def get_voice(name: str, request: Request) -> dict:
        voice_key(request)
        record = await asyncio.to_thread(manager.voice_store.get_voice, name)
        if record is None:
            raise HTTPException(404, f"no enrolled voice named {name!r}")
        return record.public()

    @app.delete("/v1/voices/{name}", tags=["voices"], status_code=204)
    async def delete_voice(name: str, request: Request) -> Response:
        """Forget a voice (its embedding is deleted; sessions that already named speakers with it keep the name)."""
        voice_key(request)
        if not await manager.writer.call(lambda: manager.voice_store.delete_voice(name)):
            raise HTTPException(404, f"no enrolled voice named {name!r}")
        return Response(status_code=204)

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
    timeline = to_json(
        annotation_from_segments(((s["start_s"], s["end_s"], s["speaker"]) for s in segments), session_id), "live"
    )
    names = (manager.store.final_timeline(session_id) or {}).get("live_names")
    if names is not None:
        timeline["names"] = names
    return timeline


def web_root() -> Path:
    return Path(__file__).resolve().parent.parent / "web"
