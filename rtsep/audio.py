"""Base audio types: positions are integer sample indices at a stated rate."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rtsep_protocol.pcm import float_to_s16  # noqa: F401 - re-exported: the one conversion, shared with the wire


@dataclass(frozen=True)
class AudioChunk:
    """Mono float32 samples starting at ``start_sample`` (at ``sample_rate_hz``)."""

    samples: np.ndarray
    start_sample: int
    sample_rate_hz: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 1 or self.samples.dtype != np.float32:
            raise ValueError("AudioChunk.samples must be a 1-D float32 array")

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.num_samples

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate_hz

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate_hz

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate_hz


def wav_bytes(pcm_s16: np.ndarray, sample_rate_hz: int) -> bytes:
    """A mono 16-bit WAV file in memory."""
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate_hz)
        w.writeframes(np.asarray(pcm_s16, "<i2").tobytes())
    return buffer.getvalue()
