import json

import numpy as np
import pytest

from rtsep.errors import MessageTooBig, ProtocolViolation
from rtsep.stream.session import (
    ChunkReady,
    Phase,
    SamplesReady,
    StartAccepted,
    StopRequested,
    StreamConfig,
    StreamSession,
)

FRAME_SIZES = [1, 7, 160, 333, 960, 4096, 10**6]  # samples per client message


def _run(data: bytes, rate: int, frame_samples: int, bytes_per_sample: int, encoding="pcm_s16le", channels=1):
    session = StreamSession(StreamConfig(model_sample_rate_hz=16000, step_samples=4096))
    events = session.receive_text(json.dumps({"type": "start", "sample_rate": rate, "encoding": encoding,
                                              "channels": channels}))
    step = frame_samples * bytes_per_sample * channels
    for i in range(0, len(data), step):
        events += session.receive_bytes(data[i : i + step])
    events += session.receive_text('{"type":"stop"}')
    return events


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000])
def test_output_does_not_depend_on_client_framing(rate):
    rng = np.random.default_rng(rate)
    data = (rng.standard_normal(int(rate * 1.3)) * 4000).astype("<i2").tobytes()
    runs = [_run(data, rate, n, 2) for n in FRAME_SIZES]
    reference = runs[0]
    assert isinstance(reference[0], StartAccepted) and isinstance(reference[-1], StopRequested)
    chunks = [e for e in reference if isinstance(e, ChunkReady)]
    assert chunks[-1].is_last and sum(c.valid_samples for c in chunks) == reference[-1].total_samples
    assert abs(reference[-1].total_samples - round(1.3 * 16000)) <= 1
    for other in runs[1:]:
        assert len(other) == len(reference)
        for a, b in zip(reference, other):
            assert type(a) is type(b)
            if isinstance(a, ChunkReady):
                assert (a.chunk.start_sample, a.valid_samples, a.is_last) == (
                    b.chunk.start_sample, b.valid_samples, b.is_last)
                np.testing.assert_array_equal(a.chunk.samples, b.chunk.samples)


def test_with_emit_samples_the_input_comes_as_it_arrives_ahead_of_the_steps_it_completes():
    session = StreamSession(StreamConfig(model_sample_rate_hz=16000, step_samples=4096, emit_samples=True))
    session.receive_text(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_f32le"}))
    audio = np.random.default_rng(3).standard_normal(10000).astype(np.float32) * 0.1
    events = []
    for i in range(0, audio.size, 320):  # 20 ms messages
        events += session.receive_bytes(audio[i:i + 320].astype("<f4").tobytes())
    events += session.receive_text('{"type":"stop"}')
    blocks = [e for e in events if isinstance(e, SamplesReady)]
    assert [b.start_sample for b in blocks] == list(range(0, audio.size, 320))  # every message, at its position
    np.testing.assert_array_equal(np.concatenate([b.samples for b in blocks]), audio)
    seen = 0  # a step never comes before the block that completes it
    for event in events:
        if isinstance(event, SamplesReady):
            seen = event.start_sample + event.samples.size
        elif isinstance(event, ChunkReady):
            assert event.chunk.start_sample + event.valid_samples <= seen
    plain = _run(audio.astype("<f4").tobytes(), 16000, 320, 4, encoding="pcm_f32le")
    assert not any(isinstance(e, SamplesReady) for e in plain)  # off by default


def test_stereo_f32_is_downmixed():
    left = np.linspace(-0.5, 0.5, 16000, dtype=np.float32)
    data = np.stack([left, left], axis=1).astype("<f4").tobytes()
    mono = _run(left.astype("<f4").tobytes(), 16000, 500, 4, "pcm_f32le")
    stereo = _run(data, 16000, 500, 4, "pcm_f32le", channels=2)
    for a, b in zip(mono, stereo):
        if isinstance(a, ChunkReady):
            np.testing.assert_allclose(a.chunk.samples, b.chunk.samples)


def test_order_and_size_errors():
    session = StreamSession(StreamConfig(max_message_bytes=100))
    with pytest.raises(ProtocolViolation) as info:
        session.receive_bytes(b"\x00\x00")
    assert info.value.error_code == "audio_before_start"
    with pytest.raises(ProtocolViolation):
        session.receive_text('{"type":"stop"}')
    session.receive_text('{"type":"start","sample_rate":16000}')
    assert session.phase is Phase.STREAMING
    with pytest.raises(ProtocolViolation):
        session.receive_text('{"type":"start","sample_rate":16000}')
    with pytest.raises(MessageTooBig) as big:
        session.receive_bytes(bytes(102))
    assert big.value.close_code == 1009
    with pytest.raises(ProtocolViolation) as partial:
        session.receive_bytes(b"\x00")
    assert partial.value.close_code == 4400
    session.receive_text('{"type":"stop"}')
    with pytest.raises(ProtocolViolation):
        session.receive_bytes(b"\x00\x00")
