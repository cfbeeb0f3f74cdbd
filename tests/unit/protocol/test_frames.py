import struct

import numpy as np
import pytest

from rtsep.errors import ProtocolViolation
from rtsep.protocol.frames import HEADER_BYTES, decode_audio_frame, encode_audio_frame


def test_audio_frame_header_is_byte_exact():
    frame = encode_audio_frame(3, 0x0102030405, np.array([0.5, -0.5, 0.0], np.float32), 16000, "pcm_s16le")
    expected_header = (
        b"RTSA"  # magic
        + b"\x01"  # version
        + b"\x01"  # encoding: pcm_s16le
        + b"\x03\x00"  # track 3
        + b"\x05\x04\x03\x02\x01\x00\x00\x00"  # start sample, uint64 LE
        + b"\x80\x3e\x00\x00"  # 16000 Hz
        + b"\x03\x00\x00\x00"  # 3 samples
    )
    assert HEADER_BYTES == 24
    assert frame[:24] == expected_header
    assert frame[24:] == b"\x00\x40" + b"\x00\xc0" + b"\x00\x00"



def test_audio_frame_f32_roundtrip():
    samples = np.array([0.25, -1.0, 0.125], np.float32)
    frame = encode_audio_frame(0, 7, samples, 8000, "pcm_f32le")
    assert frame[5] == 2 and frame[24:] == samples.astype("<f4").tobytes()
    header, decoded = decode_audio_frame(frame)
    assert (header.track, header.start_sample, header.sample_rate_hz, header.sample_count) == (0, 7, 8000, 3)
    np.testing.assert_array_equal(decoded, samples)



@pytest.mark.parametrize(
    "data",
    [b"RTS", b"XXXX" + bytes(20), struct.pack("<4sBBHQII", b"RTSA", 9, 1, 0, 0, 16000, 0),
     struct.pack("<4sBBHQII", b"RTSA", 1, 7, 0, 0, 16000, 0),
     struct.pack("<4sBBHQII", b"RTSA", 1, 1, 0, 0, 16000, 2) + b"\x00\x00"],
)
def test_audio_frame_rejects_malformed(data):
    with pytest.raises(ProtocolViolation):
        decode_audio_frame(data)

