"""The file transport's reader: compressed files decode as a whole-file read does, and quietly."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from rtsep.transport.file import read_blocks


@pytest.fixture
def mp3(tmp_path):
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    rng = np.random.default_rng(0)
    t = np.arange(16000 * 8) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(t)) + 0.05 * rng.standard_normal(t.size))
    path = tmp_path / "talk.mp3"
    sf.write(str(path), audio.astype(np.float32), 16000, format="MP3")
    return path


def test_mp3_in_blocks_is_the_whole_file_and_the_decoder_stays_quiet(mp3, capfd):
    whole, _ = sf.read(str(mp3), dtype="float32", always_2d=True)
    blocks = list(read_blocks(mp3, 8000))
    assert {len(b) for b in blocks[:-1]} == {8000} and blocks[0].dtype == np.float32
    joined = np.concatenate(blocks)
    assert joined.shape == whole.shape
    np.testing.assert_allclose(joined, whole, atol=1e-6)  # a seek between blocks damages the block starts
    assert "mpg123" not in capfd.readouterr().err  # nor does libmpg123 complain on stderr


def test_wav_in_blocks_is_exact(tmp_path):
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, (10007, 2)).astype(np.float32)
    path = tmp_path / "two.wav"
    sf.write(str(path), audio, 16000, subtype="FLOAT")
    assert np.array_equal(np.concatenate(list(read_blocks(path, 1000))), audio)

