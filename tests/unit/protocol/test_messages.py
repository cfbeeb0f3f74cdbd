import json

import pytest

from rtsep.errors import ProtocolViolation, UnsupportedAudio
from rtsep.protocol.messages import (
    Done,
    ErrorMessage,
    Gap,
    Ready,
    Segment,
    SpeakerActivity,
    Start,
    Stop,
    Stored,
    TrackAnnouncement,
    encode_message,
    parse_client_message,
    parse_server_message,
)


def test_messages_encode_byte_exact():
    assert encode_message(Stop()) == '{"type":"stop"}'
    assert encode_message(SpeakerActivity("SPEAKER_01", 1, "started", 1.5, 24000)) == (
        '{"type":"speaker","speaker":"SPEAKER_01","index":1,"event":"started","time_s":1.5,"sample":24000}'
    )
    assert encode_message(Segment("SPEAKER_00", 0, 0.5, 2.25)) == (
        '{"type":"segment","speaker":"SPEAKER_00","index":0,"start_s":0.5,"end_s":2.25,"kind":"live"}'
    )
    assert encode_message(Gap("diarization", 8192, 4096, 0.512, 0.256)) == (
        '{"type":"gap","path":"diarization","sample":8192,"samples":4096,"start_s":0.512,"duration_s":0.256}'
    )
    assert encode_message(Stored("SPEAKER_00", 0, 32000, 2.0)) == (
        '{"type":"stored","speaker":"SPEAKER_00","index":0,"end_sample":32000,"end_s":2.0}'
    )
    assert encode_message(ErrorMessage("bad_json", "nope", 4400)) == (
        '{"type":"error","code":"bad_json","message":"nope","close_code":4400}'
    )


def test_server_messages_roundtrip():
    for message in [
        Ready("abc", "tok", 16000, "pcm_s16le", 1024, 8, 0.256),
        TrackAnnouncement("SPEAKER_00", 0, "/v1/sessions/abc/tracks/SPEAKER_00.wav"),
        Done("abc", 1.0, ["SPEAKER_00"], "/v1/sessions/abc/timeline"),
        Gap("input", 4096, 4096, 0.256, 0.256),
        Stored("source_1", 1, 8192, 0.512),
    ]:
        assert parse_server_message(encode_message(message)) == message
    # unknown extra keys from a newer server are ignored
    newer = '{"type":"error","code":"c","message":"m","close_code":1000,"x":1}'
    assert parse_server_message(newer) == ErrorMessage("c", "m", 1000)


def test_start_parsing_and_defaults():
    start = parse_client_message('{"type":"start","sample_rate":48000}')
    assert start == Start(sample_rate=48000, encoding="pcm_s16le", channels=1)
    start = parse_client_message(json.dumps({"type": "start", "sample_rate": 8000, "encoding": "pcm_f32le",
                                             "channels": 2, "max_speakers": 3}))
    assert (start.encoding, start.channels, start.max_speakers) == ("pcm_f32le", 2, 3)
    assert parse_client_message('{"type":"stop"}') == Stop()


@pytest.mark.parametrize(
    "text,exc,code",
    [
        ("{not json", ProtocolViolation, "bad_json"),
        ("[1,2]", ProtocolViolation, "bad_json"),
        ('{"sample_rate":16000}', ProtocolViolation, "bad_message"),
        ('{"type":"hello"}', ProtocolViolation, "unknown_message"),
        ('{"type":"start"}', ProtocolViolation, "bad_message"),
        ('{"type":"start","sample_rate":"16000"}', ProtocolViolation, "bad_message"),
        ('{"type":"start","sample_rate":true}', ProtocolViolation, "bad_message"),
        ('{"type":"start","sample_rate":16000,"bogus":1}', ProtocolViolation, "bad_message"),
        ('{"type":"start","sample_rate":4000}', UnsupportedAudio, "unsupported_rate"),
        ('{"type":"start","sample_rate":96000}', UnsupportedAudio, "unsupported_rate"),
        ('{"type":"start","sample_rate":16000,"encoding":"opus"}', UnsupportedAudio, "unsupported_encoding"),
        ('{"type":"start","sample_rate":16000,"channels":6}', UnsupportedAudio, "unsupported_channels"),
        ('{"type":"stop","now":true}', ProtocolViolation, "bad_message"),
    ],
)
def test_bad_client_messages(text, exc, code):
    with pytest.raises(exc) as info:
        parse_client_message(text)
    assert info.value.error_code == code
    assert info.value.close_code == 4400


def test_named_speaker_messages_encode_byte_exact_and_leave_unset_names_out():
    from rtsep.protocol.messages import Done, Segment, SpeakerNamed, TimelineMessage

    assert encode_message(SpeakerNamed("SPEAKER_01", 1, "alice", 0.912)) == (
        '{"type":"speaker_named","speaker":"SPEAKER_01","index":1,"name":"alice","similarity":0.912}')
    assert encode_message(SpeakerActivity("SPEAKER_01", 1, "stopped", 2.0, 32000, "alice")).endswith(
        ',"sample":32000,"name":"alice"}')
    assert encode_message(Segment("SPEAKER_00", 0, 0.0, 1.0)) == (
        '{"type":"segment","speaker":"SPEAKER_00","index":0,"start_s":0.0,"end_s":1.0,"kind":"live"}')
    assert '"names":{"SPEAKER_00":"bob"}' in encode_message(Done("s", 1.0, ["SPEAKER_00"], "/t", {"SPEAKER_00": "bob"}))
    assert "names" not in encode_message(TimelineMessage("final", []))
    assert "voices" not in encode_message(Start(sample_rate=16000))
    assert parse_server_message(encode_message(SpeakerNamed("SPEAKER_00", 0, None, 0.5))) == SpeakerNamed(
        "SPEAKER_00", 0, None, 0.5)


@pytest.mark.parametrize("voices", [["alice", "bob"], "all"])
def test_start_takes_the_voices_to_name(voices):
    assert parse_client_message(json.dumps({"type": "start", "sample_rate": 16000, "voices": voices})).voices == voices


@pytest.mark.parametrize("voices", ["alice", [], ["alice", 3], [""], {"alice": 1}, ["v"] * 65])
def test_start_refuses_malformed_voices(voices):
    with pytest.raises(ProtocolViolation, match="voices"):
        parse_client_message(json.dumps({"type": "start", "sample_rate": 16000, "voices": voices}))
