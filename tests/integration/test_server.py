"""A real server on loopback with real models, driven by real clients (websockets, httpx, rtsep_client)."""

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
import soundfile as sf
import torch
import websockets
from rtsep_client import stream_file

from tests.conftest import run_server, tone

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(tmp_path_factory.mktemp("data"), max_sessions=3) as running:
        yield running


def get(server, path, token=None, **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(server.base_url + path, headers=headers, params=params, timeout=60)


async def test_stream_meeting_returns_speakers_tracks_and_timeline(server, meeting_wav, tmp_path):
    result = await stream_file(meeting_wav, server.ws_url, tmp_path / "out", speed=0)
    session = json.loads((tmp_path / "out" / "session.json").read_text())
    assert session["session_id"] == result.session_id
    assert len(result.speakers) >= 2
    tracks = sorted(p.name for p in (tmp_path / "out" / "tracks").glob("*.wav"))
    assert len(tracks) >= 2
    for name in tracks:
        audio, rate = sf.read(str(tmp_path / "out" / "tracks" / name))
        assert rate == 16000 and abs(len(audio) / rate - 20.0) < 0.1 and np.abs(audio).max() > 0.01
    timeline = json.loads((tmp_path / "out" / "timeline.json").read_text())
    assert timeline["kind"] == "final" and len(timeline["speakers"]) >= 2
    assert (tmp_path / "out" / "timeline.rttm").read_text().startswith("SPEAKER ")
    announced = {e["speaker"] for e in result.events if e["type"] == "track"}
    assert {name.removesuffix(".wav") for name in tracks} == announced  # saved under the names announced
    kinds = {e["type"] for e in result.events}
    assert {"track", "speaker", "segment", "timeline", "done"} <= kinds
    assert result.label_latency_s and result.frame_latency_s

    # the same tracks over HTTP, with the session's token only
    sid, token = result.session_id, result.token
    status = get(server, f"/v1/sessions/{sid}", token)
    assert status.status_code == 200 and status.json()["state"] == "done"
    wav = get(server, f"/v1/sessions/{sid}/tracks/{result.speakers[0]}.wav", token)
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF"

    # the session has ended: one track per final speaker, named as in the final timeline, beside the live ones
    body = status.json()
    final = get(server, f"/v1/sessions/{sid}/timeline", token).json()
    assert set(body["tracks"]) == announced  # the live tracks, as they were sent
    assert body["final_tracks"] == final["tracks"] and set(final["tracks"]) == set(final["speakers"])
    assert set(final["speakers"]) & announced  # where the re-clustering keeps a live speaker, its name stays
    assert body["input_track"] == f"/v1/sessions/{sid}/tracks/input.wav"
    from rtsep.stream.loudness import integrated_loudness, true_peak

    for speaker, url in final["tracks"].items():
        assert url == f"/v1/sessions/{sid}/tracks/final-{speaker}.wav"
        answer = get(server, url, token)
        assert answer.status_code == 200
        audio, rate = sf.read(io.BytesIO(answer.content), dtype="float32")
        assert rate == 16000 and abs(len(audio) / rate - 20.0) < 0.1
        # EBU R128: at the target (-23 LUFS), unless the true-peak ceiling (-1 dBTP) turned it down
        assert abs(integrated_loudness(audio, rate) + 23) < 0.5 or true_peak(audio) > 10 ** (-1.2 / 20), speaker
        assert np.abs(audio).max() < 1.0
    assert get(server, next(iter(final["tracks"].values()))).status_code == 401
    live = get(server, f"/v1/sessions/{sid}/timeline", token, kind="live", format="rttm")
    assert live.status_code == 200 and "SPEAKER" in live.text
    assert get(server, f"/v1/sessions/{sid}/timeline").status_code == 401
    assert get(server, f"/v1/sessions/{sid}/timeline", "wrong-token").status_code == 401
    assert get(server, "/v1/sessions/deadbeef/timeline", token).status_code == 404


def test_api_docs_work_offline(server):
    """/docs references only this server's own URLs (no CDN), and each of them is served."""
    import re

    page = get(server, "/docs")
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(r"url: '([^']+)'", page.text)
    assert len(urls) >= 3, urls  # the script, the stylesheet, the OpenAPI document (and the icon)
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = get(server, url)
        assert asset.status_code == 200 and len(asset.content) > 100, url
    script = get(server, "/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in script.headers["content-type"] and b"SwaggerUIBundle" in script.content
    assert get(server, "/openapi.json").json()["paths"]["/v1/webrtc/offer"]


async def _expect_close(url, messages, code):
    async with websockets.connect(url) as ws:
        for m in messages:
            await ws.send(m)
        replies = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                replies.append(await asyncio.wait_for(ws.recv(), 20))
    assert closed.value.rcvd.code == code, (closed.value.rcvd, replies)
    errors = [json.loads(r) for r in replies if isinstance(r, str) and json.loads(r)["type"] == "error"]
    assert errors and errors[-1]["close_code"] == code and errors[-1]["message"]
    return errors[-1]


@pytest.mark.parametrize(
    "messages,code,error",
    [
        (["{nope"], 4400, "bad_json"),
        (['{"type":"dance"}'], 4400, "unknown_message"),
        ([b"\x00\x00"], 4400, "audio_before_start"),
        (['{"type":"start","sample_rate":1000}'], 4400, "unsupported_rate"),
        (['{"type":"start","sample_rate":16000,"encoding":"mp3"}'], 4400, "unsupported_encoding"),
        (['{"type":"start","sample_rate":16000}', b"\x00\x00\x00"], 4400, "partial_sample"),
        (['{"type":"start","sample_rate":16000}', bytes((1 << 20) + 2)], 1009, "message_too_big"),
    ],
)
async def test_bad_input_ends_only_that_session(server, messages, code, error):
    body = await _expect_close(server.ws_url, messages, code)
    assert body["code"] == error
    assert httpx.get(server.base_url + "/healthz").json()["status"] == "ok"


async def test_bad_session_keeps_what_it_produced_and_others_unaffected(server):
    rate = 16000
    async with websockets.connect(server.ws_url) as good:
        await good.send('{"type":"start","sample_rate":16000}')
        ready = json.loads(await good.recv())
        # a broken client in between
        await _expect_close(server.ws_url, ['{"type":"start","sample_rate":16000}', b"\x01"], 4400)
        await good.send((tone(1.0, rate) * 32767).astype("<i2").tobytes())
        await good.send('{"type":"stop"}')
        types = []
        async for message in good:
            if isinstance(message, str):
                types.append(json.loads(message)["type"])
        assert types[-1] == "done"
    assert good.close_code == 1000
    assert get(server, f"/v1/sessions/{ready['session_id']}", ready["token"]).json()["state"] == "done"


async def test_too_many_sessions_gets_1013(server):
    opened = []
    try:
        for _ in range(3):
            ws = await websockets.connect(server.ws_url)
            await ws.send('{"type":"start","sample_rate":16000}')
            await ws.recv()
            opened.append(ws)
        await _expect_close(server.ws_url, [], 1013)
    finally:
        for ws in opened:
            await ws.close()
    # capacity comes back once they are gone
    await asyncio.sleep(0.5)
    async with websockets.connect(server.ws_url) as ws:
        await ws.send('{"type":"start","sample_rate":16000}')
        assert json.loads(await ws.recv())["type"] == "ready"


async def _negotiated_extensions(ws_url: str) -> str | None:
    """The ``Sec-WebSocket-Extensions`` of the server's handshake answer to a client that offers permessage-deflate
    (the websockets library's default offer)."""
    async with websockets.connect(ws_url, compression="deflate") as ws:
        await ws.send('{"type":"start","sample_rate":16000}')
        assert json.loads(await ws.recv())["type"] == "ready"
        return ws.response.headers.get("Sec-WebSocket-Extensions")


async def test_server_declines_permessage_deflate_by_default(server):
    # audio does not compress: deflating every frame to and from every client cost most of the event loop's CPU
    assert await _negotiated_extensions(server.ws_url) is None


async def test_permessage_deflate_when_configured(tmp_path):
    with run_server(tmp_path / "data", ws_per_message_deflate=True) as running:
        extensions = await _negotiated_extensions(running.ws_url)
    assert extensions is not None and "permessage-deflate" in extensions


async def test_dropped_client_loses_nothing_and_metrics(server, meeting_wav):
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
        ready = json.loads(await ws.recv())
        await ws.send(audio[: 12 * rate].astype("<f4").tobytes())
    # the client vanished without 'stop': the server still finishes and keeps the session
    for _ in range(200):
        status = get(server, f"/v1/sessions/{ready['session_id']}", ready["token"]).json()
        if status["state"] != "live":
            break
        await asyncio.sleep(0.1)
    assert status["state"] == "done" and status["outcome"] == "client_gone"
    assert abs(status["duration_s"] - 12.0) < 0.3 and status["speakers"]
    final = get(server, f"/v1/sessions/{ready['session_id']}/timeline", ready["token"]).json()
    assert final["kind"] == "final" and final["segments"]
    metrics = httpx.get(server.base_url + "/metrics").text
    for name in ["rtsep_active_sessions", "rtsep_sessions_total", "rtsep_audio_in_seconds_total",
                 "rtsep_processing_latency_seconds_bucket", "rtsep_real_time_factor", "rtsep_queue_depth",
                 "rtsep_dropped_frames_total", "rtsep_errors_total"]:
        assert name in metrics
    assert 'outcome="client_gone"' in metrics


async def test_final_timeline_on_demand_while_live(server, meeting_wav):
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
        ready = json.loads(await ws.recv())
        await ws.send(audio[: 10 * rate].astype("<f4").tobytes())
        while True:  # wait until the server has analysed some speech
            message = await asyncio.wait_for(ws.recv(), 60)
            if isinstance(message, str) and json.loads(message)["type"] == "speaker":
                break
        await asyncio.sleep(1.0)
        url = f"/v1/sessions/{ready['session_id']}/timeline"
        final = get(server, url, ready["token"], kind="final").json()
        live = get(server, url, ready["token"], kind="live").json()
        assert final["state"] == "live" and final["kind"] == "final" and final["segments"]
        assert live["kind"] == "live" and live["state"] == "live"
        await ws.send('{"type":"stop"}')
        async for message in ws:
            pass
    assert ws.close_code == 1000


async def test_store_failure_ends_that_session_with_1011(server, monkeypatch, meeting_wav):
    from rtsep.errors import StoreError

    def disk_full(*args, **kwargs):
        raise StoreError("cannot write track: [Errno 28] No space left on device")

    monkeypatch.setattr(server.services.store, "write_track", disk_full)
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
        json.loads(await ws.recv())
        errors = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.send(audio[: 12 * rate].astype("<f4").tobytes())
            await ws.send('{"type":"stop"}')
            while True:
                message = await asyncio.wait_for(ws.recv(), 30)
                if isinstance(message, str) and json.loads(message)["type"] == "error":
                    errors.append(json.loads(message))
    assert closed.value.rcvd.code == 1011
    assert errors and errors[0]["code"] == "store_error" and "No space left" in errors[0]["message"]
    monkeypatch.undo()
    assert httpx.get(server.base_url + "/healthz").json()["status"] == "ok"


async def _session_output(url: str, pcm: bytes, rate: int, frame_bytes: int) -> tuple[list, list]:
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate}))
        json.loads(await ws.recv())
        for i in range(0, len(pcm), frame_bytes):
            await ws.send(pcm[i : i + frame_bytes])
        await ws.send('{"type":"stop"}')
        events, frames = [], []
        async for message in ws:
            if isinstance(message, bytes):
                frames.append(message)
            else:
                body = json.loads(message)
                if body["type"] not in ("stats", "done"):
                    body.pop("url", None)  # contains the session id
                    events.append(body)
    return events, frames


async def test_results_do_not_depend_on_client_framing(server, meeting_wav):
    audio, rate = sf.read(str(meeting_wav), dtype="int16")
    pcm = audio[: 9 * rate].tobytes()
    outputs = [await _session_output(server.ws_url, pcm, rate, 2 * n) for n in (37, 320, 4801, 9 * rate)]
    events, frames = outputs[0]
    assert any(e["type"] == "speaker" for e in events) and frames
    for other_events, other_frames in outputs[1:]:
        assert other_events == events
        assert other_frames == frames


class BrokenModel(torch.nn.Module):
    """Stands in for a model that fails at inference (a CUDA fault, a bad checkpoint...)."""

    def forward(self, *args):
        raise RuntimeError("the model broke")


async def test_a_failing_model_ends_that_session_with_1011_and_frees_its_slot(server, monkeypatch, meeting_wav):
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    monkeypatch.setattr(server.services.runtime, "vad", BrokenModel())
    async with websockets.connect(server.ws_url) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
        ready = json.loads(await ws.recv())
        errors = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.send(audio[: 4 * rate].astype("<f4").tobytes())
            while True:  # no stop: the session must end by itself, not wait for the client
                message = await asyncio.wait_for(ws.recv(), 30)
                if isinstance(message, str) and json.loads(message)["type"] == "error":
                    errors.append(json.loads(message))
    assert closed.value.rcvd.code == 1011
    assert [e["code"] for e in errors] == ["internal_error"] and "the model broke" in errors[0]["message"]
    monkeypatch.undo()
    for _ in range(100):  # the slot is freed once the session's end is stored
        if httpx.get(server.base_url + "/healthz").json()["active_sessions"] == 0:
            break
        await asyncio.sleep(0.05)
    assert httpx.get(server.base_url + "/healthz").json()["active_sessions"] == 0
    assert get(server, f"/v1/sessions/{ready['session_id']}", ready["token"]).json()["state"] == "failed"
    async with websockets.connect(server.ws_url) as ws:  # the server goes on
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
        assert json.loads(await ws.recv())["type"] == "ready"
        await ws.send(audio[: 2 * rate].astype("<f4").tobytes())
        await ws.send('{"type":"stop"}')
        kinds = [json.loads(m)["type"] async for m in ws if isinstance(m, str)]
    assert kinds[-1] == "done" and ws.close_code == 1000
