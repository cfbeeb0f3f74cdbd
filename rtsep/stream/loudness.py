"""EBU R128 loudness normalisation of a finished track (sans-I/O): one static gain per track, never per frame.

The integrated loudness is measured by pyloudnorm (ITU-R BS.1770-4: K-weighting, 400 ms blocks, absolute
gate -70 LUFS, relative gate -10 LU); the track is scaled to the target, then turned down further if its true
peak (4x oversampled, BS.1770 Annex 2) would pass the ceiling, so that nothing clips. A silent track, one
shorter than a gating block, or one whose every block is below the absolute gate is left as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TRUE_PEAK_OVERSAMPLING = 4
_BLOCK_SAMPLES = 1 << 18  # true-peak estimate in blocks (bounded memory on long tracks)
_CONTEXT_SAMPLES = 64  # ... each with this much context either side (the interpolation filter's reach)


@dataclass(frozen=True)
class LoudnessResult:
    measured_lufs: float | None  # None: not measurable (silent, too short, below the gate)
    gain_db: float  # applied (0.0 when left as it was)
    true_peak_dbtp: float | None  # of the result
    limited: bool  # the true-peak ceiling lowered the gain below the loudness target's


def true_peak(samples: np.ndarray, oversampling: int = TRUE_PEAK_OVERSAMPLING) -> float:
    """Linear true peak: the largest magnitude of the signal upsampled ``oversampling`` times (polyphase)."""
    from scipy.signal import resample_poly

    if samples.size == 0:
        return 0.0
    peak = float(np.max(np.abs(samples)))
    n = samples.size
    for start in range(0, n, _BLOCK_SAMPLES):
        lo, hi = max(0, start - _CONTEXT_SAMPLES), min(n, start + _BLOCK_SAMPLES + _CONTEXT_SAMPLES)
        up = resample_poly(samples[lo:hi].astype(np.float64), oversampling, 1)
        inner = up[(start - lo) * oversampling: (min(n, start + _BLOCK_SAMPLES) - lo) * oversampling]
        if inner.size:
            peak = max(peak, float(np.max(np.abs(inner))))
    return peak


def integrated_loudness(samples: np.ndarray, rate_hz: int) -> float | None:
    """Integrated loudness in LUFS, or None where it cannot be measured (silent, shorter than 0.4 s, gated out)."""
    import pyloudnorm

    meter = pyloudnorm.Meter(rate_hz)
    if samples.size < round(meter.block_size * rate_hz) or not np.any(samples):
        return None
    lufs = float(meter.integrated_loudness(samples.astype(np.float64)))
    return lufs if math.isfinite(lufs) else None


def normalize(samples: np.ndarray, rate_hz: int, target_lufs: float = -23.0,
              peak_dbtp: float = -1.0) -> tuple[np.ndarray, LoudnessResult]:
    """``samples`` (float, full scale 1.0) scaled to ``target_lufs``, true peak at most ``peak_dbtp``."""
    measured = integrated_loudness(samples, rate_hz)
    if measured is None:
        peak = true_peak(samples)
        return samples, LoudnessResult(None, 0.0, _db(peak), False)
    gain_db = target_lufs - measured
    peak = true_peak(samples) * 10 ** (gain_db / 20)
    ceiling = 10 ** (peak_dbtp / 20)
    limited = peak > ceiling
    if limited:
        gain_db -= 20 * math.log10(peak / ceiling)
        peak = ceiling
    out = (samples * np.float32(10 ** (gain_db / 20))).astype(np.float32)
    return out, LoudnessResult(round(measured, 2), round(gain_db, 2), _db(peak), limited)


def _db(linear: float) -> float | None:
    return round(20 * math.log10(linear), 2) if linear > 0 else None
