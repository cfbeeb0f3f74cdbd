"""The live sessions of one server: capacity, creation with tokens, authorization of session resources."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from rtsep.driver import SessionDriver, TransportSink, build_core
from rtsep.errors import (
    BadApiKey,
    BadEnrollment,
    NotFound,
    ServerBusy,
    ServerDraining,
    SessionDeleted,
    Unauthorized,
    UnknownVoice,
    VoiceExists,
)
from rtsep.metrics import Metrics
from rtsep.pipeline import PipelineConfig
from rtsep.protocol.messages import Start
from rtsep.runtime.denoise import DenoiseRuntime
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.runtime.separation import SeparationRuntime
from rtsep.store.base import SessionInfo, SessionStore, VoiceRecord, check_voice_name
from rtsep.store.writer import StoreWriter
from rtsep.stream.core import track_url
from rtsep.stream.limits import RateLimit
from rtsep.stream.render import speaker_of, track_kind
from rtsep.stream.session import StreamConfig

log = logging.getLogger(__name__)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# enrolled voices are embeddings of the embedded diarizer's encoder: the pyannote backend's speakers are not comparable
PYANNOTE_NO_VOICES = ("named voices need the embedded diarizer (this server runs --diarizer pyannote, whose speaker "
                      "embeddings cannot be compared with enrolled voices)")


@dataclass(frozen=True)
class SessionLimits:
    max_sessions: int = 16
    max_message_bytes: int = 1 << 20
    idle_timeout_s: float = 30.0
    rate: RateLimit = field(default_factory=RateLimit)
    api_keys: tuple[str, ...] = ()  # creating a session needs one of these, when any is set


class SessionManager:
    def __init__(
        self,
        *,
        config: PipelineConfig,
        runtime: DiarizationRuntime,
        store: SessionStore,
        metrics: Metrics,
        limits: SessionLimits,
        writer: StoreWriter,
        separation: SeparationRuntime | None = None,
        denoise: DenoiseRuntime | None = None,
        voice_store: SessionStore | None = None,
    ) -> None:
        self.config = config
        # where enrolled voices are read and written: the session store (``rtsep process``: the user's store, while
        # its sessions go to a scratch one)
        self.voice_store = voice_store if voice_store is not None else store
        self.runtime = runtime
        self.separation = separation
        self.denoise = denoise
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.limits = limits
        self._api_key_hashes = [hash_token(k) for k in limits.api_keys]
        self.live: dict[str, SessionDriver] = {}
        self._opening = 0
        self.draining = False

    @property
    def max_sessions(self) -> int:
        return self.limits.max_sessions

    @property
    def max_message_bytes(self) -> int:
        return self.limits.max_message_bytes

    @property
    def stream_config(self) -> StreamConfig:
        return self.config.stream_config(self.max_message_bytes)

    def check_api_key(self, key: str | None) -> None:
        """Creating a session needs one of the configured API keys (constant-time comparison)."""
        if not self._api_key_hashes:
            return
        presented = hash_token(key or "")
        if not any(hmac.compare_digest(presented, h) for h in self._api_key_hashes):
            raise BadApiKey("a valid API key is needed to create a session (Authorization: Bearer <key>, "
                            "X-API-Key, or ?api_key=)")

    def begin_drain(self) -> None:
        """Refuse new sessions and flush the live ones (server shutting down)."""
        self.draining = True
        for pipeline in list(self.live.values()):
            pipeline.request_end(ServerDraining("the server is shutting down; the session was finished"), True)

    def check_capacity(self) -> None:
        if self.draining:
            raise ServerDraining("the server is shutting down; connect to another replica or retry later")
        if len(self.live) + self._opening >= self.max_sessions:
            raise ServerBusy(f"the server is at its limit of {self.max_sessions} concurrent sessions; retry later")

    async def open(self, start: Start, outbox: TransportSink, transport: str) -> tuple[SessionDriver, str]:
        """A new session: returns its driver and its token (shown once, stored only as a hash)."""
        self.check_capacity()
        voices = await self.session_voices(start.voices) if start.voices is not None else None
        token = secrets.token_urlsafe(32)
        info = SessionInfo(
            session_id=uuid.uuid4().hex,
            token_sha256=hash_token(token),
            created_at=time.time(),
            state="live",
            transport=transport,
            input_sample_rate_hz=start.sample_rate,
            sample_rate_hz=self.config.diarization.sample_rate_hz,
        )
        self._opening += 1  # holds the slot while the store creates the session (in the writer's thread)
        try:
            await self.writer.call(lambda: self.store.create(info))
        finally:
            self._opening -= 1
        max_speakers = min(start.max_speakers or self.config.max_speakers, self.config.max_speakers)
        pipeline = SessionDriver(
            info=info,
            core=build_core(info.session_id, self.config, max_speakers, self.separation, self.runtime, voices),
            config=self.config,
            runtime=self.runtime,
            store=self.store,
            writer=self.writer,
            metrics=self.metrics,
            transport=outbox,
            max_speakers=max_speakers,
            send_audio=start.send_audio,
            output_encoding=start.output_encoding,
            separation=self.separation,
            denoise=self.denoise,
        )
        self.live[info.session_id] = pipeline
        self.metrics.active_sessions.set(len(self.live))
        return pipeline, token

    # --- enrolled voices ---

    async def session_voices(self, wanted: list[str] | str) -> dict[str, Any]:
        """The embeddings of the voices a session names ("all": every enrolled one); UnknownVoice for a name that
        is not enrolled (only that session ends)."""
        if self.config.diarization.backend == "pyannote":
            raise UnknownVoice(PYANNOTE_NO_VOICES)
        records = await asyncio.to_thread(self.voice_store.voices)
        enrolled = {r.name: r.embedding for r in records}
        if wanted == "all":
            return enrolled
        unknown = [name for name in wanted if name not in enrolled]
        if unknown:
            raise UnknownVoice(f"no enrolled voice named {', '.join(repr(n) for n in unknown)} "
                               f"(enrolled: {', '.join(sorted(enrolled)) or 'none'}); POST /v1/voices?name=NAME first")
        return {name: enrolled[name] for name in wanted}

    async def enroll(self, name: str, audio: bytes, replace: bool = False) -> VoiceRecord:
        """Embed an enrollment clip (off the event loop) and keep the embedding under ``name`` (never the audio)."""
        check_voice_name(name)
        if self.config.diarization.backend == "pyannote":
            raise BadEnrollment(PYANNOTE_NO_VOICES)
        if not replace and await asyncio.to_thread(self.voice_store.get_voice, name) is not None:
            raise VoiceExists(f"a voice named {name!r} is enrolled already; ?replace=true replaces it")
        cfg = self.config.voices
        embedding, speech_s = await asyncio.to_thread(self.runtime.enroll, audio, cfg.min_enroll_speech_s,
                                                      cfg.max_enroll_s)
        record = VoiceRecord(name, embedding, speech_s, time.time())
        await self.writer.call(lambda: self.voice_store.put_voice(record, replace))
        log.info("voice %r enrolled from %.1f s of speech", name, speech_s)
        return record

    def release(self, pipeline: SessionDriver, outcome: str) -> None:
        if self.live.pop(pipeline.session_id, None) is not None:
            self.metrics.active_sessions.set(len(self.live))
            self.metrics.sessions.labels(outcome, pipeline.info.transport).inc()

    def authorize(self, session_id: str, authorization: str | None) -> SessionInfo:
        """The session's info if ``authorization`` is ``Bearer <its token>``."""
        info = self.store.get(session_id)
        if info is None:
            raise NotFound(f"no session {session_id!r}")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("this resource needs 'Authorization: Bearer <session token>'")
        if not hmac.compare_digest(hash_token(token.strip()), info.token_sha256):
            raise Unauthorized("the token does not match this session")
        return info

    async def delete(self, session_id: str, wait_s: float = 10.0) -> None:
        """Delete a session and every file of it; a live one is ended first (close 4410)."""
        pipeline = self.live.get(session_id)
        if pipeline is not None:
            pipeline.request_end(SessionDeleted("the session was deleted by its owner"), flush=False)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait_s
            while session_id in self.live and loop.time() < deadline:
                await asyncio.sleep(0.02)
        await self.writer.call(lambda: self.store.delete(session_id))
        self.metrics.deleted_sessions.inc()

    async def sweep(self, retention_s: float, now: float | None = None) -> list[str]:
        """Delete the sessions that ended more than ``retention_s`` ago."""
        cutoff = (time.time() if now is None else now) - retention_s
        expired = await asyncio.to_thread(self.store.ended_before, cutoff)
        for session_id in expired:
            if session_id not in self.live:
                await self.delete(session_id)
        if expired:
            log.info("retention: deleted %d session(s)", len(expired))
        return expired

    def status(self, info: SessionInfo) -> dict[str, Any]:
        """The session's public info and its tracks: ``tracks`` the live ones (speakers and separated sources, as
        they were sent), ``final_tracks`` one per final speaker (once the session has ended), ``input_track``
        the input the final tracks were rendered from."""
        body = info.public()
        live, final, input_url = {}, {}, None
        for name in self.store.track_names(info.session_id):
            url = track_url(info.session_id, name)
            kind = track_kind(name)
            if kind == "final":
                final[speaker_of(name)] = url
            elif kind == "input":
                input_url = url
            else:
                live[name] = url
        body["tracks"] = live
        body["final_tracks"] = final
        body["input_track"] = input_url
        return body
