"""Mouth-to-ear latency of the WebRTC path on loopback, and server CPU per WebRTC session.

    python -m bench.webrtc_latency latency [--runs 3] [--config FILE.toml] [--prebuffer-ms 100] [--wav F --rttm F]
    python -m bench.webrtc_latency cpu [--sessions 1 2 4] [--runs 3] [--wav FILE --rttm FILE]

``--config`` is handed to `rtsep serve` (e.g. bench/configs/low-latency.toml); ``--prebuffer-ms`` sets the
server's playout cushion (RTSEP_WEBRTC_PREBUFFER_MS).

latency: a real `rtsep serve` and an aiortc client (no browser) that offers a microphone and 4 speaker
slots. The microphone plays the pyannote sample in real time (20 ms frames) with markers added inside the
reference speech turns every ~1.5 s: 30 ms chirps (Hann window, peak -10 dBFS), four different ones in
turn (1-4 kHz up, down, 1.5-6 kHz up, down) so that a marker is never taken for its neighbour. Each one
is searched, by normalised cross-correlation (> 0.6), in the audio of every speaker slot received.
Latency = arrival (client side) of the received 20 ms frame holding the marker's onset minus the
moment the client handed the sent frame holding it to WebRTC (both frame-quantised the same way).
It covers the whole path: Opus encode, network, server jitter buffer and decode, resampling, the 256 ms
analysis step, inference, routing, the server's playout cushion, Opus again, the client's jitter buffer.
Medians over runs of the per-run p50/p95.

cpu: N aiortc clients stream the sample in real time at once; the server process's CPU time (user+sys,
from /proc) during the sessions, less its idle CPU over as long, divided by N and by the session's
duration = cores per session. For comparison the same with N WebSocket clients (the reference client,
paced in real time, 20 ms frames).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from rtsep_client import stream_file
from scipy.signal import fftconvolve

from bench.common import add_audio_args, audio_paths, cpu_seconds, machine_note, metric_value, pct, rtsep_server
from rtsep.diarize.timeline import load_rttm

OUT_RATE = 48000  # what aiortc decodes Opus to
SLOTS = 4
MARKER_S = 0.03
MARKER_LEVEL = 0.3


MARKER_BANDS = [(1000.0, 4000.0), (4000.0, 1000.0), (1500.0, 6000.0), (6000.0, 1500.0)]  # cycled: unique


def chirp(rate: int, kind: int = 0) -> np.ndarray:
    f0, f1 = MARKER_BANDS[kind % len(MARKER_BANDS)]
    t = np.arange(int(MARKER_S * rate)) / rate
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * MARKER_S))
    return (MARKER_LEVEL * np.hanning(t.size) * np.sin(phase)).astype(np.float32)


def marked_sample(wav: Path, rttm: Path) -> tuple[np.ndarray, int, list[int]]:
    """The recording with markers inside its reference speech turns; returns (audio, rate, marker starts)."""
    audio, rate = sf.read(str(wav), dtype="float32")
    turns = next(iter(load_rttm(Path(rttm).read_text()).values()))
    starts: list[int] = []
    for segment in turns.get_timeline().support():
        t = segment.start + 0.4
        while t + 0.4 < segment.end:
            if not starts or t - starts[-1] / rate >= 1.5:
                starts.append(int(t * rate))
            t += 0.1
    audio = audio.copy()
    for k, s in enumerate(starts):
        marker = chirp(rate, k)
        audio[s:s + marker.size] += marker
    return np.clip(audio, -1, 1), rate, starts


class Microphone(MediaStreamTrack):
    """Plays ``audio`` in real time, 20 ms frames; remembers when each frame was handed over."""

    kind = "audio"

    def __init__(self, audio: np.ndarray, rate: int) -> None:
        super().__init__()
        self.audio, self.rate, self.frame = audio, rate, rate // 50
        self.handed: list[float] = []
        self.started: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        k = len(self.handed)
        if self.started is None:
            self.started = time.monotonic()
        wait = self.started + (k + 1) * self.frame / self.rate - time.monotonic()  # the frame is complete
        if wait > 0:
            await asyncio.sleep(wait)
        chunk = self.audio[k * self.frame:(k + 1) * self.frame]
        chunk = np.pad(chunk, (0, self.frame - chunk.size))
        frame = AudioFrame.from_ndarray(np.round(chunk * 32767).astype(np.int16)[None, :], format="s16",
                                        layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = self.rate, k * self.frame, fractions.Fraction(1, self.rate)
        self.handed.append(time.monotonic())
        return frame

    @property
    def done(self) -> bool:
        return len(self.handed) * self.frame >= self.audio.size


class WebRtcClient:
    def __init__(self, base: str, audio: np.ndarray, rate: int) -> None:
        self.base = base
        self.mic = Microphone(audio, rate)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.received: dict[str, list[tuple[float, np.ndarray]]] = {}  # mid -> (arrival, mono 48 kHz)
        self.events: list[dict] = []
        self.tasks: list[asyncio.Task] = []
        self.answer: dict = {}

    async def start(self) -> None:
        self.pc.addTransceiver(self.mic, direction="sendonly")
        for _ in range(SLOTS):
            self.pc.addTransceiver("audio", direction="recvonly")
        self.channel = self.pc.createDataChannel("events")
        self.channel.on("message", lambda m: self.events.append(json.loads(m)))
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with httpx.AsyncClient(timeout=30) as http:
            response = await http.post(self.base + "/v1/webrtc/offer", json={
                "sdp": self.pc.localDescription.sdp, "type": "offer", "client": "bench"})
        response.raise_for_status()
        self.answer = response.json()
        await self.pc.setRemoteDescription(RTCSessionDescription(self.answer["sdp"], "answer"))
        for t in self.pc.getTransceivers():
            if t.direction == "recvonly":
                self.tasks.append(asyncio.create_task(self._record(t.mid, t.receiver.track)))

    async def _record(self, mid: str, track: MediaStreamTrack) -> None:
        frames = self.received.setdefault(mid, [])
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                now = time.monotonic()
                mono = frame.to_ndarray().reshape(-1, len(frame.layout.channels)).mean(axis=1) / 32768
                frames.append((now, mono.astype(np.float32)))

    async def finish(self, tail_s: float = 2.0) -> dict:
        while not self.mic.done:
            await asyncio.sleep(0.1)
        await asyncio.sleep(tail_s)
        self.channel.send(json.dumps({"type": "stop"}))
        deadline = time.monotonic() + 60
        while not any(e["type"] == "done" for e in self.events) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self.tasks:
            task.cancel()
        await self.pc.close()
        return next((e for e in self.events if e["type"] == "done"), {})


def find_markers(client: WebRtcClient, starts: list[int], rate: int) -> tuple[list[float], int]:
    """Latency of each marker found in a speaker slot; returns (latencies, markers not found)."""
    slots = []
    for frames in client.received.values():
        if not frames:
            continue
        arrivals = np.array([t for t, _ in frames])
        audio = np.concatenate([x for _, x in frames])
        slots.append((arrivals, frames[0][1].size, audio))
    ncc_by_kind: dict[int, list[np.ndarray]] = {}
    for kind in range(len(MARKER_BANDS)):
        template = chirp(OUT_RATE, kind)
        template = template / np.linalg.norm(template)
        ncc_by_kind[kind] = []
        for _, _, audio in slots:
            corr = fftconvolve(audio, template[::-1], mode="valid")
            energy = np.sqrt(np.maximum(fftconvolve(audio**2, np.ones(template.size), mode="valid"), 1e-12))
            ncc_by_kind[kind].append(corr / energy)
    latencies, missing = [], 0
    for k, s in enumerate(starts):
        mouth = client.mic.handed[s // client.mic.frame]
        first = None  # the earliest arrival, over all slots, of this marker's onset
        for (arrivals, frame_size, _), ncc in zip(slots, ncc_by_kind[k % len(MARKER_BANDS)]):
            lo, hi = np.searchsorted(arrivals, [mouth, mouth + 3.0])  # frames arrived within 3 s
            window = ncc[lo * frame_size:min(hi * frame_size, ncc.size)]
            above = np.flatnonzero(window > 0.6)  # normalised correlation that counts as found
            if above.size:
                arrival = arrivals[(lo * frame_size + int(above[0])) // frame_size]
                first = arrival if first is None else min(first, arrival)
        if first is None:
            missing += 1
        else:
            latencies.append(float(first - mouth))
    return latencies, missing


def latency(args: argparse.Namespace) -> dict:
    audio, rate, starts = marked_sample(*audio_paths(args))
    runs = []
    config_toml = Path(args.config).read_text() if args.config else None
    if args.prebuffer_ms is not None:
        os.environ["RTSEP_WEBRTC_PREBUFFER_MS"] = str(args.prebuffer_ms)  # the server subprocess inherits it
    with (tempfile.TemporaryDirectory() as tmp,
          rtsep_server(Path(tmp) / "data", "--log-level", "info", config_toml=config_toml) as (base, _)):
        server_log = Path(tmp) / f"server-{base.rsplit(':', 1)[1]}.log"  # where bench.common.rtsep_server logs
        for _ in range(args.runs):
            async def one() -> WebRtcClient:
                client = WebRtcClient(base, audio, rate)
                await client.start()
                await client.finish()
                return client

            client = asyncio.run(one())
            found, missing = find_markers(client, starts, rate)
            runs.append({"p50_s": pct(found, 50), "p95_s": pct(found, 95), "max_s": max(found, default=None),
                         "markers": len(starts), "found": len(found), "missing": missing,
                         "speakers": len([e for e in client.events if e["type"] == "track"]),
                         "playout_glitches": _server_glitches(server_log, client.answer["session_id"])})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
        metrics = httpx.get(base + "/metrics").text
    ok = [r for r in runs if r["found"]]
    summary = {k: round(statistics.median(r[k] for r in ok), 3) for k in ("p50_s", "p95_s")} if ok else {}
    summary["playout_glitches_per_run"] = [r["playout_glitches"] for r in runs]
    # of which: from a step's last sample reaching the pipeline to its labels and audio leaving it
    summary["server_step_processing_mean_s"] = round(
        metric_value(metrics, "rtsep_processing_latency_seconds_sum")
        / max(metric_value(metrics, "rtsep_processing_latency_seconds_count"), 1), 3)
    return {"runs": runs, "median": summary, "config": args.config, "prebuffer_ms": args.prebuffer_ms or 100}


def _server_glitches(server_log: Path, session_id: str) -> int | None:
    """From the server's log line at the session's end: underruns in the middle of a speaker's audio."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        text = server_log.read_text(errors="replace")
        match = re.search(rf"session {session_id}: playout [0-9.]+ s, (\d+) glitch", text)
        if match:
            return int(match.group(1))
        time.sleep(0.1)
    return None


async def _webrtc_sessions(base: str, audio: np.ndarray, rate: int, n: int) -> None:
    clients = [WebRtcClient(base, audio, rate) for _ in range(n)]
    await asyncio.gather(*(c.start() for c in clients))
    await asyncio.gather(*(c.finish(tail_s=0.5) for c in clients))


async def _websocket_sessions(base: str, wav: Path, out: Path, n: int) -> None:
    url = base.replace("http", "ws") + "/v1/stream"
    await asyncio.gather(*(stream_file(wav, url, out / str(k), speed=1.0) for k in range(n)))


def cpu(args: argparse.Namespace) -> dict:
    wav, _ = audio_paths(args)
    audio, rate = sf.read(str(wav), dtype="float32")
    duration = audio.size / rate
    results = []
    with tempfile.TemporaryDirectory() as tmp, rtsep_server(Path(tmp) / "data") as (base, proc):
        time.sleep(2.0)  # the server settles after start-up before its idle CPU is measured
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle_s)
        idle_cores = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
        for n in args.sessions:
            for transport in ("webrtc", "websocket"):
                per_run = []
                for i in range(args.runs):
                    c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                    if transport == "webrtc":
                        asyncio.run(_webrtc_sessions(base, audio, rate, n))
                    else:
                        asyncio.run(_websocket_sessions(base, wav, Path(tmp) / f"ws-{n}-{i}", n))
                    wall = time.monotonic() - t0
                    used = cpu_seconds(proc.pid) - c0 - idle_cores * wall
                    per_run.append(used / n / duration)
                results.append({"transport": transport, "sessions": n,
                                "cores_per_session": round(statistics.median(per_run), 4),
                                "runs": [round(x, 4) for x in per_run]})
                print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return {"idle_server_cores": round(idle_cores, 4), "audio_s": round(duration, 2), "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--config", help="a TOML config for the server")
    p.add_argument("--prebuffer-ms", type=int, help="the server's playout cushion (default 100)")
    add_audio_args(p)
    p = sub.add_parser("cpu")
    p.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--idle-s", type=float, default=5.0, help="how long the idle server's CPU is measured")
    add_audio_args(p)
    args = parser.parse_args()
    note = machine_note()
    result = latency(args) if args.command == "latency" else cpu(args)
    result["machine"] = note
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
