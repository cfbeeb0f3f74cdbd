"""Test signals shared by the separation tests."""

import numpy as np


def band_noise(seed: int, seconds: float, low_hz: float, high_hz: float, rate_hz: int = 8000) -> np.ndarray:
    """A stand-in talker: white noise confined to one band (so that two talkers in different bands are
    separable), peak 0.3, float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate_hz)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate_hz)
    spec[(freqs < low_hz) | (freqs > high_hz)] = 0
    x = np.fft.irfft(spec, n)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)
