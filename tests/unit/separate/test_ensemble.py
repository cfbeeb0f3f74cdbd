"""Offline speed ensemble (rtsep.separate.ensemble): the speeds, the way back to the original time axis, the
block-wise channel alignment and the average."""

import numpy as np
import pytest
import torch

from rtsep.separate.adapt import separate_offline
from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig
from rtsep.separate.ensemble import align_blocks, at_speed, ensemble_speeds, separate_ensemble
from tests.signals import band_noise

RATE = 8000


def test_speeds_spread_evenly_around_one():
    assert ensemble_speeds(5, 0.08) == [0.92, 0.96, 1.0, 1.04, 1.08]
    assert ensemble_speeds(2, 0.1) == [0.9, 1.1]
    assert ensemble_speeds(1, 0.08) == [1.0]
    assert ensemble_speeds(4, 0.0) == [1.0]
    with pytest.raises(ValueError):
        ensemble_speeds(0, 0.08)
    with pytest.raises(ValueError):
        ensemble_speeds(3, 0.6)


@pytest.mark.parametrize("speed", [0.92, 1.0, 1.08])
def test_a_pass_at_another_speed_comes_back_on_the_original_time_axis(speed):
    x = band_noise(0, 2.0, 200, 3000)
    played = []

    def separate(signal):  # stand-in separator: source 0 the input, source 1 half of it
        played.append(len(signal))
        return np.stack([signal, 0.5 * signal])

    out = at_speed(separate, x, RATE, speed)
    assert out.shape == (2, len(x)) and out.dtype == np.float32
    assert abs(played[0] - len(x) / speed) <= 2  # the separator heard it at that speed
    inner = slice(200, -200)  # away from the resampler's edges
    np.testing.assert_allclose(out[0, inner], x[inner], atol=2e-3)
    np.testing.assert_allclose(out[1, inner], 0.5 * x[inner], atol=2e-3)


def test_channels_are_aligned_block_by_block():
    a, b = band_noise(1, 3.0, 100, 900), band_noise(2, 3.0, 1500, 3500)
    reference = np.stack([a, b])
    swapped = reference.copy()
    swapped[:, RATE : 2 * RATE] = swapped[::-1, RATE : 2 * RATE]  # the second second has its sources swapped
    np.testing.assert_array_equal(align_blocks(reference, swapped, RATE), reference)
    three = np.stack([a, b, a + b])
    np.testing.assert_array_equal(align_blocks(three, three[[2, 0, 1]], RATE // 2), three)


def test_the_ensemble_averages_passes_in_the_reference_order():
    a, b = band_noise(3, 2.0, 100, 900), band_noise(4, 2.0, 1500, 3500)
    mix = a + b
    calls = []

    def separate(signal):  # an oracle that swaps its outputs on every other pass and scales them by the pass
        calls.append(len(signal))
        k = len(calls)
        spec = np.fft.rfft(signal)
        freqs = np.fft.rfftfreq(len(signal), 1 / (RATE * len(signal) / len(mix)))
        low = np.fft.irfft(np.where(freqs < 1200, spec, 0), len(signal))
        high = np.fft.irfft(np.where(freqs >= 1200, spec, 0), len(signal))
        out = np.stack([low, high]) * (1.0 + 0.1 * k)
        return out[::-1] if k % 2 == 0 else out

    out = separate_ensemble(separate, mix, RATE, [0.92, 1.0, 1.08])
    assert len(calls) == 3 and calls[0] == len(mix)  # the reference pass (speed 1) first
    inner = slice(400, -400)
    # every pass put back in the reference's order: the low band stays in channel 0 (the mean gain is 1.2)
    np.testing.assert_allclose(out[0, inner] / 1.2, a[inner], atol=0.03)
    np.testing.assert_allclose(out[1, inner] / 1.2, b[inner], atol=0.03)


def test_one_member_is_the_plain_causal_pass():
    torch.manual_seed(0)
    model = ConvTasNet(ConvTasNetConfig(encoder_filters=16, window_samples=16, bottleneck_channels=8,
                                        hidden_channels=16, blocks_per_repeat=2, repeats=1)).eval()
    x = band_noise(5, 1.5, 100, 3000)
    plain = separate_offline(model, x)
    np.testing.assert_array_equal(separate_ensemble(lambda s: separate_offline(model, s), x, RATE, [1.0]), plain)
    three = separate_ensemble(lambda s: separate_offline(model, s), x, RATE, ensemble_speeds(3, 0.08))
    assert three.shape == plain.shape and not np.allclose(three, plain)
