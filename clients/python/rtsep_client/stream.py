"""Stream a file to an rtsep server (paced like a live source), collect tracks, events and the timeline."""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import soundfile as sf
import websockets

from rtsep.audio import float_to_s16, wav_bytes
from rtsep.protocol.frames import decode_audio_frame
from rtsep.protocol.messages import (
    Done,
    ErrorMessage,
    Ready,
    SpeakerActivity,
    Start,
    Stop,
    encode_message,
    parse_server_message,
)
from rtsep.protocol.pcm import encode_pcm


class ServerError(Exception):
    def __init__(self, code: str, message: str, close_code: int | None) -> None:
        super().__init__(f"{code}: {message} (close code {close_code})")
        self.code, self.message, self.close_code = code, message, close_code


@dataclass
class StreamResult:
    session_id: str
    token: str
    out_dir: Path
    speakers: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    label_latency_s: list[float] = field(default_factory=list)
    frame_latency_s: list[float] = field(default_factory=list)
    timeline: dict[str, Any] | None = None


def http_base(ws_url: str) -> str:
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"count": 0, "p50_s": None, "p95_s": None, "max_s": None}
    arr = np.array(values)
    return {"count": len(values), "p50_s": float(np.percentile(arr, 50)), "p95_s": float(np.percentile(arr, 95)),
            "max_s": float(arr.max())}


class _SendClock:
    """When (wall clock) the audio up to each input position was sent."""

    def __init__(self) -> None:
        self.ends: list[int] = []
        self.times: list[float] = []

    def record(self, end_sample: int, wall: float) -> None:
        self.ends.append(end_sample)
        self.times.append(wall)

    def sent_at(self, sample: int) -> float | None:
        i = bisect.bisect_left(self.ends, sample)
        return self.times[i] if i < len(self.times) else None


async def stream_file(
    path: str | Path,
    url: str,
    out_dir: str | Path,
    speed: float = 1.0,
    frame_ms: float = 20.0,
    encoding: str = "pcm_s16le",
    max_speakers: int | None = None,
    token_timeout_s: float = 600.0,
) -> StreamResult:
    """``speed``: 1.0 paces frames in real time, 2.0 twice as fast, 0 sends as fast as possible."""
    out = Path(out_dir)
    (out / "tracks").mkdir(parents=True, exist_ok=True)
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1, dtype=np.float32)
    frame = max(1, int(rate * frame_ms / 1000))
    clock = _SendClock()
    tracks: dict[int, np.ndarray] = {}
    names: dict[int, str] = {}
    events: list[dict[str, Any]] = []
    label_latency: list[float] = []
    frame_latency: list[float] = []
    async with websockets.connect(url, max_size=None) as ws:
        start = Start(sample_rate=int(rate), encoding=encoding, channels=1, max_speakers=max_speakers)
        await ws.send(encode_message(start))
        ready = parse_server_message(await ws.recv())
        if isinstance(ready, ErrorMessage):
            raise ServerError(ready.code, ready.message, ready.close_code)
        assert isinstance(ready, Ready)
        (out / "session.json").write_text(json.dumps({"session_id": ready.session_id, "token": ready.token,
                                                        "url": url}))
        out_rate = ready.sample_rate

        async def send() -> None:
            t0 = time.monotonic()
            for k, i in enumerate(range(0, mono.size, frame)):
                if speed > 0:
                    due = t0 + (i / rate) / speed
                    delay = due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await ws.send(encode_pcm(mono[i : i + frame], encoding))
                clock.record(min(i + frame, mono.size), time.monotonic())
            await ws.send(encode_message(Stop()))

        sender = asyncio.create_task(send())
        done: Done | None = None
        try:
            async for message in ws:
                now = time.monotonic()
                if isinstance(message, bytes):
                    header, samples = decode_audio_frame(message)
                    end = header.start_sample + header.sample_count
                    buf = tracks.get(header.track, np.zeros(0, np.float32))
                    if buf.size < end:
                        buf = np.concatenate([buf, np.zeros(end - buf.size, np.float32)])
                    buf[header.start_sample : end] = samples
                    tracks[header.track] = buf
                    sent = clock.sent_at(int(np.ceil(end * rate / header.sample_rate_hz)))
                    if sent is not None:
                        frame_latency.append(now - sent)
                    continue
                msg = parse_server_message(message)
                events.append({"t_wall": now, "type": msg.type, **{k: v for k, v in vars(msg).items()}})
                if isinstance(msg, SpeakerActivity):
                    names[msg.index] = msg.speaker
                    if msg.event == "started":
                        sent = clock.sent_at(int(np.ceil(msg.time_s * rate)))
                        if sent is not None:
                            label_latency.append(now - sent)
                elif isinstance(msg, ErrorMessage):
                    raise ServerError(msg.code, msg.message, msg.close_code)
                elif isinstance(msg, Done):
                    done = msg
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    assert done is not None
    duration = int(round(done.duration_s * out_rate))
    for index, buf in tracks.items():
        name = names.get(index, f"SPEAKER_{index:02d}")
        full = np.zeros(max(duration, buf.size), np.float32)
        full[: buf.size] = buf
        (out / "tracks" / f"{name}.wav").write_bytes(wav_bytes(float_to_s16(full), out_rate))
    base = http_base(url)
    headers = {"Authorization": f"Bearer {ready.token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=token_timeout_s) as http:
        tl_json = (await http.get(timeline_path(ready.session_id), params={"format": "json"})).raise_for_status()
        tl_rttm = (await http.get(timeline_path(ready.session_id), params={"format": "rttm"})).raise_for_status()
    (out / "timeline.json").write_text(json.dumps(tl_json.json(), indent=1))
    (out / "timeline.rttm").write_text(tl_rttm.text)
    (out / "events.json").write_text(json.dumps(events, indent=1))
    latency = {"label_latency": _percentiles(label_latency), "frame_latency": _percentiles(frame_latency),
               "speed": speed, "frame_ms": frame_ms}
    (out / "latency.json").write_text(json.dumps(latency, indent=1))
    return StreamResult(ready.session_id, ready.token, out, list(done.speakers), events, label_latency,
                        frame_latency, tl_json.json())


def timeline_path(session_id: str) -> str:
    return f"/v1/sessions/{session_id}/timeline"
