"""The real command line, as a user runs it: rtsep serve / stream / process, and kill -9 of the server."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets

pytestmark = pytest.mark.slow
RTSEP = [sys.executable, "-m", "rtsep"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    log = open(data_dir.parent / f"server-{port}-{time.monotonic_ns()}.log", "w+b")  # never an unread pipe
    proc = subprocess.Popen(
        RTSEP + ["serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("server did not become healthy")


def test_process_writes_every_output(meeting_wav, tmp_path):
    out = tmp_path / "out"
    # the default separator (the shipped Conv-TasNet), adapting a fixed 4 plain steps and 2 passes (not its time budget)
    quick = ["--adapt-steps", "4", "--adapt-budget-rtf", "0", "--no-adapt-compile", "--ensemble", "2",
             "--ensemble-budget-rtf", "0", "--no-wiener"]
    run = subprocess.run(RTSEP + ["process", str(meeting_wav), "--out", str(out), "--quiet", *quick],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert len(report["speakers"]) >= 2
    for name in ["timeline.rttm", "timeline.json", "timeline.png", "timeline.live.rttm", "timeline.live.json"]:
        assert (out / name).stat().st_size > 0, name
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    tracks = sorted((out / "tracks").glob("*.wav"))
    # tracks/: one per final speaker, named as in timeline.json; tracks/live/: the live speakers' tracks
    final = json.loads((out / "timeline.json").read_text())
    assert sorted(t.stem for t in tracks) == sorted(report["speakers"]) == sorted(final["speakers"])
    assert final["tracks"] == {speaker: f"tracks/{speaker}.wav" for speaker in final["speakers"]}
    assert sorted(t.stem for t in (out / "tracks" / "live").glob("*.wav")) == sorted(report["live_speakers"])
    assert not (out / "tracks" / "input.wav").exists() and not list(out.rglob("final-*"))
    mix = sum(sf.read(str(t))[0] for t in tracks)
    assert abs(len(mix) / 16000 - 20.0) < 0.1
    sources = json.loads((out / "separated" / "sources.json").read_text())
    assert sources["adaptation"]["steps"] == 4 and len(sources["ensemble_speeds"]) == 2
    assert sources["wiener_postfilter"] is None  # --no-wiener
    for k in range(2):
        audio, rate = sf.read(str(out / "separated" / f"source_{k}.wav"))
        assert rate == 16000 and abs(len(audio) / rate - 20.0) < 0.1 and np.abs(audio).max() > 0


def test_ctrl_c_during_adaptation_stops_at_once_and_says_what_it_kept(meeting_wav, tmp_path):
    out = tmp_path / "out"
    # far more steps than could ever finish: only the interrupt ends it
    slow = ["--adapt-steps", "1000000", "--no-adapt-compile", "--ensemble", "1", "--adapt-threads", "1"]
    proc = subprocess.Popen(RTSEP + ["process", str(meeting_wav), "--out", str(out), "--quiet", *slow],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's
    try:
        for line in proc.stderr:  # the log says when the adaptation thread has started
            if "adapting the separator" in line:
                break
        else:
            pytest.fail(f"the adaptation never started (exit {proc.wait()})")
        proc.send_signal(signal.SIGINT)  # one Ctrl-C
        rest = proc.stderr.read()
        assert proc.wait(timeout=300) == 130, rest[-3000:]
    finally:
        proc.kill()
        proc.wait()
    assert "Traceback" not in rest, rest[-3000:]
    lines = [line for line in rest.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rtsep process: interrupted; kept"), rest[-3000:]
    assert "timeline.json" in lines[0] and "tracks/" in lines[0]  # the diarization had finished: it is kept
    assert json.loads((out / "timeline.json").read_text())["kind"] == "final"
    assert not (out / "separated").exists()


@pytest.mark.parametrize("seconds,said", [(3.0, "no speech found in 3.0 s of audio"),
                                          (0.0, "the file holds no audio (0 s)")])
def test_process_says_when_there_is_no_speech_and_logs_progress_sparely(tmp_path, seconds, said):
    wav = tmp_path / "quiet.wav"
    sf.write(str(wav), np.zeros(int(seconds * 16000), np.float32), 16000)
    out = tmp_path / "out"
    run = subprocess.run(RTSEP + ["process", str(wav), "--out", str(out), "--separator", "none"],
                         capture_output=True, text=True, timeout=600)  # stderr is a pipe here, as in a log
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert report["speakers"] == [] and report["duration_s"] == seconds
    assert json.loads((out / "timeline.json").read_text())["segments"] == []
    assert (out / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = run.stderr.splitlines()
    assert [line for line in lines if said in line and "0 speakers" in line], run.stderr
    # progress in a log: whole lines, no terminal codes, not one per update
    assert "\r" not in run.stderr and "\x1b" not in run.stderr, repr(run.stderr[-500:])
    assert len([line for line in lines if "quiet.wav:" in line and " of " in line]) <= 2, run.stderr
    assert "Traceback" not in run.stderr and "Warning" not in run.stderr, run.stderr


def test_process_reports_unreadable_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    run = subprocess.run(RTSEP + ["process", str(bad), "--out", str(tmp_path / "o"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "cannot read audio file" in run.stderr
    run = subprocess.run(RTSEP + ["process", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "o"), "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr.strip() == f"rtsep: error: no such file: {tmp_path / 'missing.wav'}"


def test_serve_stream_and_kill_9_loses_nothing(meeting_wav, tmp_path):
    data, port = tmp_path / "data", free_port()
    url = f"ws://127.0.0.1:{port}/v1/stream"
    server = start_server(data, port)
    try:
        run = subprocess.run(RTSEP + ["stream", str(meeting_wav), "--url", url, "--out", str(tmp_path / "s"),
                                      "--speed", "0"], capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-2000:]
        summary = json.loads(run.stdout)
        assert len(summary["speakers"]) >= 2
        out = tmp_path / "s"
        assert json.loads((out / "session.json").read_text())["session_id"] == summary["session_id"]
        assert (out / "timeline.rttm").read_text().count("SPEAKER") >= 2
        speakers = sorted(p.stem for p in (out / "tracks").glob("*.wav"))
        assert len(speakers) >= 2 and all(name.startswith("SPEAKER_") and len(name) == 10 for name in speakers)
        # the separated sources under the names the server announced (not their frames' track index 0x8000 + k)
        assert sorted(p.stem for p in (out / "separated").glob("*.wav")) == ["source_0", "source_1"]
        assert json.loads((out / "latency.json").read_text())["label_latency"]["count"] > 0

        # a session that is streaming when the server is killed with -9
        audio, rate = sf.read(str(meeting_wav), dtype="float32")

        async def stream_until_killed() -> dict:
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
                ready = json.loads(await ws.recv())
                await ws.send(audio[: 15 * rate].astype("<f4").tobytes())
                segments, processed_s = 0, 0.0
                while segments < 1 or processed_s < 12.0:  # wait until something was produced and stored
                    message = await asyncio.wait_for(ws.recv(), 60)
                    if isinstance(message, str):
                        body = json.loads(message)
                        segments += body["type"] == "segment"
                        processed_s = body["processed_s"] if body["type"] == "stats" else processed_s
                os.kill(server.pid, signal.SIGKILL)
                server.wait(30)
                return ready

        live = asyncio.run(stream_until_killed())
    finally:
        server.kill()
        server.wait(30)

    server = start_server(data, port)
    try:
        headers = {"Authorization": f"Bearer {live['token']}"}
        base = f"http://127.0.0.1:{port}/v1/sessions/{live['session_id']}"
        status = httpx.get(base, headers=headers).json()
        assert status["state"] == "interrupted" and status["outcome"] == "server_restart"
        timeline = httpx.get(base + "/timeline", headers=headers, params={"kind": "live"}).json()
        assert len(timeline["segments"]) >= 1
        assert status["tracks"]
        track = httpx.get(f"http://127.0.0.1:{port}" + next(iter(status["tracks"].values())), headers=headers)
        assert track.status_code == 200 and len(track.content) > 44
        # the session that completed before the crash is still served, with its token
        done = json.loads((tmp_path / "s" / "session.json").read_text())
        old = httpx.get(f"http://127.0.0.1:{port}/v1/sessions/{done['session_id']}/timeline",
                        headers={"Authorization": f"Bearer {done['token']}"}, params={"format": "rttm"})
        assert old.text == (tmp_path / "s" / "timeline.rttm").read_text()
    finally:
        server.terminate()
        server.wait(30)


def test_sigterm_drains_live_sessions(meeting_wav, tmp_path):
    data, port = tmp_path / "data", free_port()
    url = f"ws://127.0.0.1:{port}/v1/stream"
    server = start_server(data, port)
    audio, rate = sf.read(str(meeting_wav), dtype="float32")

    async def live_session_through_sigterm() -> tuple[dict, list[str], int]:
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
            ready = json.loads(await ws.recv())
            await ws.send(audio[: 8 * rate].astype("<f4").tobytes())
            await asyncio.sleep(1.0)
            server.send_signal(signal.SIGTERM)
            types = []
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    message = await asyncio.wait_for(ws.recv(), 60)
                    if isinstance(message, str):
                        types.append(json.loads(message)["type"])
            return ready, types, closed.value.rcvd.code

    try:
        ready, types, code = asyncio.run(live_session_through_sigterm())
        assert code == 1001
        assert types[-2:] == ["timeline", "done"]
        assert server.wait(60) == 0
    finally:
        server.kill()
        server.wait(30)
    server = start_server(data, port)
    try:
        status = httpx.get(f"http://127.0.0.1:{port}/v1/sessions/{ready['session_id']}",
                           headers={"Authorization": f"Bearer {ready['token']}"}).json()
        assert status["state"] == "done" and status["outcome"] == "server_shutting_down"
        assert abs(status["duration_s"] - 8.0) < 0.3
    finally:
        server.terminate()
        server.wait(30)
