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


class IntegerRatioResampler:
    """Converts a mono float32 stream between two rates of integer ratio (16 kHz <-> 8 kHz, 48 kHz -> 16 kHz) with a
    linear-phase windowed-sinc FIR, holding back only half its length: ``half_width_s`` (3 ms by default).

    soxr's streaming converter is aligned the same way (output sample ``k`` is the input at time ``k / out_rate``)
    but releases its output in blocks: at 16 kHz -> 8 kHz it holds back ~90 ms on average, and as much again on the
    way back, which a separated live track would pay twice (bench/RESULTS.md "Separated frames on time"). Here
    output sample ``k`` is released as soon as the input reaches ``k / out_rate + half_width_s``. The output depends
    only on the concatenated input, never on how it was cut into calls; in all it returns
    ``round(input_samples * out_rate / in_rate)`` samples (half up), as soxr does.
    """

    def __init__(self, in_rate_hz: int, out_rate_hz: int, half_width_s: float = 0.003, beta: float = 8.0) -> None:
        high, low = max(in_rate_hz, out_rate_hz), min(in_rate_hz, out_rate_hz)
        if low <= 0 or high % low:
            raise ValueError(f"{in_rate_hz} Hz -> {out_rate_hz} Hz is not an integer ratio")
        self.in_rate_hz, self.out_rate_hz = in_rate_hz, out_rate_hz
        self.ratio = high // low
        self.up = out_rate_hz > in_rate_hz
        # the filter runs at the high rate: half its length (the delay held back) in high-rate samples
        self.half_samples = max(self.ratio, int(round(half_width_s * high)))
        taps = np.arange(-self.half_samples, self.half_samples + 1, dtype=np.float64)
        cutoff = 0.5 / self.ratio  # the low rate's Nyquist, in cycles per high-rate sample
        h = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.kaiser(taps.size, beta)
        h /= h.sum()
        self._taps = (h * self.ratio if self.up else h).astype(np.float32)
        self._buffer = np.zeros(self.half_samples, np.float32)  # high-rate history; zeros before the first sample
        self._buffer_start = -self.half_samples  # high-rate index of the buffer's first sample
        self._next_out = 0  # output samples returned so far
        self._in_samples = 0
        self._flushed = False

    def process(self, samples: np.ndarray) -> np.ndarray:
        if self._flushed:
            raise RuntimeError("resampler already flushed")
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        self._in_samples += samples.size
        self._append(samples)
        return self._emit(final=False)

    def flush(self) -> np.ndarray:
        """The rest, as if the input went on in silence, up to the total the input's length calls for."""
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        self._append(np.zeros(0, np.float32), pad=self.half_samples + self.ratio)
        return self._emit(final=True)

    def _append(self, samples: np.ndarray, pad: int = 0) -> None:
        if self.up:  # the high-rate signal: each input sample followed by ratio - 1 zeros
            stuffed = np.zeros(samples.size * self.ratio, np.float32)
            stuffed[:: self.ratio] = samples
            samples = stuffed
        if pad:
            samples = np.concatenate([samples, np.zeros(pad, np.float32)])
        if samples.size:
            self._buffer = np.concatenate([self._buffer, samples])

    def _emit(self, final: bool) -> np.ndarray:
        high_end = self._buffer_start + self._buffer.size  # high-rate samples known (real or padding)
        if final:
            total = (2 * self._in_samples * self.out_rate_hz + self.in_rate_hz) // (2 * self.in_rate_hz)
        else:
            total = None
        step = 1 if self.up else self.ratio  # high-rate samples per output sample
        # output k is centred on high-rate sample k * step and needs up to k * step + half_samples
        last = (high_end - 1 - self.half_samples) // step  # the last output computable now
        stop = last + 1 if total is None else min(last + 1, total)
        count = max(0, stop - self._next_out)
        if count:
            first = self._next_out * step - self.half_samples - self._buffer_start
            span = self._buffer[first : first + (count - 1) * step + self._taps.size]
            # each output is one window's dot product with the taps; np.correlate runs them in C on the buffer itself
            # (a matrix of strided windows was copied first: bench/RESULTS.md "Capacity with separation on")
            out = np.correlate(span, self._taps, "valid")[::step].astype(np.float32, copy=False)
            self._next_out += count
        else:
            out = np.zeros(0, np.float32)
        # keep what the next output needs: from its window's first sample on
        keep_from = self._next_out * step - self.half_samples - self._buffer_start
        if keep_from > 0:
            self._buffer = self._buffer[keep_from:]
            self._buffer_start += keep_from
        return out


def low_delay_resampler(in_rate_hz: int, out_rate_hz: int) -> StreamResampler | IntegerRatioResampler:
    """The converter for a live path whose delay matters: :class:`IntegerRatioResampler` between rates of integer
    ratio, soxr's :class:`StreamResampler` otherwise (or where the rates are equal: it passes samples through)."""
    high, low = max(in_rate_hz, out_rate_hz), min(in_rate_hz, out_rate_hz)
    if in_rate_hz != out_rate_hz and low > 0 and high % low == 0:
        return IntegerRatioResampler(in_rate_hz, out_rate_hz)
    return StreamResampler(in_rate_hz, out_rate_hz)
