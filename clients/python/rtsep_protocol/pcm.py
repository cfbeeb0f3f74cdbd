"""PCM encodings on the wire: decode client audio, encode server audio."""

from __future__ import annotations

import numpy as np

from rtsep_protocol.errors import ProtocolViolation, UnsupportedAudio

__all__ = [
    "ENCODINGS", "bytes_per_sample", "decode_pcm", "encode_pcm", "float_to_s16",
]

ENCODINGS: dict[str, np.dtype] = {
    "pcm_s16le": np.dtype("<i2"),
    "pcm_f32le": np.dtype("<f4"),
}


def bytes_per_sample(encoding: str) -> int:
    try:
        return ENCODINGS[encoding].itemsize
    except KeyError:
        raise UnsupportedAudio(
            f"unsupported encoding {encoding!r}; expected one of {sorted(ENCODINGS)}",
            error_code="unsupported_encoding",
        ) from None


def decode_pcm(data: bytes, encoding: str, channels: int) -> np.ndarray:
    """Interleaved PCM bytes -> mono float32 in [-1, 1] (channels are averaged)."""
    frame_bytes = bytes_per_sample(encoding) * channels
    if len(data) % frame_bytes:
        raise ProtocolViolation(
            f"binary message of {len(data)} bytes is not a whole number of "
            f"{channels}-channel {encoding} frames ({frame_bytes} bytes each)",
            error_code="partial_sample",
        )
    raw = np.frombuffer(data, dtype=ENCODINGS[encoding])
    if encoding == "pcm_s16le":
        samples = raw.astype(np.float32) / 32768.0
    else:
        samples = raw.astype(np.float32)
        if not np.all(np.isfinite(samples)):
            raise ProtocolViolation("pcm_f32le audio contains NaN or infinity", error_code="bad_audio")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


def float_to_s16(samples: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] -> int16 (clipped, rounded)."""
    return np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768).astype("<i2")


def encode_pcm(samples: np.ndarray, encoding: str) -> bytes:
    """Mono float32 -> PCM bytes (s16 is clipped and rounded)."""
    bytes_per_sample(encoding)
    if encoding == "pcm_s16le":
        return float_to_s16(samples).tobytes()
    return np.asarray(samples, dtype="<f4").tobytes()
