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
from rtsep_protocol.frames import decode_audio_frame
from rtsep_protocol.messages import (
    Done,
    ErrorMessage,
    Ready,
    SpeakerActivity,
    Start,
    Stop,
    TrackAnnouncement,
    encode_message,
    parse_server_message,
)
from rtsep_protocol.pcm import encode_pcm, float_to_s16


class ServerError(Exception):
    """The server ended the session with an ``error`` message."""

    def __init__(self, code: str, message: str, close_code: int | None) -> None:
        super().__init__(f"{code}: {message} (close code {close_code})")
        self.code, self.message, self.close_code = code, message, close_code


class AudioFileError(Exception):
    """The input file is missing or is not audio that soundfile can read."""


@dataclass
class StreamResult:
    session_id: str
    token: str
    out_dir: Path
    speakers: list[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    label_latency_s: list[float] = field(default_factory=list)
    frame_latency_s: list[float] = field(default_factory=list)  # every audio frame (speakers and sources)
    timeline: dict[str, Any] | None = None
    # the same per kind of track: gated speaker tracks, and separated sources (tracks announced as "source")
    speaker_frame_latency_s: list[float] = field(default_factory=list)
    source_frame_latency_s: list[float] = field(default_factory=list)
    # arrival of a `speaker stopped` event minus the moment the client had sent the audio at the turn's end
    turn_end_latency_s: list[float] = field(default_factory=list)


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
    voices: list[str] | str | None = None,
    compression: str | None = None,
) -> StreamResult:
    """``speed``: 1.0 paces frames in real time, 2.0 twice as fast, 0 sends as fast as possible.

    ``compression``: the WebSocket extension to offer, ``"deflate"`` (permessage-deflate) or None (the default:
    PCM audio hardly compresses, and deflating every 20 ms frame costs both ends CPU; rtsep's server declines it
    unless its ``[server] ws_per_message_deflate`` is on)."""
    audio, rate = read_audio(Path(path))
    out = Path(out_dir)
    (out / "tracks").mkdir(parents=True, exist_ok=True)
    mono = audio.mean(axis=1, dtype=np.float32)
    frame = max(1, int(rate * frame_ms / 1000))
    clock = _SendClock()
    tracks: dict[int, np.ndarray] = {}  # each track's samples so far (its buffer may run past its length)
    lengths: dict[int, int] = {}
    names: dict[int, str] = {}
    events: list[dict[str, Any]] = []
    sources: set[int] = set()  # track indices of separated sources (announced with kind "source")
    label_latency: list[float] = []
    frame_latency: list[float] = []
    by_kind: dict[str, list[float]] = {"speaker": [], "source": []}
    turn_end_latency: list[float] = []
    async with websockets.connect(url, max_size=None, compression=compression) as ws:
        start = Start(sample_rate=int(rate), encoding=encoding, channels=1, max_speakers=max_speakers, voices=voices)
        await ws.send(encode_message(start))
        ready = parse_server_message(await ws.recv())
        if isinstance(ready, ErrorMessage):
            raise ServerError(ready.code, ready.message, ready.close_code)
        if not isinstance(ready, Ready):
            raise ServerError("protocol_error", f"expected 'ready', got {ready.type!r}", None)
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
                    if buf.size < end:  # grown geometrically: one copy per doubling, not one per frame
                        grown = np.zeros(max(end, 2 * buf.size), np.float32)
                        grown[: buf.size] = buf
                        buf = tracks[header.track] = grown
                    buf[header.start_sample : end] = samples
                    lengths[header.track] = max(lengths.get(header.track, 0), end)
                    sent = clock.sent_at(int(np.ceil(end * rate / header.sample_rate_hz)))
                    if sent is not None:
                        frame_latency.append(now - sent)
                        by_kind["source" if header.track in sources else "speaker"].append(now - sent)
                    continue
                msg = parse_server_message(message)
                events.append({"t_wall": now, "type": msg.type, **{k: v for k, v in vars(msg).items()}})
                if isinstance(msg, TrackAnnouncement):
                    names[msg.index] = msg.speaker  # the track's name: SPEAKER_00, or source_0 for a source
                    if msg.kind == "source":
                        sources.add(msg.index)
                elif isinstance(msg, SpeakerActivity):
                    names.setdefault(msg.index, msg.speaker)
                    sent = clock.sent_at(int(np.ceil(msg.time_s * rate)))
                    if sent is not None:
                        (label_latency if msg.event == "started" else turn_end_latency).append(now - sent)
                elif isinstance(msg, ErrorMessage):
                    raise ServerError(msg.code, msg.message, msg.close_code)
                elif isinstance(msg, Done):
                    done = msg
                    break
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    if done is None:
        raise ServerError("connection_closed", "the server closed the connection before 'done'", ws.close_code)
    duration = int(round(done.duration_s * out_rate))
    for index, buf in tracks.items():
        name = names.get(index, f"track_{index}")  # every track is announced before its audio; in case not
        buf = buf[: lengths[index]]
        full = np.zeros(max(duration, buf.size), np.float32)
        full[: buf.size] = buf
        folder = out / ("separated" if index in sources else "tracks")
        folder.mkdir(exist_ok=True)
        sf.write(str(folder / f"{name}.wav"), float_to_s16(full), out_rate, subtype="PCM_16")
    base = http_base(url)
    headers = {"Authorization": f"Bearer {ready.token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=token_timeout_s) as http:
        tl_json = (await http.get(timeline_path(ready.session_id), params={"format": "json"})).raise_for_status()
        tl_rttm = (await http.get(timeline_path(ready.session_id), params={"format": "rttm"})).raise_for_status()
    (out / "timeline.json").write_text(json.dumps(tl_json.json(), indent=1))
    (out / "timeline.rttm").write_text(tl_rttm.text)
    (out / "events.json").write_text(json.dumps(events, indent=1))
    latency = {"label_latency": _percentiles(label_latency), "frame_latency": _percentiles(frame_latency),
               "speaker_frame_latency": _percentiles(by_kind["speaker"]),
               "source_frame_latency": _percentiles(by_kind["source"]),
               "turn_end_latency": _percentiles(turn_end_latency), "speed": speed, "frame_ms": frame_ms}
    (out / "latency.json").write_text(json.dumps(latency, indent=1))
    return StreamResult(ready.session_id, ready.token, out, list(done.speakers), events, label_latency,
                        frame_latency, tl_json.json(), by_kind["speaker"], by_kind["source"], turn_end_latency)


def read_audio(path: Path) -> tuple[np.ndarray, int]:
    """(frames, channels) float32 and the sample rate; :class:`AudioFileError` when it is not there or not audio."""
    if not path.is_file():
        raise AudioFileError(f"no such file: {path}" if not path.exists() else f"not a file: {path}")
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioFileError(f"cannot read audio file {path}: {exc}") from None
    if audio.shape[0] == 0:
        raise AudioFileError(f"{path} holds no audio (0 samples)")
    return audio, int(rate)


def timeline_path(session_id: str) -> str:
    return f"/v1/sessions/{session_id}/timeline"
