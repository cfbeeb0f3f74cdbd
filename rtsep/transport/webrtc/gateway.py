"""The WebRTC gateway: answers offers (building each session's peer connection, slots, playout and
pipeline), keeps the live sessions, and the routes ``POST /v1/webrtc/offer`` and ``GET /v1/webrtc/config``."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from typing import Any

from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpTransceiver, RTCSessionDescription
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rtsep.errors import (
    BadApiKey,
    ClientError,
    MessageTooBig,
    ProtocolViolation,
    RtsepError,
    ServerBusy,
    ServerDraining,
)
from rtsep.sessions import SessionManager
from rtsep.stream.session import StreamSession
from rtsep.transport.auth import api_key_of
from rtsep.transport.webrtc.config import WebRtcConfig
from rtsep.transport.webrtc.events import DataChannelEvents
from rtsep.transport.webrtc.media import SlotTrack
from rtsep.transport.webrtc.playout import Playout, SlotMap
from rtsep.transport.webrtc.session import WebRtcOutbox, WebRtcSession
from rtsep.transport.webrtc.signalling import (
    OFFER_SCHEMA,
    OPUS_RATE_HZ,
    describe_offer,
    parse_offer,
    rtc_configuration,
)

log = logging.getLogger(__name__)


class WebRtcGateway:
    """Answers offers and keeps the live WebRTC sessions (closed at shutdown)."""

    def __init__(self, manager: SessionManager, config: WebRtcConfig) -> None:
        self.manager = manager
        self.config = config
        self.sessions: set[WebRtcSession] = set()
        self.closing = False

    @property
    def num_sources(self) -> int:
        """Separated-source tracks per session (0 without a separator): they take slots first."""
        separation = self.manager.separation
        return separation.spec.num_outputs if separation is not None else 0

    def client_config(self) -> dict[str, Any]:
        sources, speakers = self.num_sources, self.manager.config.max_speakers
        return {
            "ice_servers": [s.public() for s in self.config.ice_servers],
            "max_speakers": speakers,
            "sources": sources,
            "slots": sources + speakers,  # recvonly transceivers to offer so that every track gets one
            "separator": self.manager.config.separator.name,
            "sample_rate": self.manager.config.diarization.sample_rate_hz,
            "frame_ms": self.config.frame_ms,
        }

    async def answer(self, body: bytes, api_key: str | None = None) -> dict[str, Any]:
        self.manager.check_api_key(api_key)
        offer = parse_offer(body, self.config.max_offer_bytes)
        layout = describe_offer(offer.sdp)
        if self.closing:
            raise ServerDraining("the server is shutting down; retry later")
        self.manager.check_capacity()
        stream = StreamSession(self.manager.stream_config)
        start_text = json.dumps({"type": "start", "sample_rate": OPUS_RATE_HZ, "encoding": "pcm_f32le",
                                 "output_encoding": "pcm_f32le", **offer.options})
        (accepted,) = stream.receive_text(start_text)  # the options pass the protocol's own checks
        start = accepted.start
        if layout.slots:  # every track gets a slot: the separated sources first, then the speakers
            limit = min(start.max_speakers or self.manager.config.max_speakers,
                        max(1, layout.slots - self.num_sources))
            start = dataclasses.replace(start, max_speakers=limit)

        pc = RTCPeerConnection(rtc_configuration(self.config))
        opus = [c for c in RTCRtpReceiver.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        rate = self.manager.config.diarization.sample_rate_hz
        mic: RTCRtpTransceiver | None = None
        tracks: list[SlotTrack] = []
        slot_transceivers: list[RTCRtpTransceiver] = []
        # transceivers in m-line order, so that aiortc pairs each with its m-line
        for role in layout.roles:
            if role == "mic":
                mic = pc.addTransceiver("audio", direction="recvonly")
                mic.setCodecPreferences(opus)
            elif role == "slot":
                track = SlotTrack(len(tracks), rate, self.config.max_queued_frames)
                transceiver = pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(opus)
                tracks.append(track)
                slot_transceivers.append(transceiver)
        assert mic is not None
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc raises several kinds for offers it cannot take
            await pc.close()
            raise ProtocolViolation(f"the offer cannot be answered: {exc}", error_code="bad_offer") from None
        slots = SlotMap([t.mid or "" for t in slot_transceivers])
        playout = Playout(len(tracks), rate * self.config.max_buffer_ms // 1000,
                          rate * self.config.prebuffer_ms // 1000)
        events = DataChannelEvents(max_held=1000, max_buffered_bytes=self.config.max_channel_buffer_bytes)
        session = WebRtcSession(self, pc, stream, mic, tracks, slots, playout, events)
        try:
            pipeline, token = await self.manager.open(start, WebRtcOutbox(events, slots, playout), "webrtc")
        except RtsepError:
            await pc.close()
            raise
        session.attach(pipeline, token)
        self.sessions.add(session)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001
            session.start()
            session.end("bad_offer")
            raise ProtocolViolation(f"the offer cannot be answered: {exc}", error_code="bad_offer") from None
        session.start()
        await pipeline.announce_sources()  # held until the data channel opens, like every event
        log.info("session %s: WebRTC, %d slot(s)", pipeline.session_id, len(tracks))
        local = pc.localDescription
        return {
            "sdp": local.sdp,
            "type": local.type,
            "session_id": pipeline.session_id,
            "token": token,
            "slots": [{"slot": i, "mid": mid} for i, mid in enumerate(slots.mids)],
            "max_speakers": pipeline.max_speakers,
            "sources": self.num_sources,
            "sample_rate": rate,
            "step_s": self.manager.config.diarization.step_s,
        }

    async def close(self) -> None:
        """Server shutdown: end every session (keeping what it produced) and close its connection."""
        self.closing = True
        sessions = list(self.sessions)
        for session in sessions:
            session.end(ServerDraining.error_code, clean=True)
        if sessions:
            await asyncio.wait([asyncio.create_task(s.ended.wait()) for s in sessions], timeout=10)


def add_webrtc_routes(app: FastAPI, manager: SessionManager, config: WebRtcConfig) -> WebRtcGateway:
    gateway = WebRtcGateway(manager, config)

    @app.get("/v1/webrtc/config", tags=["webrtc"])
    async def webrtc_config() -> dict:
        """What a WebRTC client needs before its offer: ICE servers and the number of speaker slots."""
        return gateway.client_config()

    @app.post("/v1/webrtc/offer", tags=["webrtc"],
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": OFFER_SCHEMA}}}})
    async def webrtc_offer(request: Request) -> JSONResponse:
        """Start a session over WebRTC: the answer carries the session id, its token and the slots' mids."""
        body = await request.body()
        try:
            return JSONResponse(await gateway.answer(body, api_key_of(request)))
        except BadApiKey as exc:
            manager.metrics.errors.labels(exc.error_code).inc()
            return JSONResponse({"detail": exc.message, "code": exc.error_code}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        except (ServerBusy, ServerDraining) as exc:
            manager.metrics.errors.labels(exc.error_code).inc()
            return JSONResponse({"detail": exc.message, "code": exc.error_code}, 503, headers={"Retry-After": "5"})
        except ClientError as exc:
            manager.metrics.errors.labels(exc.error_code).inc()
            status = 413 if isinstance(exc, MessageTooBig) else 400
            return JSONResponse({"detail": exc.message, "code": exc.error_code}, status)

    app.state.webrtc = gateway
    return gateway
