"""Acknowledgements that follow their store commit (sans-I/O).

A session's driver hands its store writes, numbered in order (:meth:`Acknowledgements.issue`), to the writer
thread, which commits them in that order and confirms each commit (or reports its failure). Some outputs tell the
client that something is kept: a closed turn (its ``segment`` message), the final timeline, and a track's audio,
whose acknowledgement is a ``stored`` mark per track (the audio frames themselves go to the client live, before
their commit: their latency matters). This ledger holds each acknowledgement until its write has committed, so
that whatever the client was told is kept survives the server's death the next instant.

- Held items are released in the order they were held, once every write up to theirs has committed.
- Track marks are coalesced: a track's mark is released once it would lag the track's committed audio by
  ``mark_interval_samples``, or just before a released item (a segment, the final timeline: so every track's
  last mark comes just before the final timeline); a mark says "samples ``[0, end_sample)`` of this track are
  committed". (A mark per commit would add one message per track and step to the client's stream.)
- After a failed write nothing more is acknowledged: a later commit does not make up for the lost write (and the
  session is failing anyway).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TrackMark:
    """Samples ``[0, end_sample)`` of track ``name`` (frame index ``index``) are committed."""

    name: str
    index: int
    end_sample: int


class Acknowledgements:
    def __init__(self, mark_interval_samples: int) -> None:
        if mark_interval_samples < 1:
            raise ValueError(f"mark_interval_samples must be >= 1, got {mark_interval_samples}")
        self.mark_interval_samples = mark_interval_samples
        self._issued = 0
        self._committed = -1  # the highest write number committed: writes commit in order
        self._held: deque[tuple[int, Any]] = deque()
        self._track_writes: deque[tuple[int, str, int, int]] = deque()  # (write, name, index, end_sample)
        self._committed_end: dict[str, tuple[int, int]] = {}  # name -> (index, end_sample) committed
        self._marked_end: dict[str, int] = {}  # name -> end_sample last released in a mark
        self.failed = False

    @property
    def pending_writes(self) -> int:
        """Writes issued and neither committed nor failed."""
        return self._issued - 1 - self._committed

    def issue(self) -> int:
        """The number of the session's next store write."""
        number = self._issued
        self._issued += 1
        return number

    def hold(self, write: int, item: Any) -> None:
        """``item`` may go to the client once write ``write`` has committed."""
        self._check_issued(write)
        self._held.append((write, item))

    def track_written(self, write: int, name: str, index: int, end_sample: int) -> None:
        """Write ``write`` puts track ``name``'s audio up to ``end_sample``."""
        self._check_issued(write)
        self._track_writes.append((write, name, index, end_sample))

    def committed(self, write: int) -> list[Any]:
        """Write ``write`` has committed: what may go to the client now (:class:`TrackMark`\\ s, then held items)."""
        self._check_issued(write)
        if write <= self._committed:
            raise ValueError(f"write {write} confirmed twice or out of order (committed up to {self._committed})")
        self._committed = write
        if self.failed:
            return []
        released = []
        while self._held and self._held[0][0] <= write:
            released.append(self._held.popleft()[1])
        while self._track_writes and self._track_writes[0][0] <= write:
            _, name, index, end_sample = self._track_writes.popleft()
            previous = self._committed_end.get(name, (index, 0))[1]
            self._committed_end[name] = (index, max(previous, end_sample))
        marks = []
        for name, (index, end_sample) in self._committed_end.items():
            marked = self._marked_end.get(name, 0)
            if end_sample > marked and (released or end_sample - marked >= self.mark_interval_samples):
                self._marked_end[name] = end_sample
                marks.append(TrackMark(name, index, end_sample))
        return marks + released  # the marks first: the final timeline stays the last message before ``done``

    def write_failed(self, write: int) -> None:
        """Write ``write`` failed: nothing held is released, now or later."""
        self._check_issued(write)
        self._committed = max(self._committed, write)
        self.failed = True
        self._held.clear()
        self._track_writes.clear()

    def _check_issued(self, write: int) -> None:
        if not 0 <= write < self._issued:
            raise ValueError(f"write {write} was never issued (issued {self._issued})")
