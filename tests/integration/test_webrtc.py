"""The WebRTC transport with a real aiortc client (no browser) against a real server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import io
import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from rtsep.config import load_config
from tests.conftest import run_server

pytestmark = pytest.mark.slow

CONNECT_TIMEOUT_S = 6.0  # short, for the never-connected test; long enough for a loaded machine


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    webrtc = load_config(env={"RTSEP_WEBRTC_CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S)}).webrtc
    with run_server(tmp_path_factory.mktemp("data"), webrtc=webrtc, max_sessions=2, idle_timeout_s=3.0) as running:
        yield running


@pytest.fixture(scope="module")
def meeting(meeting_wav):
    """The first 20 s of the two-talker meeting (its first words at 6.7 s)."""
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    return audio, rate


class FileTrack(MediaStreamTrack):
    """A microphone playing ``audio`` in real time (20 ms frames), then silence."""

    kind = "audio"

    def __init__(self, audio: np.ndarray, rate: int) -> None:
        super().__init__()
        self.audio, self.rate, self.frame = audio, rate, rate // 50
        self.position = 0
        self.started: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.started is None:
            self.started = time.monotonic()
        wait = self.started + self.position / self.rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.audio[self.position:self.position + self.frame]
        chunk = np.pad(chunk, (0, self.frame - chunk.size))
        frame = AudioFrame.from_ndarray(np.round(chunk * 32767).astype(np.int16)[None, :], format="s16",
                                        layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.position, fractions.Fraction(1, self.rate)
        self.position += self.frame
        return frame

    @property
    def sent_s(self) -> float:
        return self.position / self.rate


@dataclass
class Client:
    pc: RTCPeerConnection
    answer: dict
    events: list[dict] = field(default_factory=list)
    audio: dict[str, list[np.ndarray]] = field(default_factory=dict)  # mid -> frames (mono, 48 kHz)
    tasks: list[asyncio.Task] = field(default_factory=list)
    channel: object = None

    def of_type(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_for(self, kind: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.of_type(kind)
            if found:
                return found[-1]
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {kind!r} event within {timeout} s; got {[e['type'] for e in self.events]}")

    def received(self, mid: str) -> np.ndarray:
        frames = self.audio.get(mid, [])
        return np.concatenate(frames) if frames else np.zeros(0, np.float32)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await self.pc.close()


async def connect(server, mic: MediaStreamTrack | None, slots: int = 4, data_channel: bool = True,
                  **options) -> Client:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    if mic is not None:
        pc.addTransceiver(mic, direction="sendonly")
    for _ in range(slots):
        pc.addTransceiver("audio", direction="recvonly")
    channel = pc.createDataChannel("events") if data_channel else None
    await pc.setLocalDescription(await pc.createOffer())
    response = await post_offer(server, {"sdp": pc.localDescription.sdp, "type": "offer", **options})
    assert response.status_code == 200, response.text
    client = Client(pc, response.json(), channel=channel)
    if channel is not None:
        channel.on("message", lambda message: client.events.append(json.loads(message)))
    await pc.setRemoteDescription(RTCSessionDescription(client.answer["sdp"], client.answer["type"]))

    async def record(mid: str, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                data = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1)
                client.audio.setdefault(mid, []).append(data.astype(np.float32) / 32768)

    for transceiver in pc.getTransceivers():
        if transceiver.direction == "recvonly":
            client.tasks.append(asyncio.create_task(record(transceiver.mid, transceiver.receiver.track)))
    return client


async def get(server, path, token=None, **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.get(server.base_url + path, headers=headers, params=params)


async def post_offer(server, body: dict | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=60) as http:
        return await http.post(server.base_url + "/v1/webrtc/offer", content=content,
                               headers={"Content-Type": "application/json"})


async def wait_state(server, answer, *, not_state="live", timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await get(server, f"/v1/sessions/{answer['session_id']}", answer["token"])).json()
        if status["state"] != not_state:
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"session still {not_state} after {timeout} s")


async def test_meeting_over_webrtc_gives_speaker_tracks_events_and_resources(server, meeting):
    audio, rate = meeting
    mic = FileTrack(audio, rate)
    client = await connect(server, mic, slots=4, client="pytest")
    answer = client.answer
    assert answer["type"] == "answer" and answer["session_id"] and answer["token"]
    assert [s["slot"] for s in answer["slots"]] == [0, 1, 2, 3] and answer["max_speakers"] == 4
    mids = [s["mid"] for s in answer["slots"]]
    try:
        while mic.sent_s < audio.size / rate:
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)  # the last steps come back
        client.channel.send(json.dumps({"type": "stop"}))
        done = await client.wait_for("done", timeout=30)
    finally:
        await client.close()

    # the data channel carried protocol v1's events, in order, beginning with 'ready'
    types = [e["type"] for e in client.events]
    assert types[0] == "ready" and client.events[0]["session_id"] == answer["session_id"]
    assert {"slot", "track", "speaker", "segment", "stats", "timeline"} <= set(types) and types[-1] == "done"
    assert client.of_type("timeline")[-1]["kind"] == "final"
    tracks, slots = client.of_type("track"), client.of_type("slot")
    assert len(tracks) >= 2 and done["speakers"] == [t["speaker"] for t in tracks]
    for track in tracks:  # each speaker's slot is announced before its track
        slot = next(s for s in slots if s["index"] == track["index"])
        assert types.index("slot") <= client.events.index(track) and slot["mid"] == mids[slot["slot"]]

    # each announced slot played its speaker from then on (paced frames, silence between turns); the
    # slots that got no speaker sent nothing
    stored, heard = {}, {}
    for slot in slots:
        heard[slot["mid"]] = soxr.resample(client.received(slot["mid"]), 48000, 16000)
        wav = await get(server, f"/v1/sessions/{answer['session_id']}/tracks/{slot['speaker']}.wav", answer["token"])
        assert wav.status_code == 200
        stored[slot["mid"]] = sf.read(io.BytesIO(wav.content), dtype="float32")[0]
        assert heard[slot["mid"]].size > 0
    for mid in set(mids) - set(heard):
        assert client.received(mid).size == 0
    # what a slot played is its own speaker's track (same turns), not another speaker's
    def speech_s(x: np.ndarray) -> float:  # 10 ms windows above -50 dBFS
        n = x.size // 160
        return float(np.sum(np.sqrt(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1)) > 10 ** (-50 / 20))) / 100

    played = [mid for mid in heard if speech_s(heard[mid]) > 2.0 and speech_s(stored[mid]) > 2.0]
    assert len(played) >= 2, {m: (speech_s(heard[m]), speech_s(stored[m])) for m in heard}
    for mid in played:
        own = _envelope_match(heard[mid], stored[mid])
        others = [_envelope_match(heard[mid], stored[m]) for m in stored if m != mid]
        assert own > 0.6 and all(own > o for o in others), (mid, own, others)

    # session resources work as for WebSocket sessions
    status = (await get(server, f"/v1/sessions/{answer['session_id']}", answer["token"])).json()
    assert status["state"] == "done" and status["transport"] == "webrtc" and status["outcome"] == "completed"
    assert abs(status["duration_s"] - done["duration_s"]) < 0.01 and done["duration_s"] >= audio.size / rate - 0.5
    rttm = await get(server, f"/v1/sessions/{answer['session_id']}/timeline", answer["token"], format="rttm")
    assert rttm.status_code == 200 and rttm.text.startswith("SPEAKER ")
    assert (await get(server, f"/v1/sessions/{answer['session_id']}/timeline")).status_code == 401
    metrics = (await get(server, "/metrics")).text
    assert 'transport="webrtc"' in metrics


def _envelope_match(heard: np.ndarray, stored: np.ndarray, hop: int = 160) -> float:
    """Best correlation of 10 ms energy envelopes at any alignment overlapping by 3 s or more (a slot's
    audio begins when its speaker is first heard; the stored track at the session's start)."""
    def envelope(x: np.ndarray) -> np.ndarray:
        n = x.size // hop
        return np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))

    a, b = envelope(heard), envelope(stored)
    best = 0.0
    for shift in range(-(a.size - 300), b.size - 300):  # a[i] against b[i + shift]
        x = a[max(0, -shift): min(a.size, b.size - shift)]
        y = b[max(0, shift): max(0, shift) + x.size]
        x, y = x - x.mean(), y - y.mean()
        denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
        if denominator > 0:
            best = max(best, float(np.sum(x * y) / denominator))
    return best


async def test_config_endpoint_has_no_external_stun_by_default(server):
    body = (await get(server, "/v1/webrtc/config")).json()
    assert body["ice_servers"] == [] and body["max_speakers"] >= 2 and body["sample_rate"] == 16000


async def _offer_sdp(recvonly: int = 1, sendonly: int = 1, video: bool = False) -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    for _ in range(sendonly):
        pc.addTransceiver(FileTrack(np.zeros(1600, np.float32), 16000), direction="sendonly")
    for _ in range(recvonly):
        pc.addTransceiver("audio", direction="recvonly")
    if video:
        pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


@pytest.mark.parametrize(
    "body,status,code",
    [
        (b"{nope", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_json"),
        ({"type": "answer", "sdp": "v=0"}, 400, "bad_offer"),
        ({"type": "offer"}, 400, "bad_offer"),
        ({"type": "offer", "sdp": "v=0", "sample_rate": 8000}, 400, "bad_offer"),
        ({"type": "offer", "sdp": "not an sdp"}, 400, "bad_offer"),
        ("good", 400, "bad_message"),  # a valid offer with max_speakers of the wrong type
        ("no-mic", 400, "bad_offer"),
        ("video", 400, "bad_offer"),
        ("two-mics", 400, "bad_offer"),
        ({"type": "offer", "sdp": "v=0" + " " * (70 * 1024)}, 413, "message_too_big"),
    ],
)
async def test_bad_offers_get_a_clear_error_and_no_session(server, body, status, code):
    if body == "good":
        body = {"type": "offer", "sdp": await _offer_sdp(), "max_speakers": "two"}
    elif body == "no-mic":
        body = {"type": "offer", "sdp": await _offer_sdp(sendonly=0)}
    elif body == "video":
        body = {"type": "offer", "sdp": await _offer_sdp(video=True)}
    elif body == "two-mics":
        body = {"type": "offer", "sdp": await _offer_sdp(sendonly=2)}
    before = len(server.services.manager.live)
    response = await post_offer(server, body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["detail"]
    assert len(server.services.manager.live) == before
    assert (await get(server, "/healthz")).json()["status"] == "ok"


async def test_bad_data_channel_message_ends_only_that_session(server, meeting):
    audio, rate = meeting
    good = await connect(server, FileTrack(audio, rate), slots=2)
    bad = await connect(server, FileTrack(audio, rate), slots=2)
    try:
        await bad.wait_for("ready")
        await asyncio.sleep(1.0)
        bad.channel.send('{"type":"start","sample_rate":16000}')
        error = await bad.wait_for("error")
        assert error["code"] == "unexpected_message" and error["close_code"] == 4400 and error["message"]
        status = await wait_state(server, bad.answer)
        assert status["state"] == "failed" and status["outcome"] == "unexpected_message"
        assert status["duration_s"] > 0  # what it did send was processed and kept

        await good.wait_for("ready")
        good.channel.send('{"type":"stop"}')
        done = await good.wait_for("done")
        assert done["session_id"] == good.answer["session_id"]
    finally:
        await good.close()
        await bad.close()


async def test_capacity_is_shared_with_websocket_sessions(server):
    first = await connect(server, FileTrack(np.zeros(16000 * 60, np.float32), 16000), slots=1)
    second = await connect(server, FileTrack(np.zeros(16000 * 60, np.float32), 16000), slots=1)
    try:
        response = await post_offer(server, {"type": "offer", "sdp": await _offer_sdp()})
        assert response.status_code == 503 and response.json()["code"] == "too_many_sessions"
        assert response.headers["Retry-After"]
        async with websockets.connect(server.ws_url) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd.code == 1013
    finally:
        await first.close()
        await second.close()
    # a client that leaves without 'stop' frees its place; what it sent is kept
    for client in (first, second):
        status = await wait_state(server, client.answer)
        assert status["state"] == "done" and status["outcome"] == "client_gone"
    assert len(server.services.manager.live) == 0


async def test_offer_never_connected_is_released_after_the_timeout(server):
    response = await post_offer(server, {"type": "offer", "sdp": await _offer_sdp()})
    answer = response.json()
    assert response.status_code == 200 and answer["session_id"] in server.services.manager.live
    status = await wait_state(server, answer, timeout=CONNECT_TIMEOUT_S + 10)
    assert status["outcome"] == "connect_timeout"
    assert answer["session_id"] not in server.services.manager.live


async def test_events_only_client_without_slots_or_channel(server, meeting):
    """No speaker slots and no data channel: the session still runs; results come over HTTP."""
    audio, rate = meeting
    client = await connect(server, FileTrack(audio[: 3 * rate], rate), slots=0, data_channel=False)
    try:
        assert client.answer["slots"] == [] and client.answer["max_speakers"] >= 2
        await asyncio.sleep(2.0)
    finally:
        await client.close()
    status = await wait_state(server, client.answer)
    assert status["state"] == "done" and status["outcome"] == "client_gone" and status["duration_s"] > 1.0


class SilentMicrophone(MediaStreamTrack):
    """A microphone track that never delivers a frame (a stalled client)."""

    kind = "audio"

    async def recv(self) -> AudioFrame:
        await asyncio.Event().wait()
        raise MediaStreamError


async def test_a_silent_microphone_hits_the_idle_timeout(server):
    client = await connect(server, SilentMicrophone(), slots=1)
    try:
        error = await client.wait_for("error", timeout=15)
        assert error["code"] == "idle_timeout" and error["close_code"] == 4408
        status = await wait_state(server, client.answer)
        assert status["state"] == "failed" and status["outcome"] == "idle_timeout"
    finally:
        await client.close()


async def test_deleting_a_live_session_ends_it(server, meeting):
    audio, rate = meeting
    client = await connect(server, FileTrack(audio, rate), slots=1)
    answer = client.answer
    try:
        await client.wait_for("ready")
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.delete(f"{server.base_url}/v1/sessions/{answer['session_id']}",
                                         headers={"Authorization": f"Bearer {answer['token']}"})
        assert response.status_code == 204
        assert (await client.wait_for("error"))["code"] == "session_deleted"
        assert answer["session_id"] not in server.services.manager.live
        assert (await get(server, f"/v1/sessions/{answer['session_id']}", answer["token"])).status_code == 404
    finally:
        await client.close()


async def test_api_key_is_needed_to_offer_when_configured(tmp_path):
    with run_server(tmp_path / "data", api_keys=("k-one",)) as keyed:
        sdp = await _offer_sdp()
        refused = await post_offer(keyed, {"type": "offer", "sdp": sdp})
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        async with httpx.AsyncClient(timeout=30) as http:
            wrong = await http.post(keyed.base_url + "/v1/webrtc/offer", headers={"X-API-Key": "nope"},
                                    json={"type": "offer", "sdp": sdp})
            assert wrong.status_code == 401
            accepted = await http.post(keyed.base_url + "/v1/webrtc/offer?api_key=k-one",
                                       json={"type": "offer", "sdp": sdp})
        assert accepted.status_code == 200 and accepted.json()["session_id"]


async def test_server_shutdown_finishes_webrtc_sessions(tmp_path, meeting):
    audio, rate = meeting
    server_context = run_server(tmp_path / "data")
    running = server_context.__enter__()
    try:
        client = await connect(running, FileTrack(audio, rate), slots=1)
        await client.wait_for("ready")
        await asyncio.sleep(1.5)
    finally:  # the server stops (in a thread, so that this loop's client keeps talking to it)
        stopping = asyncio.create_task(asyncio.to_thread(server_context.__exit__, None, None, None))
    done = await client.wait_for("done", timeout=30)
    await stopping
    await client.close()
    assert done["session_id"] == client.answer["session_id"] and done["duration_s"] > 1.0
    assert client.of_type("timeline")[-1]["kind"] == "final"


async def test_separated_sources_take_the_first_slots(tmp_path, meeting):
    """With a separator, its sources are tracks too: announced after 'ready', each on its own slot."""
    import torch

    from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig, save_convtasnet

    torch.manual_seed(0)  # a small, randomly initialised network: the path is under test, not its quality
    checkpoint = tmp_path / "tiny.safetensors"
    save_convtasnet(ConvTasNet(ConvTasNetConfig(encoder_filters=16, bottleneck_channels=16, hidden_channels=16,
                                                blocks_per_repeat=2, repeats=1)), checkpoint)
    overrides = {"separator": {"name": "convtasnet", "checkpoint": str(checkpoint)}}
    audio, rate = meeting
    with run_server(tmp_path / "data", pipeline=load_config(env={}, overrides=overrides).pipeline) as separating:
        config = (await get(separating, "/v1/webrtc/config")).json()
        assert config["sources"] == 2 and config["slots"] == 2 + config["max_speakers"]
        mic = FileTrack(audio[6 * rate: 12 * rate], rate)
        client = await connect(separating, mic, slots=4)
        try:
            assert client.answer["sources"] == 2 and client.answer["max_speakers"] == 2
            while mic.sent_s < 6.0:
                await asyncio.sleep(0.2)
            client.channel.send('{"type":"stop"}')
            await client.wait_for("done")
        finally:
            await client.close()
    ready, slots = client.events[0], client.of_type("slot")
    assert ready["type"] == "ready" and ready["separator"] == "convtasnet"
    assert [(s["speaker"], s["slot"]) for s in slots[:2]] == [("source_0", 0), ("source_1", 1)]
    sources = [t for t in client.of_type("track") if t["kind"] == "source"]
    assert [t["speaker"] for t in sources] == ["source_0", "source_1"]
    assert all(s["slot"] in (2, 3) for s in slots[2:])  # the speakers after them
    for slot in slots[:2]:
        heard = client.received(slot["mid"])
        assert heard.size > 48000 * 3 and np.sqrt(np.mean(heard**2)) > 1e-4
