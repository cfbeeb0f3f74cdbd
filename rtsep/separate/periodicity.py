"""How much of a stretch of speech sounds like one voice: the share of its voiced frames that are strongly periodic.

One voice in a voiced frame repeats itself at its pitch period: the normalised autocorrelation of the frame with
itself, shifted by one period, is close to 1. Two voices at once have two periods; at no single lag does the sum
repeat, and the peak falls. The frame's peak is taken over the lags of a pitch range (``min_f0_hz`` to
``max_f0_hz``). A stretch's share is the fraction of its voiced frames (energy within ``voiced_range_db`` of the
stretch's loudest frame) whose peak is at least ``periodic_above``.

This does not depend on who is talking, so it catches what a speaker embedding misses: an overlap in which one
voice is louder sounds like that talker to the embedding, but it is still two voices (bench/RESULTS.md,
"Periodicity"). Numpy only; frames are batched through an FFT.
"""

from __future__ import annotations

import numpy as np

FRAMES_PER_BATCH = 2048


def frame_periodicity(audio: np.ndarray, rate_hz: int, frame_s: float = 0.04, hop_s: float = 0.01,
                      min_f0_hz: float = 70.0, max_f0_hz: float = 400.0) -> tuple[np.ndarray, np.ndarray]:
    """(peak, energy) per frame of ``audio`` (mono): frame k is ``frame_s`` long from sample k * hop; ``peak`` is
    its highest normalised autocorrelation at a lag of one period of ``min_f0_hz``..``max_f0_hz``, ``energy`` its sum
    of squares. A frame needs a period of ``min_f0_hz`` after it; audio shorter than that gives no frames."""
    x = np.asarray(audio, np.float64)
    x = x - x.mean() if x.size else x
    n, hop = round(frame_s * rate_hz), max(1, round(hop_s * rate_hz))
    lo, hi = max(1, int(np.floor(rate_hz / max_f0_hz))), int(np.ceil(rate_hz / min_f0_hz))
    if n < 1 or len(x) < n + hi:
        return np.zeros(0), np.zeros(0)
    count = (len(x) - n - hi) // hop + 1
    size = 1 << int(np.ceil(np.log2(2 * (n + hi))))
    # sum of squares of x[s : s + n] for every start s, from one cumulative sum
    cumulative = np.concatenate([[0.0], np.cumsum(x * x)])
    peaks, energies = np.zeros(count), np.zeros(count)
    windows = np.lib.stride_tricks.sliding_window_view(x, n + hi)[::hop][:count]
    for first in range(0, count, FRAMES_PER_BATCH):
        seg = windows[first : first + FRAMES_PER_BATCH]  # (frames, n + hi)
        spectrum = np.fft.rfft(seg, size) * np.conj(np.fft.rfft(seg[:, :n], size))
        corr = np.fft.irfft(spectrum, size)[:, lo : hi + 1]  # corr[:, j] = sum_t head[t] seg[t + lo + j]
        starts = (np.arange(first, first + len(seg)) * hop)[:, None]
        lags = np.arange(lo, hi + 1)[None, :]
        shifted = cumulative[starts + lags + n] - cumulative[starts + lags]
        own = cumulative[starts[:, 0] + n] - cumulative[starts[:, 0]]
        denominator = np.sqrt(np.maximum(own[:, None] * shifted, 0.0)) + 1e-12
        peaks[first : first + len(seg)] = np.max(corr / denominator, axis=1)
        energies[first : first + len(seg)] = own
    return peaks, energies


def periodic_share(peaks: np.ndarray, energies: np.ndarray, periodic_above: float = 0.8,
                   voiced_range_db: float = 10.0) -> float | None:
    """Share of the voiced frames (energy within ``voiced_range_db`` of the loudest) whose peak is at least
    ``periodic_above``; None when there is no frame with energy."""
    if peaks.size == 0 or not np.max(energies) > 0:
        return None
    voiced = energies >= np.max(energies) * 10 ** (-voiced_range_db / 10)
    return float(np.mean(peaks[voiced] >= periodic_above))
