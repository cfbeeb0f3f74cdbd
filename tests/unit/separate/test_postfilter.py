"""Wiener post-filter (rtsep.separate.postfilter): mixture consistency, what it removes, block-wise = whole,
degenerate input."""

import numpy as np
import pytest

from rtsep.errors import ConfigError
from rtsep.separate.losses import pit_si_sdr_improvement
from rtsep.separate.postfilter import WienerConfig, wiener_postfilter
from tests.signals import band_noise

RATE = 8000


@pytest.fixture
def talkers():
    return np.stack([band_noise(1, 3.0, 100, 1200), band_noise(2, 3.0, 1800, 3600)])


def test_outputs_add_up_to_the_mixture(talkers):
    mixture = talkers.sum(0)
    rng = np.random.default_rng(0)
    estimates = rng.standard_normal(talkers.shape).astype(np.float32) * 0.1  # unrelated to the mixture
    out = wiener_postfilter(mixture, estimates, RATE)
    assert out.shape == talkers.shape and out.dtype == np.float32
    assert np.abs(out.sum(0) - mixture).max() <= 1e-4 * np.abs(mixture).max()


def test_leakage_where_the_other_source_dominates_is_removed(talkers):
    mixture = talkers.sum(0)
    leaky = np.stack([talkers[0] + 0.3 * talkers[1], talkers[1] + 0.3 * talkers[0]])  # each has the other in it
    before = pit_si_sdr_improvement(mixture, leaky, talkers)[1]
    after = pit_si_sdr_improvement(mixture, wiener_postfilter(mixture, leaky, RATE), talkers)[1]
    # the bands do not overlap: in the other talker's band a source gets 0.3^2 / (1 + 0.3^2) of the mixture
    assert after > before + 10.0
    ratio = pit_si_sdr_improvement(mixture, wiener_postfilter(mixture, leaky, RATE, WienerConfig(power=1.0)),
                                   talkers)[1]
    assert ratio == pytest.approx(before, abs=0.05)  # magnitude shares keep the leak as it was: 0.3 / (1 + 0.3)


def test_blocks_give_the_whole_signal_result(talkers):
    mixture = talkers.sum(0)
    estimates = np.stack([talkers[0] + 0.5 * talkers[1], 0.8 * talkers[1]])
    whole = wiener_postfilter(mixture, estimates, RATE, WienerConfig(block_s=100.0))
    for block_s in (0.25, 0.7, 1.0):  # block edges inside the signal, on and off a round number of hops
        blocked = wiener_postfilter(mixture, estimates, RATE, WienerConfig(block_s=block_s))
        assert np.abs(blocked - whole).max() <= 1e-5


def test_silent_estimates_split_the_mixture_evenly_and_silence_stays_silent(talkers):
    mixture = talkers.sum(0)
    out = wiener_postfilter(mixture, np.zeros_like(talkers), RATE)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], mixture / 2, atol=1e-5)
    np.testing.assert_allclose(out[1], mixture / 2, atol=1e-5)
    quiet = wiener_postfilter(np.zeros(RATE, np.float32), np.zeros((2, RATE), np.float32), RATE)
    assert np.isfinite(quiet).all() and not quiet.any()


def test_short_and_empty_input():
    short = np.linspace(-0.1, 0.1, 100, dtype=np.float32)  # shorter than one 256-sample window
    out = wiener_postfilter(short, np.stack([short, short * 0]), RATE)
    assert out.shape == (2, 100)
    np.testing.assert_allclose(out.sum(0), short, atol=1e-5)
    assert wiener_postfilter(np.zeros(0, np.float32), np.zeros((2, 0), np.float32), RATE).shape == (2, 0)


def test_bad_shapes_and_settings_are_refused():
    with pytest.raises(ValueError, match="mono mixture"):
        wiener_postfilter(np.zeros(10, np.float32), np.zeros((2, 11), np.float32), RATE)
    with pytest.raises(ValueError, match="mono mixture"):
        wiener_postfilter(np.zeros((2, 10), np.float32), np.zeros((2, 10), np.float32), RATE)
    with pytest.raises(ConfigError):
        WienerConfig(hop_s=0.032)
    with pytest.raises(ConfigError):
        WienerConfig(power=0.0)
