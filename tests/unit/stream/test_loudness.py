"""EBU R128 normalisation of finished tracks (rtsep.stream.loudness): one gain, a true-peak ceiling, silence kept."""

import numpy as np
import pytest

from rtsep.stream.loudness import integrated_loudness, normalize, true_peak

RATE = 16000


def tone(seconds: float, amplitude: float, hz: float = 1000.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise bursts (0.5 s on, 0.5 s off) with a large crest factor."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(round(seconds * RATE)) * 0.02
    x[(np.arange(x.size) // (RATE // 2)) % 2 == 1] = 0
    x[::997] = 0.1  # sparse clicks make the peak, not the loudness
    return x.astype(np.float32)


@pytest.mark.parametrize("target", [-23.0, -16.0])
def test_a_quiet_track_is_brought_to_the_target(target):
    x = speechlike(6.0)
    out, result = normalize(x, RATE, target, peak_dbtp=-1.0)
    assert not result.limited
    assert integrated_loudness(out, RATE) == pytest.approx(target, abs=0.05)
    assert result.gain_db == pytest.approx(target - result.measured_lufs, abs=0.01)
    # one static gain: the ratio to the input is the same everywhere (no per-frame gain, no pumping)
    nz = x != 0
    ratio = out[nz] / x[nz]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)


def test_the_true_peak_ceiling_turns_a_track_down_rather_than_clipping():
    x = tone(3.0, 0.05) + np.pad(np.full(10, 0.6, np.float32), (RATE, 3 * RATE - RATE - 10))
    out, result = normalize(x.astype(np.float32), RATE, -5.0, peak_dbtp=-1.0)  # a loud target: the peak binds
    assert result.limited
    assert true_peak(out) <= 10 ** (-1.0 / 20) + 1e-4
    assert np.max(np.abs(out)) < 1.0
    assert integrated_loudness(out, RATE) < -5.0


def test_true_peak_finds_inter_sample_peaks():
    # a sine at a quarter of the rate, sampled 45 degrees off its peaks: every sample is at 0.707 of the peak
    n = np.arange(4000)
    x = np.sin(2 * np.pi * n / 4 + np.pi / 4).astype(np.float32)
    assert np.max(np.abs(x)) == pytest.approx(np.sqrt(0.5), abs=1e-3)
    assert true_peak(x) > 0.95


def test_silence_and_too_short_tracks_are_left_as_they_are():
    silent = np.zeros(3 * RATE, np.float32)
    out, result = normalize(silent, RATE)
    assert out is silent and result.measured_lufs is None and result.gain_db == 0.0
    short = tone(0.2, 0.1)
    out, result = normalize(short, RATE)
    assert out is short and result.measured_lufs is None
    below_gate = tone(2.0, 1e-6)  # about -123 LUFS: every block is under the absolute gate
    out, result = normalize(below_gate, RATE)
    assert out is below_gate and result.measured_lufs is None


def test_the_long_track_peak_is_found_across_blocks():
    x = np.zeros(600_000, np.float32)
    x[262_144] = 0.9  # at the boundary of the estimate's first block
    assert true_peak(x) >= 0.9
