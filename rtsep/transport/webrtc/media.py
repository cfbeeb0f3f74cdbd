"""Media conversion: decoded frames to mono float32 and back, and the outgoing slot track."""

from __future__ import annotations

import asyncio
import fractions
from collections import deque

import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from rtsep.audio import float_to_s16
from rtsep.errors import UnsupportedAudio

_SCALE = {"s16": 1 / 32768.0, "s32": 1 / 2147483648.0, "flt": 1.0, "dbl": 1.0}


def frame_to_mono(frame: AudioFrame) -> np.ndarray:
    """A decoded audio frame (packed or planar, any channel count) -> mono float32 in [-1, 1]."""
    name = frame.format.name.rstrip("p")
    if name not in _SCALE:
        raise UnsupportedAudio(f"unsupported decoded sample format {frame.format.name!r}",
                               error_code="unsupported_encoding")
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data.reshape(channels, -1)
    else:
        data = data.reshape(-1, channels).T
    mono = data.astype(np.float32).mean(axis=0) if channels > 1 else data[0].astype(np.float32)
    return mono * np.float32(_SCALE[name])


def mono_to_frame(samples: np.ndarray, sample_rate_hz: int, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(float_to_s16(samples).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate_hz
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, sample_rate_hz)
    return frame


class SlotTrack(MediaStreamTrack):
    """One outgoing speaker track. The session's pacer pushes a frame every tick once the slot has a
    speaker; until then ``recv`` waits and nothing is sent."""

    kind = "audio"

    def __init__(self, slot: int, sample_rate_hz: int, max_queued_frames: int) -> None:
        super().__init__()
        self.slot = slot
        self.sample_rate_hz = sample_rate_hz
        self._frames: deque[np.ndarray] = deque(maxlen=max_queued_frames)
        self._ready = asyncio.Event()
        self._pts = 0
        self.dropped_frames = 0

    def push(self, samples: np.ndarray) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped_frames += 1  # the sender is not reading (not connected yet): oldest goes
        self._frames.append(samples)
        self._ready.set()

    async def recv(self) -> AudioFrame:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        samples = self._frames.popleft()
        frame = mono_to_frame(samples, self.sample_rate_hz, self._pts)
        self._pts += samples.size
        return frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()
