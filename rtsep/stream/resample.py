"""Streaming sample-rate conversion (soxr), one long-lived converter per input stream."""

from __future__ import annotations

import numpy as np
import soxr


class StreamResampler:
    """Converts a mono float32 stream from ``in_rate_hz`` to ``out_rate_hz``.

    The output depends only on the concatenated input, never on how it was cut into calls.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int, quality: str = "HQ") -> None:
        self.in_rate_hz = in_rate_hz
        self.out_rate_hz = out_rate_hz
        self._stream = (
            None if in_rate_hz == out_rate_hz else soxr.ResampleStream(in_rate_hz, out_rate_hz, 1, "float32", quality)
        )
        self._flushed = False

    def process(self, samples: np.ndarray) -> np.ndarray:
        if self._flushed:
            raise RuntimeError("resampler already flushed")
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        if self._stream is None:
            return samples
        return self._stream.resample_chunk(samples, last=False)

    def flush(self) -> np.ndarray:
        """Drain the converter's delay line at the end of the stream."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)
