"""Production limits on a real server: API keys, isolation, idle and rate limits, deletion, retention, disk full."""

import asyncio
import json
import subprocess

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

from tests.conftest import run_server, tone

pytestmark = pytest.mark.slow


def auth(token):
    return {"Authorization": f"Bearer {token}"}


async def short_session(ws_url: str, seconds: float = 1.0, **connect) -> dict:
    async with websockets.connect(ws_url, **connect) as ws:
        await ws.send('{"type":"start","sample_rate":16000}')
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        await ws.send((tone(seconds, 16000) * 32767).astype("<i2").tobytes())
        await ws.send('{"type":"stop"}')
        async for _ in ws:
            pass
    return ready


async def closed_with(ws, code: int) -> dict:
    errors = []
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            message = await asyncio.wait_for(ws.recv(), 30)
            if isinstance(message, str) and json.loads(message)["type"] == "error":
                errors.append(json.loads(message))
    assert closed.value.rcvd.code == code, (closed.value.rcvd, errors)
    return errors[-1] if errors else {}


async def test_api_keys_and_session_isolation(tmp_path):
    with run_server(tmp_path / "data", api_keys=("k-one", "k-two")) as server:
        async with websockets.connect(server.ws_url) as ws:  # refused right after the handshake
            assert (await closed_with(ws, 4401))["code"] == "unauthorized"
        async with websockets.connect(server.ws_url, additional_headers={"X-API-Key": "wrong"}) as ws:
            await closed_with(ws, 4401)
        a = await short_session(server.ws_url, additional_headers={"Authorization": "Bearer k-one"})
        b = await short_session(server.ws_url + "?api_key=k-two")
        base = server.base_url + "/v1/sessions/"
        for own, other in ((a, b), (b, a)):
            assert httpx.get(base + own["session_id"], headers=auth(own["token"])).status_code == 200
            for path in ("", "/timeline", "/timeline?kind=live&format=rttm"):
                assert httpx.get(base + other["session_id"] + path, headers=auth(own["token"])).status_code == 401
            assert httpx.delete(base + other["session_id"], headers=auth(own["token"])).status_code == 401
            # the API key is not a session token either
            assert httpx.get(base + own["session_id"], headers=auth("k-one")).status_code == 401


async def test_idle_and_too_fast_clients_are_closed(tmp_path):
    with run_server(tmp_path / "data", idle_timeout_s=0.5, max_realtime_ratio=1.0, realtime_burst_s=2.0) as server:
        async with websockets.connect(server.ws_url) as ws:
            await ws.send('{"type":"start","sample_rate":16000}')
            await ws.recv()
            assert (await closed_with(ws, 4408))["code"] == "idle_timeout"
        async with websockets.connect(server.ws_url) as ws:
            await ws.send('{"type":"start","sample_rate":16000}')
            await ws.recv()
            await ws.send(np.zeros(16000 * 5, "<i2").tobytes())  # 5 s of audio at once
            assert (await closed_with(ws, 4429))["code"] == "too_fast"
        metrics = httpx.get(server.base_url + "/metrics").text
        assert 'rtsep_errors_total{code="idle_timeout"} 1.0' in metrics
        assert 'rtsep_errors_total{code="too_fast"} 1.0' in metrics


async def test_delete_ended_and_live_sessions(tmp_path):
    with run_server(tmp_path / "data") as server:
        ended = await short_session(server.ws_url)
        url = f"{server.base_url}/v1/sessions/{ended['session_id']}"
        assert (tmp_path / "data" / "sessions" / ended["session_id"]).exists()
        assert httpx.delete(url, headers=auth(ended["token"])).status_code == 204
        assert httpx.get(url, headers=auth(ended["token"])).status_code == 404
        assert httpx.get(url + "/timeline", headers=auth(ended["token"])).status_code == 404
        assert not (tmp_path / "data" / "sessions" / ended["session_id"]).exists()

        async with websockets.connect(server.ws_url) as ws:
            await ws.send('{"type":"start","sample_rate":16000}')
            live = json.loads(await ws.recv())
            await ws.send((tone(1.0, 16000) * 32767).astype("<i2").tobytes())
            response = await asyncio.to_thread(
                httpx.delete, f"{server.base_url}/v1/sessions/{live['session_id']}", headers=auth(live["token"]))
            assert response.status_code == 204
            assert (await closed_with(ws, 4410))["code"] == "session_deleted"
        assert not (tmp_path / "data" / "sessions" / live["session_id"]).exists()
        assert server.services.store.get(live["session_id"]) is None


async def test_retention_deletes_what_ended_longer_ago(tmp_path):
    """The sweep on a clock the test sets: kept just before the retention ends, deleted just after."""
    with run_server(tmp_path / "data", retention="1h") as server:  # the server's own sweeps delete nothing here
        ready = await short_session(server.ws_url)
        url = f"{server.base_url}/v1/sessions/{ready['session_id']}"
        ended_at = server.services.store.get(ready["session_id"]).ended_at
        assert await server.services.manager.sweep(3600.0, now=ended_at + 3599.0) == []
        assert httpx.get(url, headers=auth(ready["token"])).status_code == 200
        assert await server.services.manager.sweep(3600.0, now=ended_at + 3601.0) == [ready["session_id"]]
        assert httpx.get(url, headers=auth(ready["token"])).status_code == 404
        assert not (tmp_path / "data" / "sessions" / ready["session_id"]).exists()
        assert 'rtsep_deleted_sessions_total 1.0' in httpx.get(server.base_url + "/metrics").text


@pytest.mark.timeout(60)
async def test_the_server_sweeps_by_itself(tmp_path):
    with run_server(tmp_path / "data", retention="1s") as server:  # swept every 0.25 s
        ready = await short_session(server.ws_url)
        url = f"{server.base_url}/v1/sessions/{ready['session_id']}"
        async with httpx.AsyncClient() as client:
            while (await client.get(url, headers=auth(ready["token"]))).status_code == 200:
                await asyncio.sleep(0.1)  # polling the server's state over HTTP: nothing to wait on here
        assert not (tmp_path / "data" / "sessions" / ready["session_id"]).exists()


@pytest.fixture
def tiny_disk(tmp_path):
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_disk_full_gives_clear_error_and_corrupts_nothing(tiny_disk, meeting_wav):
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    with run_server(tiny_disk / "data") as server:
        first = await short_session(server.ws_url, seconds=0.5)
        async with websockets.connect(server.ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
            await ws.recv()
            for i in range(0, audio.size, rate):
                await ws.send(audio[i : i + rate].astype("<f4").tobytes())
            await ws.send('{"type":"stop"}')
            error = await closed_with(ws, 1011)
        assert error["code"] == "store_error" and "No space left" in error["message"]
        assert httpx.get(server.base_url + "/healthz").json()["status"] == "ok"
        # what was stored before is intact and still served
        status = httpx.get(f"{server.base_url}/v1/sessions/{first['session_id']}", headers=auth(first["token"]))
        assert status.status_code == 200 and status.json()["state"] == "done"
    # and the store opens cleanly afterwards
    from rtsep.store.sqlite import SqliteSessionStore

    reopened = SqliteSessionStore(tiny_disk / "data")
    assert reopened.get(first["session_id"]).state == "done"
