"""Input-rate limit of a live stream (sans-I/O: the caller passes the clock's reading)."""

from __future__ import annotations

from dataclasses import dataclass

from rtsep.errors import TooFast


@dataclass(frozen=True)
class RateLimit:
    """Audio may run ahead of the wall clock by ``burst_s``, and then by ``max_ratio`` × real time."""

    max_ratio: float = 4.0
    burst_s: float = 30.0


class RealtimeGuard:
    def __init__(self, limit: RateLimit, start_s: float) -> None:
        self.limit = limit
        self.start_s = start_s

    def check(self, audio_s: float, now_s: float) -> None:
        elapsed_s = max(0.0, now_s - self.start_s)
        allowed_s = self.limit.burst_s + self.limit.max_ratio * elapsed_s
        if audio_s > allowed_s:
            raise TooFast(
                f"received {audio_s:.1f} s of audio in {elapsed_s:.1f} s, more than {self.limit.max_ratio:g}x "
                f"real time beyond a {self.limit.burst_s:g} s burst; use `rtsep process` for files"
            )
