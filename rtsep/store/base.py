"""The store interface: what the server needs to keep for every session."""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SessionInfo:
    session_id: str
    token_sha256: str
    created_at: float
    state: str  # "live" | "done" | "interrupted" | "failed"
    transport: str
    input_sample_rate_hz: int
    sample_rate_hz: int  # of timelines' sample positions and of the tracks
    speakers: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    outcome: str | None = None
    ended_at: float | None = None

    def public(self) -> dict[str, Any]:
        """What a client may see (never the token or its hash)."""
        return {
            "session_id": self.session_id,
            "state": self.state,
            "transport": self.transport,
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "duration_s": round(self.duration_s, 3),
            "sample_rate": self.sample_rate_hz,
            "speakers": list(self.speakers),
            "outcome": self.outcome,
        }


@dataclass
class VoiceRecord:
    """An enrolled voice: only its embedding is kept, never the enrollment audio. Voices are not session data:
    retention does not delete them, ``delete_voice`` does."""

    name: str
    embedding: np.ndarray  # (dim,) float32 unit vector (the diarizer's speaker encoder)
    speech_s: float  # seconds of speech the embedding was computed from
    created_at: float  # Unix time

    def public(self) -> dict[str, Any]:
        """What a client may see (not the embedding)."""
        return {"name": self.name, "speech_s": round(self.speech_s, 2), "created_at": self.created_at,
                "dim": int(self.embedding.size)}


VOICE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # a timeline label, a file name and a URL segment as it is


def check_voice_name(name: str) -> str:
    """The name, or ClientError: 1..64 letters, digits, '_' or '-'."""
    from rtsep.errors import ClientError

    if not isinstance(name, str) or not VOICE_NAME.match(name):
        raise ClientError(f"a voice name is 1 to 64 letters, digits, '_' or '-', got {name!r}",
                          error_code="bad_voice_name")
    return name


def voice_bytes(embedding: np.ndarray) -> bytes:
    return np.ascontiguousarray(embedding, "<f4").tobytes()


def voice_from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<f4").astype(np.float32)


class SessionStore(abc.ABC):
    @abc.abstractmethod
    def create(self, info: SessionInfo) -> None: ...

    @abc.abstractmethod
    def get(self, session_id: str) -> SessionInfo | None: ...

    @abc.abstractmethod
    def update(self, info: SessionInfo) -> None: ...

    @abc.abstractmethod
    def append_live_segment(self, session_id: str, speaker: str, start_s: float, end_s: float) -> None: ...

    @abc.abstractmethod
    def live_segments(self, session_id: str) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def write_final(self, session_id: str, timeline: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    def final_timeline(self, session_id: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def write_track(self, session_id: str, track: str, start_sample: int, samples: np.ndarray) -> None: ...

    @abc.abstractmethod
    def track_names(self, session_id: str) -> list[str]: ...

    @abc.abstractmethod
    def read_track(self, session_id: str, track: str) -> np.ndarray | None:
        """The whole track as int16 samples (silence where nothing was routed), or None."""

    @abc.abstractmethod
    def close_session(self, session_id: str) -> None:
        """Release open files of a session (its data stays)."""

    @abc.abstractmethod
    def all_sessions(self) -> list[SessionInfo]: ...

    @abc.abstractmethod
    def ended_before(self, timestamp: float) -> list[str]:
        """Ids of the sessions that ended (or, if never ended, were created) before ``timestamp``."""

    @abc.abstractmethod
    def delete(self, session_id: str) -> None:
        """Remove the session and every file of it."""

    # --- enrolled voices (named speakers) ---

    @abc.abstractmethod
    def put_voice(self, voice: VoiceRecord, replace: bool = False) -> None:
        """Store a voice; a name already taken raises VoiceExists unless ``replace``."""

    @abc.abstractmethod
    def get_voice(self, name: str) -> VoiceRecord | None: ...

    @abc.abstractmethod
    def voices(self) -> list[VoiceRecord]:
        """Every enrolled voice, by name."""

    @abc.abstractmethod
    def delete_voice(self, name: str) -> bool:
        """Remove a voice; False if there was none of that name."""

    @abc.abstractmethod
    def close(self) -> None: ...
