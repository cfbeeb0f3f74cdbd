"""``WS /v1/stream``: protocol v1 over a Starlette WebSocket (served by uvicorn's websockets backend)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from rtsep.driver import SessionDriver
from rtsep.errors import IdleTimeout, RtsepError
from rtsep.protocol.frames import encode_audio_frame
from rtsep.protocol.messages import ErrorMessage, Ready, encode_message
from rtsep.sessions import SessionManager
from rtsep.stream.core import AudioOut
from rtsep.stream.limits import RealtimeGuard
from rtsep.stream.session import ChunkReady, SamplesReady, StartAccepted, StopRequested, StreamSession
from rtsep.transport.auth import api_key_of

log = logging.getLogger(__name__)

ERROR_REPORT_WAIT_S = 5.0  # a bound on waiting for a failed session's error message before the close


class WebSocketOutbox:
    """The session's transport sink: messages as JSON text, audio as protocol v1 frames, until the client is gone
    (afterwards output only goes to the store)."""

    def __init__(self, ws: WebSocket, sample_rate_hz: int = 16000, output_encoding: str = "pcm_s16le") -> None:
        self.ws = ws
        self.sample_rate_hz = sample_rate_hz
        self.output_encoding = output_encoding
        self.gone = False

    async def send_message(self, message: Any) -> None:
        await self._send(text=encode_message(message))

    async def send_audio(self, audio: AudioOut) -> None:
        await self._send(data=encode_audio_frame(audio.index, audio.start_sample, audio.samples, self.sample_rate_hz,
                                                 self.output_encoding))

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


class _EndRequested(Exception):
    pass


class _Receiver:
    """The client's next message, unless the server asks the session to end or the client stays idle. One task
    waits on the session's end request for the whole session; each message costs one receive and one wait."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._end: asyncio.Future | None = None  # pipeline.end_requested.wait(), from the session's start on

    async def next(self, pipeline: SessionDriver | None, idle_timeout_s: float) -> dict:
        if pipeline is not None and self._end is None:
            self._end = asyncio.ensure_future(pipeline.end_requested.wait())
        if self._end is not None and self._end.done():
            raise _EndRequested()
        receive = asyncio.ensure_future(self.ws.receive())
        waiters = {receive} if self._end is None else {receive, self._end}
        done, _ = await asyncio.wait(waiters, timeout=idle_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if receive in done:
            return receive.result()
        receive.cancel()
        if done:
            raise _EndRequested()
        raise IdleTimeout(f"no message from the client for {idle_timeout_s:g} s")

    def close(self) -> None:
        if self._end is not None:
            self._end.cancel()


async def serve_stream(ws: WebSocket, manager: SessionManager) -> None:
    await ws.accept()
    outbox = WebSocketOutbox(ws)
    stream = StreamSession(manager.stream_config)
    limits = manager.limits
    guard: RealtimeGuard | None = None
    pipeline: SessionDriver | None = None
    outcome = "completed"
    receiver = _Receiver(ws)
    try:
        manager.check_api_key(api_key_of(ws))
        manager.check_capacity()
        while True:
            try:
                message = await receiver.next(pipeline, limits.idle_timeout_s)
            except _EndRequested:
                assert pipeline is not None and pipeline.end_reason is not None
                if not pipeline.end_flush:
                    raise pipeline.end_reason from None
                outcome = pipeline.end_reason.error_code
                await _finish(ws, outbox, stream, pipeline, pipeline.end_reason.close_code,
                              pipeline.end_reason.message, outcome)
                return
            if message["type"] == "websocket.disconnect":
                outcome = "client_gone"
                break
            if message.get("text") is not None:
                events = stream.receive_text(message["text"])
            else:
                events = stream.receive_bytes(message.get("bytes") or b"")
                assert guard is not None
                guard.check(stream.input_s, time.monotonic())
            for event in events:
                if isinstance(event, StartAccepted):
                    cfg = manager.config
                    outbox.sample_rate_hz = cfg.diarization.sample_rate_hz
                    outbox.output_encoding = event.start.output_encoding
                    pipeline, token = await manager.open(event.start, outbox, "websocket")
                    guard = RealtimeGuard(limits.rate, time.monotonic())
                    await outbox.send_message(
                        Ready(pipeline.session_id, token, cfg.diarization.sample_rate_hz,
                              event.start.output_encoding, manager.max_message_bytes, pipeline.max_speakers,
                              cfg.diarization.step_s, separator=cfg.separator.name)
                    )
                    await pipeline.announce_sources()
                elif isinstance(event, SamplesReady):
                    assert pipeline is not None
                    await pipeline.feed_samples(event)
                elif isinstance(event, ChunkReady):
                    assert pipeline is not None
                    await pipeline.feed(event)
                elif isinstance(event, StopRequested):
                    assert pipeline is not None
                    await _finish(ws, outbox, stream, pipeline, 1000, "done", "completed")
                    return
    except RtsepError as exc:
        outcome = exc.error_code
        log.info("session %s ended: %s (%d)", pipeline.session_id if pipeline else "-", exc.message, exc.close_code)
        if pipeline is None or pipeline.error is not exc:  # the driver counts and reports its own failures
            manager.metrics.errors.labels(exc.error_code).inc()
            await outbox.send_message(ErrorMessage(exc.error_code, exc.message, exc.close_code))
        else:  # its error message goes out before the close
            try:
                await asyncio.wait_for(pipeline.error_reported.wait(), ERROR_REPORT_WAIT_S)
            except TimeoutError:
                log.warning("session %s: its error was not sent within %g s; closing", pipeline.session_id,
                            ERROR_REPORT_WAIT_S)
        await _close(ws, exc.close_code, exc.message)
    except WebSocketDisconnect:
        outcome = "client_gone"
    finally:
        receiver.close()
        if pipeline is not None:
            try:
                if pipeline.info.state == "live":
                    # flush what the client did send, keep everything produced, send nothing more
                    for event in stream.finish():
                        if isinstance(event, ChunkReady) and pipeline.error is None:
                            try:
                                await pipeline.feed(event)
                            except RtsepError:
                                break
                    await pipeline.abort(outcome)
            finally:
                manager.release(pipeline, outcome)


async def _finish(ws: WebSocket, outbox: WebSocketOutbox, stream: StreamSession, pipeline: SessionDriver,
                  close_code: int, reason: str, outcome: str) -> None:
    """End the input (if the client did not), flush, send the final timeline and ``done``, close."""
    for event in stream.finish():
        if isinstance(event, ChunkReady):
            await pipeline.feed(event)
    done = await pipeline.finish(outcome)
    await outbox.send_message(done)
    await _close(ws, close_code, reason)


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
        try:
            await ws.close(code, reason.encode()[:120].decode("utf-8", "ignore"))  # reasons fit in 123 bytes
        except (RuntimeError, OSError):
            pass
