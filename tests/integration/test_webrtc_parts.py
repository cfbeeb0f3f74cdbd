"""The sans-I/O parts of the WebRTC transport: playout buffer, slot map, offer checks, frame conversion,
configuration. (Fast; no server.)"""

from __future__ import annotations

import fractions
import json

import numpy as np
import pytest
from av import AudioFrame

from rtsep.errors import MessageTooBig, ProtocolViolation
from rtsep.transport.webrtc.config import WebRtcConfig
from rtsep.transport.webrtc.media import frame_to_mono, mono_to_frame
from rtsep.transport.webrtc.playout import Playout, SlotMap
from rtsep.transport.webrtc.signalling import describe_offer, parse_offer, rtc_configuration


def ramp(start: int, n: int) -> np.ndarray:
    """Samples whose value is their position (so reads show where they came from)."""
    return np.arange(start, start + n, dtype=np.float32)


class TestPlayout:
    def test_starts_after_the_cushion_and_keeps_slots_aligned(self):
        p = Playout(slots=2, capacity_samples=1000, prebuffer_samples=100)
        p.write(0, 500, ramp(500, 200))
        p.write(1, 600, ramp(600, 100) * -1)
        out = p.read(100)
        assert not out.any()  # the cushion: 100 samples of silence first
        out = p.read(200)
        assert np.array_equal(out[0], ramp(500, 200))
        assert not out[1, :100].any() and np.array_equal(out[1, 100:], -ramp(600, 100))
        assert p.read_pos == 700 and p.played_samples == 300

    def test_silence_on_underrun_without_advancing(self):
        p = Playout(slots=1, capacity_samples=1000, prebuffer_samples=0)
        p.write(0, 0, ramp(0, 50))
        out = p.read(80)
        assert np.array_equal(out[0, :50], ramp(0, 50)) and not out[0, 50:].any()
        assert p.read_pos == 50 and p.underrun_samples == 30
        assert not p.read(40).any() and p.read_pos == 50  # stalled: nothing to play
        p.write(0, 50, ramp(50, 40))  # continuous audio arrives late: played next, nothing skipped
        assert np.array_equal(p.read(40)[0], ramp(50, 40)) and p.glitches == 1

    def test_resumes_with_a_fresh_cushion_after_a_pause(self):
        p = Playout(slots=1, capacity_samples=10_000, prebuffer_samples=100)
        p.write(0, 0, ramp(0, 100))
        p.read(200)
        assert p.buffered_samples == 0
        p.write(0, 5000, ramp(5000, 100))  # the next turn, long after: no 4800 samples of silence first
        assert p.read_pos == 4900 and p.buffered_samples == 200 and p.glitches == 0  # a pause, not a glitch
        assert not p.read(100).any() and np.array_equal(p.read(100)[0], ramp(5000, 100))

    def test_oldest_dropped_when_the_buffer_is_full(self):
        p = Playout(slots=2, capacity_samples=1000, prebuffer_samples=0)
        p.write(0, 0, ramp(0, 800))
        p.write(1, 800, ramp(800, 400))  # ends 1200 samples after the read position: 200 too many
        assert p.read_pos == 200 and p.dropped_samples == 200 and p.buffered_samples == 1000
        out = p.read(1000)
        assert np.array_equal(out[0, :600], ramp(200, 600)) and np.array_equal(out[1, 600:], ramp(800, 400))

    def test_late_audio_is_dropped(self):
        p = Playout(slots=1, capacity_samples=1000, prebuffer_samples=0)
        p.write(0, 0, ramp(0, 100))
        p.read(100)
        p.write(0, 100, ramp(100, 50))
        p.read(20)
        p.write(0, 110, ramp(110, 60))  # its first 10 samples are already played
        assert p.late_samples == 10
        assert np.array_equal(p.read(50)[0], ramp(120, 50))

    def test_skip_and_ring_reuse(self):
        p = Playout(slots=1, capacity_samples=64, prebuffer_samples=0)
        position = 0
        for _ in range(20):  # wraps the ring many times; nothing stale comes back
            p.write(0, position, ramp(position, 48))
            assert np.array_equal(p.read(48)[0], ramp(position, 48))
            position += 48
        p.write(0, position, ramp(position, 40))
        assert p.skip(30) == 30 and np.array_equal(p.read(10)[0], ramp(position + 30, 10))
        assert not p.read(64).any()

    def test_rejects_bad_sizes(self):
        with pytest.raises(ValueError):
            Playout(slots=1, capacity_samples=100, prebuffer_samples=100)
        with pytest.raises(ValueError):
            Playout(slots=1, capacity_samples=100, prebuffer_samples=0).write(1, 0, ramp(0, 10))


def test_slot_map_first_come_first_served():
    slots = SlotMap(["1", "2"])
    assert slots.lookup(3) == (0, True) and slots.lookup(3) == (0, False)
    assert slots.lookup(0) == (1, True)
    assert slots.lookup(5) == (None, True) and slots.lookup(5) == (None, False)  # no slot left
    assert slots.assigned == {3: 0, 0: 1}


def _sdp(*media: str) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0"]
    for i, m in enumerate(media):
        kind, _, direction = m.partition(":")
        if kind == "application":
            lines += ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", "c=IN IP4 0.0.0.0", f"a=mid:{i}",
                      "a=sctp-port:5000"]
        else:
            lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0", f"a=mid:{i}", f"a={direction}",
                      "a=rtpmap:111 opus/48000/2" if kind == "audio" else "a=rtpmap:111 VP8/90000"]
    return "\r\n".join(lines) + "\r\n"


def test_describe_offer_roles():
    layout = describe_offer(_sdp("audio:sendonly", "audio:recvonly", "audio:recvonly", "application"))
    assert layout.roles == ("mic", "slot", "slot", "data") and layout.slots == 2
    assert describe_offer(_sdp("audio:recvonly", "audio:sendrecv")).roles == ("slot", "mic")


@pytest.mark.parametrize("media,words", [
    (("audio:recvonly",), "no audio track to receive"),
    (("audio:sendonly", "audio:sendonly"), "more than one"),
    (("audio:sendonly", "video:recvonly"), "audio only"),
    (("audio:sendonly", "audio:inactive"), "inactive"),
])
def test_describe_offer_refuses(media, words):
    with pytest.raises(ProtocolViolation, match=words):
        describe_offer(_sdp(*media))


def test_parse_offer():
    offer = parse_offer(json.dumps({"sdp": "v=0", "type": "offer", "max_speakers": 3}).encode(), 1000)
    assert offer.sdp == "v=0" and offer.options == {"max_speakers": 3}
    with pytest.raises(MessageTooBig):
        parse_offer(b"{}" + b" " * 1000, 1000)
    for body, code in [(b"nope", "bad_json"), (b"[]", "bad_json"), (b'{"sdp":"v=0"}', "bad_offer"),
                       (b'{"type":"offer","sdp":""}', "bad_offer"),
                       (b'{"type":"offer","sdp":"v=0","encoding":"pcm_s16le"}', "bad_offer")]:
        with pytest.raises(ProtocolViolation) as raised:
            parse_offer(body, 1000)
        assert raised.value.error_code == code


@pytest.mark.parametrize("fmt,layout,dtype,scale", [
    ("s16", "stereo", np.int16, 32767), ("s16p", "stereo", np.int16, 32767), ("fltp", "mono", np.float32, 1.0),
    ("flt", "stereo", np.float32, 1.0),
])
def test_frame_to_mono(fmt, layout, dtype, scale):
    left = np.linspace(-0.5, 0.5, 960, dtype=np.float32)
    right = np.full(960, 0.25, np.float32)
    channels = [left] if layout == "mono" else [left, right]
    planar = fmt.endswith("p")
    data = np.stack(channels) if planar else np.stack(channels, axis=1).reshape(1, -1)
    frame = AudioFrame.from_ndarray(np.round(data * scale).astype(dtype) if dtype == np.int16 else data,
                                    format=fmt, layout=layout)
    frame.sample_rate = 48000
    expected = np.mean(channels, axis=0)
    assert np.allclose(frame_to_mono(frame), expected, atol=1e-4)


def test_mono_to_frame_round_trip():
    samples = np.sin(np.arange(320) / 5).astype(np.float32) * 0.5
    frame = mono_to_frame(samples, 16000, pts=640)
    assert frame.sample_rate == 16000 and frame.pts == 640 and frame.time_base == fractions.Fraction(1, 16000)
    assert np.allclose(frame_to_mono(frame), samples, atol=1e-4)


def test_rtc_configuration_lists_the_configured_ice_servers_only():
    assert rtc_configuration(WebRtcConfig()).iceServers == []  # not aiortc's public STUN default
    config = WebRtcConfig.load({"ice_servers": ["stun:a:1", {"urls": "turn:b", "username": "u", "credential": "p"}]},
                               env={})
    assert [(s.urls, s.username) for s in rtc_configuration(config).iceServers] == [(["stun:a:1"], None),
                                                                                   (["turn:b"], "u")]


async def test_overload_sheds_steps_at_their_own_positions_never_shifting_later_audio():
    """When the session falls behind, the microphone's new steps are marked as shed (gaps, see tests/unit/
    test_stream_core.py), but still pass through the stream session: later audio keeps its positions."""
    from types import SimpleNamespace

    from rtsep.sessions import SessionLimits
    from rtsep.stream.session import StreamConfig, StreamSession
    from rtsep.transport.webrtc.session import WebRtcSession

    stream = StreamSession(StreamConfig(model_sample_rate_hz=16000, step_samples=4096))
    stream.receive_text(json.dumps({"type": "start", "sample_rate": 48000, "encoding": "pcm_f32le"}))
    from rtsep.pipeline import PipelineConfig

    gateway = SimpleNamespace(config=WebRtcConfig(max_pending_steps=2),
                              manager=SimpleNamespace(limits=SessionLimits(), config=PipelineConfig()))
    session = WebRtcSession(gateway, None, stream, None, [], SlotMap([]), Playout(0, 100, 10), None)
    for i in range(150):  # 3 s of 20 ms frames; nothing takes the steps: the session is behind
        frame = AudioFrame.from_ndarray(np.full((1, 960), 0.1, np.float32), format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = 48000, i * 960, fractions.Fraction(1, 48000)
        session._accept(frame)
    queued = [session._steps.get_nowait() for _ in range(session._steps.qsize())]
    starts = [step.chunk.start_sample for step, _ in queued]
    assert starts == [k * 4096 for k in range(len(starts))] and len(starts) >= 10  # every step, in place
    shed = [flag for _, flag in queued]
    assert shed[:2] == [False, False] and all(shed[3:])
    assert session.discarded_input_samples > 0
