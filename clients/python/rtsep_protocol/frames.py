"""Binary audio frames (server -> client): a fixed 24-byte little-endian header, then PCM.

    offset size field
    0      4    magic         b"RTSA"
    4      1    version       1
    5      1    encoding      1 = pcm_s16le, 2 = pcm_f32le
    6      2    track         uint16: speaker index (SPEAKER_00 -> 0) or separated source index
    8      8    start_sample  uint64: position of the first sample in the track, at sample_rate_hz
    16     4    sample_rate   uint32, Hz
    20     4    sample_count  uint32: number of (mono) samples that follow
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from rtsep_protocol import PROTOCOL_VERSION
from rtsep_protocol.errors import ProtocolViolation
from rtsep_protocol.pcm import bytes_per_sample, decode_pcm, encode_pcm

__all__ = [
    "AudioFrameHeader", "ENCODING_IDS", "ENCODING_NAMES", "HEADER", "HEADER_BYTES", "MAGIC", "decode_audio_frame",
    "encode_audio_frame",
]

MAGIC = b"RTSA"
HEADER = struct.Struct("<4sBBHQII")
HEADER_BYTES = HEADER.size  # 24
ENCODING_IDS = {"pcm_s16le": 1, "pcm_f32le": 2}
ENCODING_NAMES = {v: k for k, v in ENCODING_IDS.items()}


@dataclass(frozen=True)
class AudioFrameHeader:
    track: int
    start_sample: int
    sample_rate_hz: int
    sample_count: int
    encoding: str = "pcm_s16le"
    version: int = PROTOCOL_VERSION


def encode_audio_frame(
    track: int, start_sample: int, samples: np.ndarray, sample_rate_hz: int, encoding: str = "pcm_s16le"
) -> bytes:
    if not 0 <= track <= 0xFFFF:
        raise ValueError(f"track index {track} out of range")
    if start_sample < 0:
        raise ValueError("start_sample must be >= 0")
    header = HEADER.pack(
        MAGIC, PROTOCOL_VERSION, ENCODING_IDS[encoding], track, start_sample, sample_rate_hz, len(samples)
    )
    return header + encode_pcm(samples, encoding)


def decode_audio_frame(data: bytes) -> tuple[AudioFrameHeader, np.ndarray]:
    if len(data) < HEADER_BYTES:
        raise ProtocolViolation(f"audio frame of {len(data)} bytes is shorter than its header")
    magic, version, enc_id, track, start, rate, count = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ProtocolViolation(f"bad audio frame magic {magic!r}")
    if version != PROTOCOL_VERSION:
        raise ProtocolViolation(f"unsupported audio frame version {version}")
    if enc_id not in ENCODING_NAMES:
        raise ProtocolViolation(f"unknown audio frame encoding id {enc_id}")
    encoding = ENCODING_NAMES[enc_id]
    payload = data[HEADER_BYTES:]
    if len(payload) != count * bytes_per_sample(encoding):
        raise ProtocolViolation(
            f"audio frame announces {count} samples but carries {len(payload)} bytes"
        )
    header = AudioFrameHeader(track, start, rate, count, encoding, version)
    return header, decode_pcm(payload, encoding, 1)
