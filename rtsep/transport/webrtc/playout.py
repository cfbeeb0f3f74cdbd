"""Outgoing audio (sans-I/O): which slot plays which track (:class:`SlotMap`, announced with a ``slot``
message), and one jitter buffer on one sample timeline for all slots (:class:`Playout`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class SlotAssignment:
    """Server -> client (WebRTC only): speaker ``index`` plays on slot ``slot`` (transceiver ``mid``);
    ``slot`` is null when every slot is taken."""

    type: ClassVar[str] = "slot"
    slot: int | None
    mid: str | None
    speaker: str
    index: int


class SlotMap:
    """Speakers -> outgoing slots, first come first served; a slot stays its speaker's for the session."""

    def __init__(self, mids: list[str]) -> None:
        self.mids = mids
        self._by_speaker: dict[int, int | None] = {}

    def __len__(self) -> int:
        return len(self.mids)

    def lookup(self, speaker: int) -> tuple[int | None, bool]:
        """(slot, new): ``new`` is True the first time ``speaker`` is seen."""
        if speaker in self._by_speaker:
            return self._by_speaker[speaker], False
        taken = {s for s in self._by_speaker.values() if s is not None}
        free = [i for i in range(len(self.mids)) if i not in taken]
        slot = free[0] if free else None
        self._by_speaker[speaker] = slot
        return slot, True

    @property
    def assigned(self) -> dict[int, int]:
        return {speaker: slot for speaker, slot in self._by_speaker.items() if slot is not None}


# --- playout (sans-I/O) -------------------------------------------------------------------------


class Playout:
    """Jitter buffers of all slots on one timeline of absolute sample positions (so speakers stay aligned).

    ``write`` puts a speaker's audio at its position; ``read`` takes the next ``n`` samples of every slot.
    - After a start, or when the buffer ran dry and new audio begins later, playback resumes
      ``prebuffer`` samples before it (a cushion against the jitter of inference).
    - Underrun: ``read`` returns silence and does not advance (the cushion grows by the stall). When the
      audio that resumes it continues where playback stopped, the underrun was a glitch (audible gap in a
      turn), counted in ``glitches``; when it starts later, there was nothing to play (a pause).
    - Audio for positions already played is late and dropped; audio further ahead than ``capacity``
      drops the oldest buffered audio (playback jumps forward).
    """

    def __init__(self, slots: int, capacity_samples: int, prebuffer_samples: int) -> None:
        if slots < 0 or prebuffer_samples < 0 or capacity_samples <= prebuffer_samples:
            raise ValueError("need slots >= 0 and 0 <= prebuffer_samples < capacity_samples")
        self.slots = slots
        self.capacity = capacity_samples
        self.prebuffer = prebuffer_samples
        self._ring = np.zeros((slots, capacity_samples), np.float32)
        self.read_pos: int | None = None
        self.write_end: int | None = None
        self.played_samples = 0
        self.underrun_samples = 0
        self.late_samples = 0
        self.dropped_samples = 0
        self.glitches = 0
        self._stalled = False

    @property
    def buffered_samples(self) -> int:
        if self.read_pos is None or self.write_end is None:
            return 0
        return max(0, self.write_end - self.read_pos)

    def write(self, slot: int, start_sample: int, samples: np.ndarray) -> None:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} out of range")
        samples = np.asarray(samples, np.float32)
        if samples.size == 0:
            return
        if self.read_pos is None or self.write_end is None:
            self.read_pos = start_sample - self.prebuffer
            self.write_end = self.read_pos
        elif self.write_end <= self.read_pos and start_sample - self.prebuffer > self.read_pos:
            self._advance_to(start_sample - self.prebuffer)  # ran dry: resume with a fresh cushion
        elif self._stalled:
            self.glitches += 1  # what should have been playing arrived too late
        self._stalled = False
        end = start_sample + samples.size
        if end - self.read_pos > self.capacity:
            before = self.read_pos
            self._advance_to(end - self.capacity)
            self.dropped_samples += self.read_pos - before
        if start_sample < self.read_pos:
            late = min(samples.size, self.read_pos - start_sample)
            self.late_samples += late
            samples, start_sample = samples[late:], start_sample + late
            if samples.size == 0:
                return
        index = np.arange(start_sample, start_sample + samples.size) % self.capacity
        self._ring[slot, index] = samples
        self.write_end = max(self.write_end, start_sample + samples.size)

    def read(self, n: int) -> np.ndarray:
        """(slots, n) float32: the next ``n`` samples of every slot, silence where there is none."""
        out = np.zeros((self.slots, n), np.float32)
        if self.read_pos is None or self.write_end is None:
            return out
        take = min(n, self.write_end - self.read_pos)
        if take > 0:
            index = np.arange(self.read_pos, self.read_pos + take) % self.capacity
            out[:, :take] = self._ring[:, index]
            self._ring[:, index] = 0.0
            self.read_pos += take
            self.played_samples += take
        if take < n:
            self.underrun_samples += n - max(take, 0)
            self._stalled = True
        return out

    def skip(self, n: int) -> int:
        """Discard up to ``n`` buffered samples (the reader fell behind); returns how many."""
        if self.read_pos is None or self.write_end is None:
            return 0
        take = max(0, min(n, self.write_end - self.read_pos))
        self._advance_to(self.read_pos + take)
        self.dropped_samples += take
        return take

    def _advance_to(self, position: int) -> None:
        assert self.read_pos is not None
        if position <= self.read_pos:
            return
        cleared = min(position - self.read_pos, self.capacity)
        index = np.arange(self.read_pos, self.read_pos + cleared) % self.capacity
        self._ring[:, index] = 0.0
        self.read_pos = position
