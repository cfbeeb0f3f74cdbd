"""Two real `rtsep serve` replicas on one real PostgreSQL behind a real nginx (round-robin, WebSocket upgrade):
any replica serves any session, live or ended; a replica killed with -9 loses nothing it acknowledged (segments,
``stored`` marks); DELETE is everywhere."""

import asyncio
import io
import json
import os
import signal
import threading

import httpx
import numpy as np
import psycopg
import pytest
import soundfile as sf
import websockets

from rtsep.protocol.frames import decode_audio_frame
from tests.replicas import nginx_binary, run_nginx, start_replica, stop

pytestmark = pytest.mark.slow
LEASE = "2s"  # short, so that the survivor notices the death soon


@pytest.fixture
def cluster(postgres, tmp_path):
    if nginx_binary() is None:
        pytest.skip("nginx absent: apt-get install nginx (.ci/run installs it)")
    url = postgres.create_database("e2e")
    replicas = []
    try:
        for name in ("r1", "r2"):
            replicas.append(start_replica(tmp_path, url, name, "--separator", "none", "--lease", LEASE,
                                          "--max-sessions", "4"))
        with run_nginx(tmp_path, [r.port for r in replicas]) as proxy:
            yield url, replicas, proxy
    finally:
        for r in replicas:
            stop(r.proc)


async def _stream(ws_url: str, audio: np.ndarray, rate: int, *, until_segments: int | None = None,
                  on_acknowledged=None) -> dict:
    """Sends ``audio`` (within the server's real-time burst allowance) and collects what the server sent:
    segments, audio frames, ``stored`` marks (track name -> end sample). With ``until_segments``, calls
    ``on_acknowledged(result)`` once that many segments and a stored mark have come, the session still live (no
    stop sent); otherwise stops and reads until done."""
    segments, frames, speakers, stored = [], {}, {}, {}
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_s16le"}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
        for offset in range(0, len(pcm), rate // 2):
            await ws.send(pcm[offset:offset + rate // 2].tobytes())
        if until_segments is None:
            await ws.send(json.dumps({"type": "stop"}))
        while True:
            message = await asyncio.wait_for(ws.recv(), 120)
            if isinstance(message, bytes):
                header, samples = decode_audio_frame(message)
                frames.setdefault(header.track, []).append((header.start_sample, samples))
                continue
            body = json.loads(message)
            if body["type"] == "segment":
                segments.append((body["speaker"], body["start_s"], body["end_s"]))
            elif body["type"] == "track":
                speakers[body["index"]] = body["speaker"]
            elif body["type"] == "stored":
                assert body["end_sample"] >= stored.get(body["speaker"], 0), body  # marks only grow
                stored[body["speaker"]] = body["end_sample"]
            elif body["type"] == "error":
                raise AssertionError(body)
            result = {"ready": ready, "segments": segments, "frames": frames, "speakers": speakers,
                      "stored": stored}
            if body["type"] == "done":
                return result
            if until_segments is not None and len(segments) >= until_segments and stored:
                on_acknowledged(result)
                return result


def _owner(url: str, session_id: str) -> str:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT owner FROM sessions WHERE session_id = %s", (session_id,)).fetchone()[0]


def _rows(url: str, session_id: str) -> int:
    with psycopg.connect(url) as conn:
        return sum(conn.execute(f"SELECT count(*) FROM {table} WHERE session_id = %s", (session_id,)).fetchone()[0]
                   for table in ("sessions", "live_segments", "final_timelines", "track_chunks"))


def _wav(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    samples, _ = sf.read(io.BytesIO(response.content), dtype="int16")
    return samples


def test_two_replicas_behind_nginx(cluster, meeting_wav):
    url, replicas, proxy = cluster
    audio, rate = sf.read(str(meeting_wav), dtype="float32")
    api = httpx.Client(base_url=proxy.base_url, timeout=30)

    # 1. a whole session through the proxy, then its results fetched through the proxy from either replica
    first = asyncio.run(_stream(proxy.ws_url, audio[: 8 * rate], rate))
    sid, token = first["ready"]["session_id"], first["ready"]["token"]
    auth = {"Authorization": f"Bearer {token}"}
    answers = [(api.get(f"/v1/sessions/{sid}", headers=auth).json(),
                api.get(f"/v1/sessions/{sid}/timeline", headers=auth, params={"format": "rttm"}).text)
               for _ in range(4)]
    status, rttm = answers[0]
    assert status["state"] == "done" and status["tracks"] and "SPEAKER" in rttm
    # before done, every track was acknowledged whole
    assert set(first["stored"]) == set(status["tracks"])
    assert all(a == answers[0] for a in answers), "the replicas disagree about one session"
    tracks = {name: [_wav(api.get(path, headers=auth)) for _ in range(2)] for name, path in status["tracks"].items()}
    for name, (a, b) in tracks.items():
        np.testing.assert_array_equal(a, b)
        assert a.size > 0, name
    served_by = set(proxy.upstreams(f"/v1/sessions/{sid}"))
    assert served_by == {f"127.0.0.1:{r.port}" for r in replicas}, served_by

    # 2. a session live on one replica, read through the proxy from both, then that replica is killed with -9
    killed = {}

    def kill_owner(acknowledged):
        ready = acknowledged["ready"]
        session, headers = ready["session_id"], {"Authorization": f"Bearer {ready['token']}"}
        owner = _owner(url, session)
        # while it is live: status, timeline and tracks from either replica (the other one reads the store)
        # (round-robin: consecutive requests of one kind go to both replicas)
        assert [api.get(f"/v1/sessions/{session}", headers=headers).json()["state"] for _ in range(2)] == ["live"] * 2
        timelines = []
        for _ in range(4):
            timeline = api.get(f"/v1/sessions/{session}/timeline", headers=headers)
            assert timeline.status_code == 200, timeline.text
            timelines.append(timeline.json())
        assert set(proxy.upstreams(f"/v1/sessions/{session}")) == {f"127.0.0.1:{r.port}" for r in replicas}
        assert all(t["state"] == "live" for t in timelines)
        # the owner computes a final timeline on demand; the other replica serves the stored live one
        assert sorted(t["kind"] for t in timelines) == ["final", "final", "live", "live"], timelines
        for t in timelines:
            if t["kind"] == "live":
                served = {(s["speaker"], s["start_s"], s["end_s"]) for s in t["segments"]}
                assert set(acknowledged["segments"]) <= served
        for name, end_sample in acknowledged["stored"].items():
            for _ in range(2):
                assert _wav(api.get(f"/v1/sessions/{session}/tracks/{name}.wav", headers=headers)).size >= end_sample
        victim = next(r for r in replicas if r.replica_id == owner)
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(30)
        killed["replica"] = victim
        killed["reads_before"] = len(proxy.upstreams(f"/v1/sessions/{session}"))

    second = asyncio.run(_stream(proxy.ws_url, audio, rate, until_segments=2, on_acknowledged=kill_owner))
    sid2, auth2 = second["ready"]["session_id"], {"Authorization": f"Bearer {second['ready']['token']}"}
    survivor = next(r for r in replicas if r is not killed["replica"])
    # the survivor's lease thread marks the session once the dead replica's lease has run out; poll the proxy
    pace = threading.Event()  # the state lives in other processes: no event to wait on, so poll (paced)
    for _ in range(300):
        status2 = api.get(f"/v1/sessions/{sid2}", headers=auth2).json()
        if status2["state"] == "interrupted":
            break
        pace.wait(0.1)
    else:
        pytest.fail(f"session never marked interrupted: {status2}; {survivor.log_tail()}")
    assert status2["outcome"] == "replica_lost"
    live = api.get(f"/v1/sessions/{sid2}/timeline", headers=auth2, params={"kind": "live"}).json()
    served = {(s["speaker"], s["start_s"], s["end_s"]) for s in live["segments"]}
    assert set(second["segments"]) <= served  # every acknowledged segment is there
    # every sample of a track before its last stored mark is served, equal to the frames sent (silence between)
    assert second["frames"] and second["stored"]
    names = {track: second["speakers"].get(track, f"SPEAKER_{track:02d}") for track in second["frames"]}
    for track, frames in second["frames"].items():
        end_sample = second["stored"].get(names[track], 0)
        expected = np.zeros(end_sample, np.int16)
        for start, samples in frames:
            sent = np.round(samples * 32768).astype(np.int16)  # pcm_s16le on the wire, decoded to float
            expected[start:min(start + sent.size, end_sample)] = sent[:max(0, end_sample - start)]
        stored = _wav(api.get(f"/v1/sessions/{sid2}/tracks/{names[track]}.wav", headers=auth2))
        assert stored.size >= end_sample, (names[track], stored.size, end_sample)
        np.testing.assert_array_equal(stored[:end_sample], expected)
    after_kill = proxy.upstreams(f"/v1/sessions/{sid2}")[killed["reads_before"]:]
    assert set(after_kill) == {f"127.0.0.1:{survivor.port}"}

    # 3. DELETE through the proxy deletes everywhere: rows, audio, and both replicas answer 404
    for session, headers in ((sid, auth), (sid2, auth2)):
        assert api.delete(f"/v1/sessions/{session}", headers=headers).status_code == 204
        assert _rows(url, session) == 0
    assert [api.get(f"/v1/sessions/{sid}", headers=auth).status_code for _ in range(2)] == [404, 404]

