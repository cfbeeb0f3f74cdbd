"""The live sessions of one server: capacity, creation with tokens, authorization of session resources."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from typing import Any

from rtsep.errors import NotFound, ServerBusy, Unauthorized
from rtsep.metrics import Metrics
from rtsep.pipeline import Outbox, PipelineConfig, SessionPipeline
from rtsep.protocol.messages import Start
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.store.base import SessionInfo, SessionStore
from rtsep.stream.session import StreamConfig


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class SessionManager:
    def __init__(
        self,
        *,
        config: PipelineConfig,
        runtime: DiarizationRuntime,
        store: SessionStore,
        metrics: Metrics,
        max_sessions: int,
        max_message_bytes: int,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.store = store
        self.metrics = metrics
        self.max_sessions = max_sessions
        self.max_message_bytes = max_message_bytes
        self.live: dict[str, SessionPipeline] = {}

    @property
    def stream_config(self) -> StreamConfig:
        return self.config.stream_config(self.max_message_bytes)

    def check_capacity(self) -> None:
        if len(self.live) >= self.max_sessions:
            raise ServerBusy(f"the server is at its limit of {self.max_sessions} concurrent sessions; retry later")

    def open(self, start: Start, outbox: Outbox, transport: str) -> tuple[SessionPipeline, str]:
        """A new session: returns its pipeline and its token (shown once, stored only as a hash)."""
        self.check_capacity()
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
        self.store.create(info)
        pipeline = SessionPipeline(
            info=info,
            config=self.config,
            runtime=self.runtime,
            store=self.store,
            metrics=self.metrics,
            outbox=outbox,
            max_speakers=start.max_speakers,
            send_audio=start.send_audio,
            output_encoding=start.output_encoding,
        )
        self.live[info.session_id] = pipeline
        self.metrics.active_sessions.set(len(self.live))
        return pipeline, token

    def release(self, pipeline: SessionPipeline, outcome: str) -> None:
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

    def status(self, info: SessionInfo) -> dict[str, Any]:
        body = info.public()
        body["tracks"] = {name: f"/v1/sessions/{info.session_id}/tracks/{name}.wav"
                          for name in self.store.track_names(info.session_id)}
        return body
