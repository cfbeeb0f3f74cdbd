"""The shipped overlapped-speech detector (rtsep.runtime.overlap): it loads, its outputs have the stated shapes, and
two voices at once score higher than either alone (real speech of the pyannote sample, evaluation data: used to
test, never to train; the detector never heard either talker)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from rtsep.errors import ConfigError
from rtsep.runtime.overlap import (
    OverlapDetector,
    OverlapNet,
    default_weights_path,
    load_overlap_net,
    save_overlap_net,
)


@pytest.fixture(scope="module")
def detector():
    return OverlapDetector.load()


def test_the_shipped_weights_are_small_and_describe_their_training(detector):
    path = default_weights_path()
    assert path.is_file() and path.stat().st_size <= 1_000_000
    meta = detector.metadata
    assert meta["valid"]["overlap_ap"] > 0 and meta["step"] > 0 and meta["splits_hash"]
    assert detector.frame_s == pytest.approx(0.02)


def test_probabilities_have_one_row_per_frame_at_any_length_and_rate(detector):
    rng = np.random.default_rng(0)
    for seconds, rate in ((10.0, 16000), (1.0, 16000), (5.3, 8000)):
        audio = (0.05 * rng.standard_normal(int(seconds * rate))).astype(np.float32)
        probs = detector.probabilities(audio, rate)
        assert probs.shape == (int(seconds / 0.02), 3)
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and (probs >= 0).all()
        assert np.array_equal(probs, detector.probabilities(audio, rate))  # deterministic
    assert detector.probabilities(np.zeros(100, np.float32), 16000).shape == (0, 3)
    assert detector.overlap_probability(np.zeros(32000, np.float32), 16000).shape == (100,)


def test_two_voices_at_once_score_higher_than_either_alone(detector, sample_paths):
    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    # one talker alone in each stretch (sample.rttm): speaker90 11.1-14.4 s, speaker91 22.0-25.3 s
    a = audio[int(11.1 * rate) : int(14.4 * rate)]
    b = audio[int(22.0 * rate) : int(25.3 * rate)]
    b = b * np.sqrt((a**2).mean() / (b**2).mean())
    alone_a = detector.overlap_probability(a, rate).mean()
    alone_b = detector.overlap_probability(b, rate).mean()
    both = detector.overlap_probability(a + b, rate).mean()
    assert both > max(alone_a, alone_b) + 0.1, (both, alone_a, alone_b)


def test_a_missing_or_foreign_checkpoint_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_overlap_net(tmp_path / "none.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(ConfigError, match="not an rtsep overlap-detector checkpoint"):
        load_overlap_net(tmp_path / "other.safetensors")
    torch.manual_seed(0)
    model = OverlapNet()
    save_overlap_net(model, tmp_path / "mine.safetensors", {"step": 1})
    loaded, meta = load_overlap_net(tmp_path / "mine.safetensors")
    assert meta == {"step": 1}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
