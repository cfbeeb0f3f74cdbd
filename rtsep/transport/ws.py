"""``WS /v1/stream``: protocol v1 over a Starlette WebSocket (served by uvicorn's websockets backend)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from rtsep.errors import RtsepError
from rtsep.pipeline import SessionPipeline
from rtsep.protocol.messages import ErrorMessage, Ready, encode_message
from rtsep.sessions import SessionManager
from rtsep.stream.session import ChunkReady, StartAccepted, StopRequested, StreamSession

log = logging.getLogger(__name__)


class WebSocketOutbox:
    """Sends to the client until it is gone; afterwards output only goes to the store."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.gone = False

    async def send_message(self, message: Any) -> None:
        await self._send(text=encode_message(message))

    async def send_audio(self, frame: bytes) -> None:
        await self._send(data=frame)

    async def _send(self, text: str | None = None, data: bytes | None = None) -> None:
        if self.gone:
            return
        try:
            if text is not None:
                await self.ws.send_text(text)
            else:
                await self.ws.send_bytes(data or b"")
        except (WebSocketDisconnect, RuntimeError, OSError):
            self.gone = True


async def serve_stream(ws: WebSocket, manager: SessionManager) -> None:
    await ws.accept()
    outbox = WebSocketOutbox(ws)
    stream = StreamSession(manager.stream_config)
    pipeline: SessionPipeline | None = None
    outcome = "completed"
    try:
        manager.check_capacity()
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                outcome = "client_gone"
                break
            if message.get("text") is not None:
                events = stream.receive_text(message["text"])
            else:
                events = stream.receive_bytes(message.get("bytes") or b"")
            for event in events:
                if isinstance(event, StartAccepted):
                    pipeline, token = manager.open(event.start, outbox, "websocket")
                    cfg = manager.config
                    await outbox.send_message(
                        Ready(pipeline.session_id, token, cfg.diarization.sample_rate_hz,
                              event.start.output_encoding, manager.max_message_bytes, pipeline.max_speakers,
                              cfg.diarization.step_s)
                    )
                elif isinstance(event, ChunkReady):
                    assert pipeline is not None
                    await pipeline.feed(event)
                elif isinstance(event, StopRequested):
                    assert pipeline is not None
                    done = await pipeline.finish()
                    await outbox.send_message(done)
                    await _close(ws, 1000, "done")
                    return
    except RtsepError as exc:
        outcome = exc.error_code
        manager.metrics.errors.labels(exc.error_code).inc()
        log.info("session %s ended: %s (%d)", pipeline.session_id if pipeline else "-", exc.message, exc.close_code)
        if pipeline is None or pipeline.error is not exc:  # the pipeline reports its own failures
            await outbox.send_message(ErrorMessage(exc.error_code, exc.message, exc.close_code))
        await _close(ws, exc.close_code, exc.message)
    except WebSocketDisconnect:
        outcome = "client_gone"
    finally:
        if pipeline is not None:
            if pipeline.info.state == "live":
                # flush what the client did send, keep everything produced, send nothing more
                for event in stream.finish():
                    if isinstance(event, ChunkReady) and pipeline.error is None:
                        try:
                            await pipeline.feed(event)
                        except RtsepError:
                            break
                await pipeline.abort(outcome)
            manager.release(pipeline, outcome)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code, reason.encode()[:120].decode("utf-8", "ignore"))  # reasons fit in 123 bytes
        except (RuntimeError, OSError):
            pass
