"""Periodicity tells one voice from two, whoever is talking (rtsep.separate.periodicity and the purity filter's
periodicity check)."""

import numpy as np
import pytest

from rtsep.errors import ConfigError
from rtsep.separate.periodicity import frame_periodicity, periodic_share
from rtsep.separate.purity import PurityConfig, PurityFilter

RATE = 16000


def voice(f0_hz: float, seconds: float, seed: int = 0) -> np.ndarray:
    """A steady harmonic 'voice': ten partials with falling amplitude and random phases."""
    t = np.arange(int(seconds * RATE)) / RATE
    phases = np.random.default_rng(seed).uniform(0, 2 * np.pi, 10)
    return sum(np.sin(2 * np.pi * f0_hz * k * t + phases[k - 1]) / k for k in range(1, 11)).astype(np.float32) * 0.1


def brute_force_peak(x: np.ndarray, start: int, n: int, lo: int, hi: int) -> float:
    x = x.astype(np.float64) - x.mean(dtype=np.float64)
    head = x[start : start + n]
    shifted = [x[start + lag : start + lag + n] for lag in range(lo, hi + 1)]
    return max(float(np.dot(head, s) / np.sqrt(np.dot(head, head) * np.dot(s, s))) for s in shifted)


def test_frame_peaks_equal_the_direct_normalised_autocorrelation():
    rng = np.random.default_rng(1)
    x = voice(133, 1.0) + 0.02 * rng.standard_normal(RATE).astype(np.float32)
    peaks, energies = frame_periodicity(x, RATE)
    n, hop, lo, hi = 640, 160, 40, 229  # 40 ms, 10 ms, 400 Hz .. 70 Hz at 16 kHz
    assert len(peaks) == (len(x) - n - hi) // hop + 1
    for k in (0, 13, len(peaks) - 1):
        assert peaks[k] == pytest.approx(brute_force_peak(x, k * hop, n, lo, hi), abs=1e-9)
        centred = x.astype(np.float64) - x.mean(dtype=np.float64)
        assert energies[k] == pytest.approx(float(np.sum(centred[k * hop : k * hop + n] ** 2)), rel=1e-9)


def test_one_voice_is_periodic_two_voices_and_noise_are_not():
    one = voice(120, 1.0, 1)
    two = one + voice(173, 1.0, 2)
    quieter_second = one + 0.56 * voice(187, 1.0, 3)  # the second voice 5 dB down
    noise = np.random.default_rng(0).standard_normal(RATE).astype(np.float32) * 0.1
    assert periodic_share(*frame_periodicity(one, RATE)) == 1.0
    assert periodic_share(*frame_periodicity(two, RATE)) == 0.0
    assert periodic_share(*frame_periodicity(quieter_second, RATE)) < 0.1
    assert periodic_share(*frame_periodicity(noise, RATE)) == 0.0


def test_share_counts_voiced_frames_only_and_short_or_silent_audio_gives_none():
    peaks = np.array([0.95, 0.9, 0.2, 0.1])
    energies = np.array([1.0, 1.0, 0.2, 0.01])  # the last frame is 20 dB below the loudest: not voiced
    assert periodic_share(peaks, energies, 0.8, voiced_range_db=10) == pytest.approx(2 / 3)
    assert periodic_share(*frame_periodicity(np.zeros(RATE, np.float32), RATE)) is None
    assert frame_periodicity(np.ones(500, np.float32), RATE)[0].size == 0  # shorter than a frame and a period


def test_filter_leaves_out_the_two_voice_part_of_a_turn_without_an_embedding():
    # talker A's turn 0..6 s holds an overlap at 2..4 s where B is 5 dB below A: one voice to an embedding
    a = voice(118, 6.0, 4)
    b = np.zeros_like(a)
    b[2 * RATE : 4 * RATE] = 0.56 * voice(181, 2.0, 5)
    config = PurityConfig(min_similarity=0.0, min_periodic_share=0.5)
    kept = PurityFilter(config, encoder=None).filter(a + b, RATE, {"A": [(0.0, 6.0)]})
    grid = np.zeros(600, bool)  # 10 ms grid
    for start, end in kept["A"]:
        grid[int(round(start * 100)) : int(round(end * 100))] = True
    assert not grid[215:385].any(), "the overlapped 2..4 s must be left out (but for its edges)"
    assert grid[:170].all() and grid[430:].all()  # clean speech away from it stays
    plain = PurityFilter(PurityConfig(min_similarity=0.0, min_periodic_share=0.0)).filter(a + b, RATE,
                                                                                       {"A": [(0.0, 6.0)]})
    assert plain == {"A": [(0.0, 6.0)]}  # both checks off: everything stays (and no encoder is loaded)


@pytest.mark.parametrize("bad", [{"min_periodic_share": -0.1}, {"min_periodic_share": 1.5}, {"periodic_above": 0.0}])
def test_periodicity_settings_are_checked(bad):
    with pytest.raises(ConfigError):
        PurityConfig(**bad)
