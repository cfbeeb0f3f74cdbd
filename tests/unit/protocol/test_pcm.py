import numpy as np
import pytest

from rtsep.errors import ProtocolViolation
from rtsep.protocol.pcm import decode_pcm, encode_pcm


def test_pcm_decode_downmix_and_partial_samples():
    stereo = np.array([[1000, 3000], [-2000, 0]], "<i2").tobytes()
    np.testing.assert_allclose(decode_pcm(stereo, "pcm_s16le", 2), [2000 / 32768, -1000 / 32768])
    with pytest.raises(ProtocolViolation) as info:
        decode_pcm(b"\x00\x01\x02", "pcm_s16le", 1)
    assert info.value.error_code == "partial_sample"
    with pytest.raises(ProtocolViolation):
        decode_pcm(np.array([np.nan], "<f4").tobytes(), "pcm_f32le", 1)
    x = np.array([0.0, 0.5, -1.0, 1.0], np.float32)
    assert encode_pcm(x, "pcm_s16le") == np.array([0, 16384, -32768, 32767], "<i2").tobytes()

