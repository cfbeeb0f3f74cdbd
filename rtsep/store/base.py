"""The store interface: what the server needs to keep for every session."""

from __future__ import annotations

import abc
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

    @abc.abstractmethod
    def close(self) -> None: ...
