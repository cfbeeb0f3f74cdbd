"""Named speakers end to end: enroll over HTTP (API key), stream a WebSocket session that names the voices, see
``speaker_named``, the names in events and in the live / final timelines (JSON, RTTM); ``rtsep enroll`` and
``rtsep process --voices``.

The voices are the two real talkers of the pyannote sample (speaker90, speaker91), each enrolled from one of its
own turns (chosen by the reference RTTM); the session is the whole sample, so the enrollment audio is part of it.
This checks the plumbing, not the threshold: the default [voices] min_similarity was chosen on the real-voice
corpus (bench.voice_match, bench/RESULTS.md); here it is 0.8 so that early live centroids are named too."""

import asyncio
import dataclasses
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

from rtsep.protocol.messages import Start, encode_message
from rtsep.stream.naming import VoicesConfig
from tests.conftest import diarization_only, run_server

pytestmark = pytest.mark.slow
KEY = "voice-key"
TURNS = {"s90": (10.6, 14.45), "s91": (21.8, 27.8)}  # one turn of each talker alone (speaker90 / speaker91)


@pytest.fixture(scope="module")
def sample(sample_paths):
    audio, rate = sf.read(str(sample_paths[0]), dtype="float32")
    return audio, rate


def clip(sample, name, fmt="WAV") -> bytes:
    audio, rate = sample
    start, end = TURNS[name]
    buffer = io.BytesIO()
    sf.write(buffer, audio[int(start * rate): int(end * rate)], rate, format=fmt)
    return buffer.getvalue()


def reference_of(sample_paths) -> list[tuple[float, float, str]]:
    out = []
    for line in sample_paths[1].read_text().splitlines():
        f = line.split()
        out.append((float(f[3]), float(f[3]) + float(f[4]), {"speaker90": "s90", "speaker91": "s91"}[f[7]]))
    return out


def overlap_s(segments, reference, hypothesis_label, reference_label) -> float:
    return sum(max(0.0, min(e, re) - max(s, rs)) for s, e, label in segments if label == hypothesis_label
               for rs, re, ref in reference if ref == reference_label)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pipeline = dataclasses.replace(diarization_only(), voices=VoicesConfig(min_similarity=0.8))
    with run_server(tmp_path_factory.mktemp("data"), pipeline=pipeline, api_keys=(KEY,)) as running:
        yield running


def http(server, method, path, key=KEY, **kwargs):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, server.base_url + path, headers=headers, timeout=120, **kwargs)


def test_enrollment_over_http(server, sample):
    assert http(server, "POST", "/v1/voices", key=None, params={"name": "s90"}, content=clip(sample, "s90")
                ).status_code == 401
    assert http(server, "GET", "/v1/voices", key="wrong").status_code == 401
    bad = http(server, "POST", "/v1/voices", params={"name": "x"}, content=b"this is no audio file" * 20)
    assert bad.status_code == 400 and "cannot decode" in bad.json()["detail"]
    silence = io.BytesIO()
    sf.write(silence, np.zeros(16000 * 5, np.float32), 16000, format="WAV")
    short = http(server, "POST", "/v1/voices", params={"name": "x"}, content=silence.getvalue())
    assert short.status_code == 422 and "at least 3 s" in short.json()["detail"]
    assert http(server, "POST", "/v1/voices", params={"name": "../x"}, content=clip(sample, "s90")).status_code == 400

    made = http(server, "POST", "/v1/voices", params={"name": "s90"}, content=clip(sample, "s90"))
    assert made.status_code == 201, made.text
    assert made.json()["name"] == "s90" and 3.0 <= made.json()["speech_s"] <= 3.9 and "embedding" not in made.json()
    taken = http(server, "POST", "/v1/voices", params={"name": "s90"}, content=clip(sample, "s91", "FLAC"))
    assert taken.status_code == 409 and "replace=true" in taken.json()["detail"]
    assert http(server, "POST", "/v1/voices", params={"name": "s91"}, content=clip(sample, "s91", "FLAC")
                ).status_code == 201
    assert [v["name"] for v in http(server, "GET", "/v1/voices").json()["voices"]] == ["s90", "s91"]
    assert http(server, "GET", "/v1/voices/s91").json()["name"] == "s91"
    assert http(server, "GET", "/v1/voices/nobody").status_code == 404
    assert http(server, "DELETE", "/v1/voices/nobody").status_code == 404
    # the audio is not kept anywhere in the data dir: only the database and session folders are there
    assert not [p for p in server.data_dir.rglob("*") if p.suffix in (".wav", ".flac", ".ogg", ".pcm")]


async def _session(server, audio, rate, voices):
    events = []
    async with websockets.connect(server.ws_url + f"?api_key={KEY}", max_size=None) as ws:
        await ws.send(encode_message(Start(sample_rate=rate, encoding="pcm_f32le", send_audio=False, voices=voices)))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        for i in range(0, len(audio), rate // 2):
            await ws.send(np.ascontiguousarray(audio[i:i + rate // 2], "<f4").tobytes())
        await ws.send('{"type":"stop"}')
        while True:
            message = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(message, str):
                events.append(json.loads(message))
                if events[-1]["type"] == "done":
                    break
    return ready, events


async def test_a_websocket_session_names_the_enrolled_voices(server, sample, sample_paths):
    if len(http(server, "GET", "/v1/voices").json()["voices"]) < 2:
        pytest.skip("needs the voices of test_enrollment_over_http")
    audio, rate = sample
    ready, events = await _session(server, audio, rate, ["s90", "s91"])
    named = [e for e in events if e["type"] == "speaker_named"]
    assert {e["name"] for e in named} == {"s90", "s91"} and all(e["similarity"] >= 0.8 for e in named), named
    live_names = {e["speaker"]: e["name"] for e in named}
    # after its naming, a speaker's events carry the name
    first = {e["speaker"]: events.index(e) for e in reversed(named)}
    later = [e for i, e in enumerate(events) if e["type"] in ("speaker", "segment") and e["speaker"] in first
             and i > first[e["speaker"]]]
    assert later and all(e["name"] == live_names[e["speaker"]] for e in later)

    done = events[-1]
    assert sorted(done["names"].values()) == ["s90", "s91"]
    final_message = next(e for e in events if e["type"] == "timeline" and e["kind"] == "final")
    assert final_message["names"] == done["names"]
    sid, token = ready["session_id"], ready["token"]
    auth = {"Authorization": f"Bearer {token}"}
    final = httpx.get(f"{server.base_url}/v1/sessions/{sid}/timeline", headers=auth, timeout=60).json()
    assert final["names"] == done["names"]
    live = httpx.get(f"{server.base_url}/v1/sessions/{sid}/timeline", params={"kind": "live"}, headers=auth,
                     timeout=60).json()
    assert live["names"] == live_names
    # each name went to the talker it belongs to (most of the named speaker's speech is that talker's)
    reference = reference_of(sample_paths)
    segments = [(s["start_s"], s["end_s"], final["names"].get(s["speaker"])) for s in final["segments"]]
    for name, other in (("s90", "s91"), ("s91", "s90")):
        assert overlap_s(segments, reference, name, name) > 2 * overlap_s(segments, reference, name, other)
    rttm = httpx.get(f"{server.base_url}/v1/sessions/{sid}/timeline", params={"format": "rttm"}, headers=auth,
                     timeout=60).text
    labels = {line.split()[7] for line in rttm.splitlines()}
    assert {"s90", "s91"} <= labels


async def test_an_unknown_voice_ends_only_that_session(server):
    async with websockets.connect(server.ws_url + f"?api_key={KEY}") as ws:
        await ws.send(encode_message(Start(sample_rate=16000, voices=["s90", "nobody"])))
        error = json.loads(await asyncio.wait_for(ws.recv(), 30))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 30)
    assert error["type"] == "error" and error["code"] == "unknown_voice" and "'nobody'" in error["message"]
    assert closed.value.rcvd.code == 4404
    assert httpx.get(server.base_url + "/healthz").json()["status"] == "ok"


def test_deleting_a_voice(server, sample):
    assert http(server, "POST", "/v1/voices", params={"name": "gone"}, content=clip(sample, "s91")).status_code == 201
    assert http(server, "DELETE", "/v1/voices/gone").status_code == 204
    assert http(server, "GET", "/v1/voices/gone").status_code == 404
    assert "gone" not in [v["name"] for v in http(server, "GET", "/v1/voices").json()["voices"]]


def test_rtsep_enroll_then_process_with_voices(sample, tmp_path, capsys):
    from rtsep.cli import main

    data = tmp_path / "data"
    for name, fmt, suffix in (("s90", "WAV", "wav"), ("s91", "OGG", "ogg")):
        (tmp_path / f"{name}.{suffix}").write_bytes(clip(sample, name, fmt))
        assert main(["enroll", name, str(tmp_path / f"{name}.{suffix}"), "--data-dir", str(data)]) == 0
    assert main(["enroll", "s90", str(tmp_path / "s90.wav"), "--data-dir", str(data)]) == 2
    assert "enrolled already" in capsys.readouterr().err
    assert main(["voices", "list", "--data-dir", str(data)]) == 0
    assert [v["name"] for v in json.loads(capsys.readouterr().out)] == ["s90", "s91"]

    audio, rate = sample
    sf.write(str(tmp_path / "meeting.wav"), audio, rate)
    out = tmp_path / "out"
    assert main(["process", str(tmp_path / "meeting.wav"), "--out", str(out), "--quiet", "--separator", "none",
                 "--voices", "s90,s91", "--data-dir", str(data)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(report["names"].values()) == ["s90", "s91"]
    final = json.loads((out / "timeline.json").read_text())
    assert final["names"] == report["names"]
    assert {line.split()[7] for line in (out / "timeline.rttm").read_text().splitlines()} <= {"s90", "s91"}
    assert main(["process", str(tmp_path / "meeting.wav"), "--out", str(tmp_path / "o2"), "--quiet",
                 "--separator", "none", "--voices", "nobody", "--data-dir", str(data)]) == 2
    assert "no enrolled voice named 'nobody'" in capsys.readouterr().err
    assert main(["voices", "delete", "s90", "--data-dir", str(data)]) == 0
    assert main(["voices", "delete", "s90", "--data-dir", str(data)]) == 2


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """No API keys (the WebRTC test client offers without one)."""
    pipeline = dataclasses.replace(diarization_only(), voices=VoicesConfig(min_similarity=0.8))
    with run_server(tmp_path_factory.mktemp("data"), pipeline=pipeline) as running:
        yield running


async def test_a_webrtc_session_names_the_enrolled_voice_on_its_data_channel(open_server, sample):
    from tests.integration.test_webrtc import FileTrack, _offer_sdp, connect, post_offer, wait_state

    assert http(open_server, "POST", "/v1/voices", key=None, params={"name": "s90"},
                content=clip(sample, "s90")).status_code == 201
    refused = await post_offer(open_server, {"type": "offer", "sdp": await _offer_sdp(), "voices": ["nobody"]})
    assert refused.status_code == 400 and refused.json()["code"] == "unknown_voice", refused.text
    audio, rate = sample
    client = await connect(open_server, FileTrack(audio[: 16 * rate], rate), slots=2, voices="all")
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while not any(e["type"] == "speaker_named" for e in client.events):
            assert asyncio.get_running_loop().time() < deadline, client.events
            await asyncio.sleep(0.2)
    finally:
        await client.close()
    named = [e for e in client.events if e["type"] == "speaker_named"]
    assert named[0]["name"] == "s90" and named[0]["similarity"] >= 0.8
    status = await wait_state(open_server, client.answer)
    assert status["state"] == "done"
