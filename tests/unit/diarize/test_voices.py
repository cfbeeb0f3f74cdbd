"""Enrollment clips: decoding, the speech kept, the embedding, and the errors a client gets."""

import io

import numpy as np
import pytest
import soundfile as sf

from rtsep.diarize.embedding import load_speaker_encoder
from rtsep.diarize.online import DiarizationConfig
from rtsep.diarize.vad import load_silero_vad
from rtsep.diarize.voices import decode_clip, enrollment_embedding
from rtsep.errors import BadEnrollment

WINDOW = DiarizationConfig().embedding_window_samples


@pytest.fixture(scope="module")
def models():
    return load_silero_vad(), load_speaker_encoder()


def _file(samples, rate, fmt="WAV"):
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def talker(sample_paths):
    """One talker alone: speaker90's 10.57-14.49 s turn of the real sample (test data, chosen by its reference)."""
    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    return audio[int(10.6 * rate): int(14.45 * rate)], rate


def test_decoding_any_rate_and_channels_gives_16k_mono():
    rate = 44100
    stereo = np.stack([np.sin(np.arange(rate) / 10), np.zeros(rate)], axis=1).astype(np.float32) * 0.5
    for fmt in ("WAV", "FLAC", "OGG"):
        out = decode_clip(_file(stereo, rate, fmt), max_s=60)
        assert out.dtype == np.float32 and abs(out.size - 16000) <= 16


@pytest.mark.parametrize("data, message", [(b"", "empty"), (b"not audio at all" * 10, "cannot decode")])
def test_what_is_not_audio_is_a_clear_error(data, message):
    with pytest.raises(BadEnrollment, match=message):
        decode_clip(data, max_s=60)


def test_a_clip_longer_than_allowed_is_refused():
    with pytest.raises(BadEnrollment, match="at most 5 s"):
        decode_clip(_file(np.zeros(16000 * 6, np.float32), 16000), max_s=5)


def test_too_little_speech_is_a_clear_error(models, talker):
    vad, encoder = models
    with pytest.raises(BadEnrollment, match=r"holds 0.0 s of speech; at least 3 s") as exc:
        enrollment_embedding(np.zeros(16000 * 10, np.float32), vad, encoder, window_samples=WINDOW, min_speech_s=3)
    assert exc.value.error_code == "too_little_speech"
    audio, rate = talker
    short = decode_clip(_file(audio[: int(1.5 * rate)], rate), max_s=60)  # 1.5 s of a real voice
    with pytest.raises(BadEnrollment, match="at least 3 s"):
        enrollment_embedding(short, vad, encoder, window_samples=WINDOW, min_speech_s=3)


def test_a_voice_gives_a_unit_embedding_of_its_speech(models, talker):
    vad, encoder = models
    audio, rate = talker
    samples = decode_clip(_file(audio, rate), max_s=60)
    padded = np.concatenate([np.zeros(16000 * 3, np.float32), samples, np.zeros(16000 * 3, np.float32)])
    embedding, speech_s = enrollment_embedding(samples, vad, encoder, window_samples=WINDOW, min_speech_s=3)
    again, speech_padded_s = enrollment_embedding(padded, vad, encoder, window_samples=WINDOW, min_speech_s=3)
    assert embedding.shape == (256,) and embedding.dtype == np.float32
    assert abs(float(np.linalg.norm(embedding)) - 1) < 1e-5
    assert 3.0 <= speech_s <= 3.9 and abs(speech_padded_s - speech_s) < 0.4  # 6 s of silence add none
    assert float(embedding @ again) > 0.98  # ... and does not change the voice
