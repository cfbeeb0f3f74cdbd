"""Training data and loss: the dynamic mixer on a tiny generated corpus, PIT SI-SDR."""

import itertools
import json

import numpy as np
import pytest
import torch

from rtsep.separate.losses import (
    pit_si_sdr,
    pit_si_sdr_improvement,
    pit_si_snr_loss,
    si_sdr,
)
from training.data import (
    Corpus,
    DynamicMixer,
    MixConfig,
    harvest_sentences,
    is_heldout,
)


@pytest.fixture()
def corpus_dir(tmp_path):
    rng = np.random.default_rng(0)
    index = {}
    for s in range(4):
        t = np.arange(8000 * 6) / 8000
        tone = 0.3 * np.sin(2 * np.pi * (120 + 60 * s) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
        np.save(tmp_path / f"spk{s}.npy", (tone * 32767).astype(np.int16))
        index[f"spk{s}"] = {"family": "test", "params": {}, "heldout": s == 3, "offsets": [0, 16000, 32000, 48000],
                            "text_ids": [s * 10, s * 10 + 1, s * 10 + 2], "seconds": 6.0}
    rirs = np.zeros((2, 2, 400), np.float32)
    rirs[:, :, 0] = 1.0
    rirs[:, :, 50] = 0.3 * rng.random()
    np.savez(tmp_path / "rirs.npz", rirs=rirs)
    (tmp_path / "index.json").write_text(json.dumps(index))
    return tmp_path


def test_mixer_sources_add_up_to_the_mixture(corpus_dir):
    corpus = Corpus(corpus_dir, "train")
    assert corpus.speakers == ["spk0", "spk1", "spk2"]
    clean = MixConfig(segment_samples=16000, noise_prob=0.0, mulaw_prob=0.0)
    mixer = DynamicMixer(corpus, clean, np.random.default_rng(1))
    for _ in range(5):
        mix, src = mixer.draw()
        assert mix.shape == (16000,) and src.shape == (2, 16000) and mix.dtype == np.float32
        assert np.allclose(mix, src.sum(0), atol=1e-5)
        assert np.abs(mix).max() <= 1.0
    noisy = DynamicMixer(corpus, MixConfig(segment_samples=8000, noise_prob=1.0), np.random.default_rng(2))
    mix, src = noisy.draw()
    assert not np.allclose(mix, src.sum(0), atol=1e-4)
    mb, sb = next(noisy.batches(3))
    assert mb.shape == (3, 8000) and sb.shape == (3, 2, 8000)


def test_heldout_split_is_by_speaker(corpus_dir):
    with pytest.raises(ValueError):
        Corpus(corpus_dir, "valid")  # one held-out speaker is not enough to mix
    assert not is_heldout("piper-joe")  # always trained on
    names = [f"voice-{i}" for i in range(2000)]
    tenth = {n for n in names if is_heldout(n)}
    assert 0.07 < len(tenth) / len(names) < 0.13  # the default fraction, by name
    assert tenth < {n for n in names if is_heldout(n, fraction=0.2)}  # a larger fraction keeps these held out


def test_harvested_sentences_are_plain_prose(tmp_path):
    (tmp_path / "m.py").write_text('"""This function returns the value of the thing. x = f(y) is code."""\n')
    got = harvest_sentences([tmp_path], 10)
    assert got == ["This function returns the value of the thing."]


def test_pit_si_sdr_is_permutation_invariant():
    torch.manual_seed(0)
    ref = torch.randn(3, 2, 800)
    est = ref + 0.1 * torch.randn_like(ref)
    a, ia = pit_si_sdr(est, ref)
    b, ib = pit_si_sdr(est.flip(1), ref)
    assert torch.allclose(a, b) and (ia == 0).all() and (ib == 1).all()
    assert float(pit_si_snr_loss(est, ref)) == pytest.approx(-float(a.mean()))
    assert float(si_sdr(2.5 * ref[0, 0], ref[0, 0])) > 60  # scale invariant
    sdr, sdri = pit_si_sdr_improvement(ref[0].sum(0).numpy(), ref[0].numpy(), ref[0].numpy())
    assert sdr > 60 and sdri > 50
    for p in itertools.permutations(range(2)):
        assert pit_si_sdr(est[:, list(p)], ref)[0].allclose(a)
