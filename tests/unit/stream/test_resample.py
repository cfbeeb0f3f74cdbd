"""The live paths' converters (rtsep.stream.resample): chunking-invariant, aligned as soxr is, little held back."""

import numpy as np
import pytest
import soxr

from rtsep.stream.resample import IntegerRatioResampler, StreamResampler, low_delay_resampler


def speechlike(rate: int, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A band-limited signal below 3.5 kHz: harmonics of a gliding pitch plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 25) if k * 160 < 3500)
    return (0.2 * x + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def run(resampler, x: np.ndarray, cuts: list[int]) -> np.ndarray:
    pieces = [resampler.process(x[a:b]) for a, b in zip(cuts, cuts[1:])]
    return np.concatenate([*pieces, resampler.flush()])


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 8000), (8000, 16000), (48000, 16000)])
def test_output_is_soxr_s_within_its_accuracy_whatever_the_cuts(in_rate, out_rate):
    x = speechlike(in_rate)
    rng = np.random.default_rng(2)
    cuts = [0, *sorted(rng.choice(np.arange(1, x.size), 40, replace=False)), x.size]
    once = run(IntegerRatioResampler(in_rate, out_rate), x, [0, x.size])
    pieces = run(IntegerRatioResampler(in_rate, out_rate), x, list(cuts))
    np.testing.assert_array_equal(once, pieces)
    reference = soxr.resample(x, in_rate, out_rate)
    assert once.size == reference.size
    error = once - reference
    assert 10 * np.log10((reference ** 2).sum() / (error ** 2).sum()) > 50  # dB: the same signal, aligned


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 8000), (8000, 16000)])
def test_it_holds_back_a_few_ms_where_soxr_holds_back_tens(in_rate, out_rate):
    x = speechlike(in_rate)
    frame = in_rate // 50  # 20 ms blocks, as a live client sends them
    ours, theirs = IntegerRatioResampler(in_rate, out_rate), StreamResampler(in_rate, out_rate)
    held_ours, held_theirs = [], []
    out_ours = out_theirs = 0
    for i in range(0, x.size, frame):
        out_ours += ours.process(x[i:i + frame]).size
        out_theirs += theirs.process(x[i:i + frame]).size
        due = (i + frame) * out_rate // in_rate
        held_ours.append(due - out_ours)
        held_theirs.append(due - out_theirs)
    assert max(held_ours) <= 0.004 * out_rate  # its half width (3 ms) and one sample of rounding
    assert np.mean(held_theirs) > 5 * max(held_ours)  # what this converter is for


def test_total_length_is_rounded_half_up_as_soxr_s():
    for n in (999, 1000, 1001, 1003):
        x = np.zeros(n, np.float32)
        assert run(IntegerRatioResampler(16000, 8000), x, [0, n]).size == soxr.resample(x, 16000, 8000).size


def test_only_integer_ratios_get_the_fir():
    with pytest.raises(ValueError, match="integer ratio"):
        IntegerRatioResampler(44100, 16000)
    assert isinstance(low_delay_resampler(44100, 16000), StreamResampler)
    assert isinstance(low_delay_resampler(16000, 16000), StreamResampler)  # passes samples through
    assert isinstance(low_delay_resampler(16000, 8000), IntegerRatioResampler)
