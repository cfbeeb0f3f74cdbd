"""Property-based fuzzing of the decoders: arbitrary input only ever raises the documented client errors."""

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtsep.errors import ClientError
from rtsep.protocol.frames import decode_audio_frame, encode_audio_frame
from rtsep.protocol.messages import parse_client_message, parse_server_message
from rtsep.protocol.pcm import decode_pcm
from rtsep.stream.session import ChunkReady, StreamConfig, StreamSession

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
start_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["start", "stop", "START", "", "ready"])},
    optional={
        "sample_rate": st.one_of(st.integers(-10, 200000), st.text(max_size=5), st.booleans(), st.floats()),
        "encoding": st.one_of(st.sampled_from(["pcm_s16le", "pcm_f32le", "opus"]), st.integers()),
        "channels": st.one_of(st.integers(-2, 9), st.none()),
        "max_speakers": st.one_of(st.integers(-2, 99), st.text(max_size=3)),
        "send_audio": st.one_of(st.booleans(), st.integers()),
        "extra": json_values,
    },
)


@pytest.fixture(autouse=True)
def _no_unloadable_lazy_modules():
    """speechbrain (imported by other tests) leaves lazy stubs in sys.modules for optional integrations
    (k2, ...); hypothesis scans sys.modules for constants and the stub's import error breaks the draw."""
    for name, module in list(sys.modules.items()):
        if type(module).__module__ == "speechbrain.utils.importutils":
            try:
                module.ensure_module(1)
            except (ImportError, AttributeError, TypeError):
                del sys.modules[name]
    yield


def _only_client_errors(fn, *args):
    try:
        fn(*args)
    except ClientError as exc:
        assert exc.close_code in (4400, 1009) and exc.message


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200), json_values.map(json.dumps),
                 start_like.map(json.dumps)))
def test_client_message_decoder(text):
    _only_client_errors(parse_client_message, text)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=200), json_values.map(json.dumps)))
def test_server_message_decoder(text):
    _only_client_errors(parse_server_message, text)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_audio_frame_decoder(data):
    _only_client_errors(decode_audio_frame, data)
    _only_client_errors(decode_audio_frame, b"RTSA\x01" + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 65535), st.integers(0, 2**40), st.lists(st.floats(-1, 1, width=32), max_size=50),
       st.sampled_from(["pcm_s16le", "pcm_f32le"]))
def test_audio_frame_roundtrip(track, start, values, encoding):
    samples = np.array(values, np.float32)
    header, decoded = decode_audio_frame(encode_audio_frame(track, start, samples, 16000, encoding))
    assert (header.track, header.start_sample, header.sample_count) == (track, start, len(values))
    np.testing.assert_allclose(decoded, samples, atol=1 / 32768 if encoding == "pcm_s16le" else 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(["pcm_s16le", "pcm_f32le"]), st.integers(1, 2))
def test_pcm_decoder(data, encoding, channels):
    _only_client_errors(decode_pcm, data, encoding, channels)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), start_like.map(json.dumps), st.text(max_size=30)), max_size=8))
def test_session_state_machine(messages):
    session = StreamSession(StreamConfig(step_samples=64, max_message_bytes=100))
    for message in messages:
        try:
            events = (session.receive_bytes(message) if isinstance(message, bytes) else session.receive_text(message))
        except ClientError as exc:
            assert exc.close_code in (4400, 1009)
            return
        for event in events:
            if isinstance(event, ChunkReady):
                assert event.chunk.num_samples == 64 and np.all(np.isfinite(event.chunk.samples))
