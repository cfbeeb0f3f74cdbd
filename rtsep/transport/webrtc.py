"""WebRTC transport (aiortc): ``POST /v1/webrtc/offer`` signalling, the microphone track in, one audio
track per speaker slot out, and a data channel with the same JSON events as ``WS /v1/stream``.

The client's offer holds, in this order or any other:

- exactly one audio m-line that the client sends on (``sendonly``/``sendrecv``): the microphone;
- N ``recvonly`` audio m-lines: the *slots*. The server maps each new track (a speaker, or a separated
  source when a separator is configured) to a free slot, announces it with a ``slot`` message (slot, mid,
  speaker, index) and plays that track on it;
- optionally one data channel (any label): the server sends ``ready`` when it opens, then every event
  of protocol v1 (``speaker``, ``segment``, ``track``, ``timeline``, ``stats``, ``error``, ``done``) as
  text; the client may send ``{"type":"stop"}`` on it to end the session cleanly.

Incoming audio feeds the same :class:`~rtsep.stream.session.StreamSession` as the WebSocket path (one
long-lived resampler per track), and the track is always consumed: when inference falls behind by more
than ``max_pending_steps``, the new steps are shed: marked gaps (``gap`` events, counted in
``rtsep_dropped_frames_total{path="input"}``) at their own positions, so that later audio keeps its timestamps.
Outgoing audio goes through :class:`Playout`, one jitter buffer on one sample timeline for all slots,
read by one pacer every 20 ms: silence on underrun, oldest audio dropped when the buffer is full.

The sans-I/O parts (:func:`parse_offer`, :func:`describe_offer`, :class:`SlotMap`, :class:`Playout`,
:func:`frame_to_mono`) carry the logic; the classes below them only move data between aiortc and them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fractions
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rtsep.audio import float_to_s16
from rtsep.driver import NullSink, SessionDriver
from rtsep.errors import (
    BadApiKey,
    ClientError,
    IdleTimeout,
    MessageTooBig,
    ProtocolViolation,
    RtsepError,
    ServerBusy,
    ServerDraining,
    UnsupportedAudio,
)
from rtsep.protocol.messages import (
    ErrorMessage,
    Ready,
    TrackAnnouncement,
    encode_message,
    parse_json_object,
)
from rtsep.sessions import SessionManager
from rtsep.stream.core import AudioOut
from rtsep.stream.limits import RealtimeGuard
from rtsep.stream.session import ChunkReady, Phase, StopRequested, StreamSession
from rtsep.transport.webrtc_config import WebRtcConfig

log = logging.getLogger(__name__)

OPUS_RATE_HZ = 48000  # aiortc decodes Opus to 48 kHz; the offer is answered with Opus only
OFFER_OPTIONS = ("max_speakers", "client")  # the session options a client may put beside sdp/type


def rtc_configuration(config: WebRtcConfig) -> RTCConfiguration:
    # an explicit (possibly empty) list: aiortc would otherwise use a public STUN server
    return RTCConfiguration(iceServers=[
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential) for s in config.ice_servers
    ])


# --- signalling (sans-I/O) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    sdp: str
    options: dict[str, Any]


def parse_offer(body: bytes, max_bytes: int) -> Offer:
    """``{"sdp": ..., "type": "offer", "max_speakers"?: int, "client"?: str}`` -> Offer."""
    if len(body) > max_bytes:
        raise MessageTooBig(f"offer of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    obj = parse_json_object(body, "the offer")
    if obj.get("type") != "offer":
        raise ProtocolViolation(f"'type' must be \"offer\", got {obj.get('type')!r}", error_code="bad_offer")
    sdp = obj.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise ProtocolViolation("'sdp' must be a non-empty string", error_code="bad_offer")
    options = {k: v for k, v in obj.items() if k not in ("sdp", "type")}
    unknown = sorted(set(options) - set(OFFER_OPTIONS))
    if unknown:
        raise ProtocolViolation(f"unknown offer field(s) {unknown}; session options are {list(OFFER_OPTIONS)}",
                                error_code="bad_offer")
    return Offer(sdp, options)


@dataclass(frozen=True)
class OfferLayout:
    """What the offer's m-lines are for, in m-line order: ``"mic"``, ``"slot"`` or ``"data"``."""

    roles: tuple[str, ...]

    @property
    def slots(self) -> int:
        return self.roles.count("slot")


def describe_offer(sdp: str) -> OfferLayout:
    from aiortc import sdp as sdp_module

    try:
        description = sdp_module.SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - the parser raises many kinds on bad input
        raise ProtocolViolation(f"the offer's SDP could not be parsed: {exc!r}", error_code="bad_offer") from None
    roles = []
    for i, media in enumerate(description.media):
        if media.kind == "application":
            roles.append("data")
        elif media.kind != "audio":
            raise ProtocolViolation(f"m-line {i} is {media.kind}; rtsep takes audio only", error_code="bad_offer")
        elif media.direction in ("sendonly", "sendrecv"):
            if "mic" in roles:
                raise ProtocolViolation("the offer sends more than one audio track; send one microphone",
                                        error_code="bad_offer")
            roles.append("mic")
        elif media.direction == "recvonly":
            roles.append("slot")
        else:
            raise ProtocolViolation(f"audio m-line {i} is {media.direction}; use sendonly (microphone) or "
                                    "recvonly (speaker slot)", error_code="bad_offer")
    if "mic" not in roles:
        raise ProtocolViolation("the offer has no audio track to receive: add the microphone (sendonly)",
                                error_code="bad_offer")
    return OfferLayout(tuple(roles))


@dataclass(frozen=True)
class SlotAssignment:
    """Server -> client (WebRTC only): speaker ``index`` plays on slot ``slot`` (transceiver ``mid``);
    ``slot`` is null when every slot is taken."""

    type: ClassVar[str] = "slot"
    slot: int | None
    mid: str | None
    speaker: str
    index: int


class SlotMap:
    """Speakers -> outgoing slots, first come first served; a slot stays its speaker's for the session."""

    def __init__(self, mids: list[str]) -> None:
        self.mids = mids
        self._by_speaker: dict[int, int | None] = {}

    def __len__(self) -> int:
        return len(self.mids)

    def lookup(self, speaker: int) -> tuple[int | None, bool]:
        """(slot, new): ``new`` is True the first time ``speaker`` is seen."""
        if speaker in self._by_speaker:
            return self._by_speaker[speaker], False
        taken = {s for s in self._by_speaker.values() if s is not None}
        free = [i for i in range(len(self.mids)) if i not in taken]
        slot = free[0] if free else None
        self._by_speaker[speaker] = slot
        return slot, True

    @property
    def assigned(self) -> dict[int, int]:
        return {speaker: slot for speaker, slot in self._by_speaker.items() if slot is not None}


# --- playout (sans-I/O) -------------------------------------------------------------------------


class Playout:
    """Jitter buffers of all slots on one timeline of absolute sample positions (so speakers stay aligned).

    ``write`` puts a speaker's audio at its position; ``read`` takes the next ``n`` samples of every slot.
    - After a start, or when the buffer ran dry and new audio begins later, playback resumes
      ``prebuffer`` samples before it (a cushion against the jitter of inference).
    - Underrun: ``read`` returns silence and does not advance (the cushion grows by the stall). When the
      audio that resumes it continues where playback stopped, the underrun was a glitch (audible gap in a
      turn), counted in ``glitches``; when it starts later, there was nothing to play (a pause).
    - Audio for positions already played is late and dropped; audio further ahead than ``capacity``
      drops the oldest buffered audio (playback jumps forward).
    """

    def __init__(self, slots: int, capacity_samples: int, prebuffer_samples: int) -> None:
        if slots < 0 or prebuffer_samples < 0 or capacity_samples <= prebuffer_samples:
            raise ValueError("need slots >= 0 and 0 <= prebuffer_samples < capacity_samples")
        self.slots = slots
        self.capacity = capacity_samples
        self.prebuffer = prebuffer_samples
        self._ring = np.zeros((slots, capacity_samples), np.float32)
        self.read_pos: int | None = None
        self.write_end: int | None = None
        self.played_samples = 0
        self.underrun_samples = 0
        self.late_samples = 0
        self.dropped_samples = 0
        self.glitches = 0
        self._stalled = False

    @property
    def buffered_samples(self) -> int:
        if self.read_pos is None or self.write_end is None:
            return 0
        return max(0, self.write_end - self.read_pos)

    def write(self, slot: int, start_sample: int, samples: np.ndarray) -> None:
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} out of range")
        samples = np.asarray(samples, np.float32)
        if samples.size == 0:
            return
        if self.read_pos is None or self.write_end is None:
            self.read_pos = start_sample - self.prebuffer
            self.write_end = self.read_pos
        elif self.write_end <= self.read_pos and start_sample - self.prebuffer > self.read_pos:
            self._advance_to(start_sample - self.prebuffer)  # ran dry: resume with a fresh cushion
        elif self._stalled:
            self.glitches += 1  # what should have been playing arrived too late
        self._stalled = False
        end = start_sample + samples.size
        if end - self.read_pos > self.capacity:
            before = self.read_pos
            self._advance_to(end - self.capacity)
            self.dropped_samples += self.read_pos - before
        if start_sample < self.read_pos:
            late = min(samples.size, self.read_pos - start_sample)
            self.late_samples += late
            samples, start_sample = samples[late:], start_sample + late
            if samples.size == 0:
                return
        index = np.arange(start_sample, start_sample + samples.size) % self.capacity
        self._ring[slot, index] = samples
        self.write_end = max(self.write_end, start_sample + samples.size)

    def read(self, n: int) -> np.ndarray:
        """(slots, n) float32: the next ``n`` samples of every slot, silence where there is none."""
        out = np.zeros((self.slots, n), np.float32)
        if self.read_pos is None or self.write_end is None:
            return out
        take = min(n, self.write_end - self.read_pos)
        if take > 0:
            index = np.arange(self.read_pos, self.read_pos + take) % self.capacity
            out[:, :take] = self._ring[:, index]
            self._ring[:, index] = 0.0
            self.read_pos += take
            self.played_samples += take
        if take < n:
            self.underrun_samples += n - max(take, 0)
            self._stalled = True
        return out

    def skip(self, n: int) -> int:
        """Discard up to ``n`` buffered samples (the reader fell behind); returns how many."""
        if self.read_pos is None or self.write_end is None:
            return 0
        take = max(0, min(n, self.write_end - self.read_pos))
        self._advance_to(self.read_pos + take)
        self.dropped_samples += take
        return take

    def _advance_to(self, position: int) -> None:
        assert self.read_pos is not None
        if position <= self.read_pos:
            return
        cleared = min(position - self.read_pos, self.capacity)
        index = np.arange(self.read_pos, self.read_pos + cleared) % self.capacity
        self._ring[:, index] = 0.0
        self.read_pos = position


# --- media conversion (sans-I/O) ------------------------------------------------------------------

_SCALE = {"s16": 1 / 32768.0, "s32": 1 / 2147483648.0, "flt": 1.0, "dbl": 1.0}


def frame_to_mono(frame: AudioFrame) -> np.ndarray:
    """A decoded audio frame (packed or planar, any channel count) -> mono float32 in [-1, 1]."""
    name = frame.format.name.rstrip("p")
    if name not in _SCALE:
        raise UnsupportedAudio(f"unsupported decoded sample format {frame.format.name!r}",
                               error_code="unsupported_encoding")
    channels = len(frame.layout.channels)
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data.reshape(channels, -1)
    else:
        data = data.reshape(-1, channels).T
    mono = data.astype(np.float32).mean(axis=0) if channels > 1 else data[0].astype(np.float32)
    return mono * np.float32(_SCALE[name])


def mono_to_frame(samples: np.ndarray, sample_rate_hz: int, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(float_to_s16(samples).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate_hz
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, sample_rate_hz)
    return frame


# --- aiortc glue ----------------------------------------------------------------------------------


class SlotTrack(MediaStreamTrack):
    """One outgoing speaker track. The session's pacer pushes a frame every tick once the slot has a
    speaker; until then ``recv`` waits and nothing is sent."""

    kind = "audio"

    def __init__(self, slot: int, sample_rate_hz: int, max_queued_frames: int) -> None:
        super().__init__()
        self.slot = slot
        self.sample_rate_hz = sample_rate_hz
        self._frames: deque[np.ndarray] = deque(maxlen=max_queued_frames)
        self._ready = asyncio.Event()
        self._pts = 0
        self.dropped_frames = 0

    def push(self, samples: np.ndarray) -> None:
        if len(self._frames) == self._frames.maxlen:
            self.dropped_frames += 1  # the sender is not reading (not connected yet): oldest goes
        self._frames.append(samples)
        self._ready.set()

    async def recv(self) -> AudioFrame:
        while not self._frames:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        if self.readyState != "live":
            raise MediaStreamError
        samples = self._frames.popleft()
        frame = mono_to_frame(samples, self.sample_rate_hz, self._pts)
        self._pts += samples.size
        return frame

    def stop(self) -> None:
        super().stop()
        self._ready.set()


class DataChannelEvents:
    """The session's JSON events on the client's data channel: held until it opens (bounded), then
    sent in order; dropped (and counted) while the channel has too much unsent."""

    def __init__(self, max_held: int, max_buffered_bytes: int) -> None:
        self.channel: RTCDataChannel | None = None
        self._held: deque[str] = deque(maxlen=max_held)
        self.max_buffered_bytes = max_buffered_bytes
        self.dropped = 0

    def attach(self, channel: RTCDataChannel, first: str) -> None:
        self.channel = channel
        self._send(first)
        while self._held:
            self._send(self._held.popleft())

    def send(self, text: str) -> None:
        if self.channel is None:
            if len(self._held) == self._held.maxlen:
                self.dropped += 1
            self._held.append(text)
        else:
            self._send(text)

    def _send(self, text: str) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            self.dropped += 1
            return
        if channel.bufferedAmount > self.max_buffered_bytes:
            self.dropped += 1
            return
        channel.send(text)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) until what was sent has left, so that a last ``done`` reaches the client."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while (self.channel is not None and self.channel.readyState == "open" and self.channel.bufferedAmount > 0
               and loop.time() < deadline):
            await asyncio.sleep(0.02)


class WebRtcOutbox:
    """The session's transport sink (:class:`~rtsep.driver.TransportSink`) for WebRTC: events to the data channel,
    each track's audio (float32 arrays) to the playout, and from there to the track's slot."""

    def __init__(self, events: DataChannelEvents, slots: SlotMap, playout: Playout) -> None:
        self.events = events
        self.slots = slots
        self.playout = playout

    async def send_message(self, message: Any) -> None:
        if isinstance(message, TrackAnnouncement):
            self._slot_of(message.index, message.speaker)
        self.events.send(encode_message(message))

    async def send_audio(self, audio: AudioOut) -> None:
        slot = self._slot_of(audio.index, audio.track)
        if slot is not None:
            self.playout.write(slot, audio.start_sample, audio.samples)

    def _slot_of(self, index: int, speaker: str) -> int | None:
        slot, new = self.slots.lookup(index)
        if new:
            mid = self.slots.mids[slot] if slot is not None else None
            self.events.send(encode_message(SlotAssignment(slot, mid, speaker, index)))
        return slot


_END = object()


class WebRtcSession:
    """One client's peer connection and session pipeline, from the answer to the end."""

    def __init__(self, gateway: WebRtcGateway, pc: RTCPeerConnection, stream: StreamSession,
                 mic: RTCRtpTransceiver, slot_tracks: list[SlotTrack], slots: SlotMap, playout: Playout,
                 events: DataChannelEvents) -> None:
        self.gateway = gateway
        self.config = gateway.config
        self.pc = pc
        self.stream = stream
        self.mic = mic
        self.slot_tracks = slot_tracks
        self.slots = slots
        self.playout = playout
        self.events = events
        self.pipeline: SessionDriver | None = None
        self.token = ""
        self._steps: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._feeder: asyncio.Task | None = None
        self._end_task: asyncio.Task | None = None
        self.ended = asyncio.Event()
        self.outcome: str | None = None
        self.discarded_input_samples = 0
        self.frames_received = 0
        self.last_frame_at: float | None = None
        self.guard: RealtimeGuard | None = None

    @property
    def session_id(self) -> str:
        return self.pipeline.session_id if self.pipeline else "-"

    def attach(self, pipeline: SessionDriver, token: str) -> None:
        self.pipeline = pipeline
        self.token = token

        @self.pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if self.events.channel is not None:
                channel.close()  # one event channel per session
                return
            channel.on("message", self._on_channel_message)
            self.events.attach(channel, encode_message(self._ready()))

        @self.pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.end("client_gone")

    def _ready(self) -> Ready:
        assert self.pipeline is not None
        manager = self.gateway.manager
        diarization = manager.config.diarization
        return Ready(self.pipeline.session_id, self.token, diarization.sample_rate_hz, self.pipeline.output_encoding,
                     manager.max_message_bytes, self.pipeline.max_speakers, diarization.step_s,
                     separator=manager.config.separator)

    def start(self) -> None:
        self._feeder = asyncio.create_task(self._feed(), name=f"rtsep-webrtc-feed-{self.session_id}")
        self._tasks = [
            asyncio.create_task(self._read_mic(), name=f"rtsep-webrtc-mic-{self.session_id}"),
            asyncio.create_task(self._pace(), name=f"rtsep-webrtc-pace-{self.session_id}"),
            asyncio.create_task(self._watch(), name=f"rtsep-webrtc-watch-{self.session_id}"),
            asyncio.create_task(self._await_end_request(), name=f"rtsep-webrtc-end-{self.session_id}"),
        ]

    # --- input ---

    async def _read_mic(self) -> None:
        track = self.mic.receiver.track
        try:
            while True:
                frame = await track.recv()
                self._accept(frame)
        except MediaStreamError:
            self.end("client_gone")
        except RtsepError as exc:
            self.end(exc.error_code, exc)
        except Exception as exc:  # one session's failure must not reach the server
            log.exception("session %s: microphone track failed", self.session_id)
            self.end("internal_error", RtsepError(f"internal error: {exc}"))

    def _accept(self, frame: AudioFrame) -> None:
        """Called for every frame, so that the track never queues up; the audio is used while streaming."""
        self.frames_received += 1
        now = asyncio.get_running_loop().time()
        self.last_frame_at = now
        if self.outcome is not None or self.stream.phase is not Phase.STREAMING:
            return
        assert self.stream.start is not None
        if frame.sample_rate != self.stream.start.sample_rate:
            raise UnsupportedAudio(f"the microphone track arrives at {frame.sample_rate} Hz, not at the "
                                   f"negotiated {self.stream.start.sample_rate} Hz", error_code="unsupported_rate")
        # always through the stream session, so that positions follow the audio received; when the steps queue
        # up (the session waits for inference), the new ones are shed: a marked gap, counted (see the driver)
        shed = self._steps.qsize() >= self.config.max_pending_steps
        if shed and not self.discarded_input_samples:
            log.warning("session %s: inference is behind; shedding incoming audio (marked gaps)", self.session_id)
        if shed:
            self.discarded_input_samples += frame.samples
        self._queue_steps(self.stream.receive_samples(frame_to_mono(frame)), shed)
        if self.guard is None:
            self.guard = RealtimeGuard(self.gateway.manager.limits.rate, now)
        self.guard.check(self.stream.input_s, now)  # RTP can be sent faster than real time, too

    def _queue_steps(self, events: list, shed: bool = False) -> None:
        for event in events:
            if isinstance(event, ChunkReady):
                self._steps.put_nowait((event, shed))

    async def _feed(self) -> None:
        """The only caller of ``pipeline.feed``: steps in order until the end marker."""
        assert self.pipeline is not None
        try:
            while True:
                item = await self._steps.get()
                if item is _END:
                    return
                step, shed = item
                await self.pipeline.feed(step, shed=shed)
        except RtsepError as exc:  # the pipeline failed; it has told the client already
            self.end(exc.error_code, exc)

    def _on_channel_message(self, message: str | bytes) -> None:
        try:
            if not isinstance(message, str):
                raise ProtocolViolation("binary data channel messages are not part of the protocol; audio "
                                        "goes in the microphone track", error_code="unexpected_binary")
            events = self.stream.receive_text(message)
            self._queue_steps(events)
            if any(isinstance(e, StopRequested) for e in events):
                self.end("completed", clean=True)
        except RtsepError as exc:
            self.end(exc.error_code, exc)

    # --- output ---

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        rate = self.playout_rate
        frame_samples = rate * self.config.frame_ms // 1000
        period = frame_samples / rate
        next_tick = loop.time()
        while True:
            next_tick += period
            delay = next_tick - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -5 * period:  # the loop stalled: drop what should have played meanwhile
                missed = int(-delay / period)
                self.playout.skip(missed * frame_samples)
                next_tick += missed * period
            assigned = self.slots.assigned
            if not assigned:
                continue
            frames = self.playout.read(frame_samples)
            for slot in assigned.values():
                self.slot_tracks[slot].push(frames[slot])

    @property
    def playout_rate(self) -> int:
        return self.gateway.manager.config.diarization.sample_rate_hz

    async def _watch(self) -> None:
        """No connection within ``connect_timeout_s``, or no microphone audio for the idle timeout: the end."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.config.connect_timeout_s)
        if self.pc.connectionState != "connected" and self.outcome is None:
            log.info("session %s: no connection within %.1f s", self.session_id, self.config.connect_timeout_s)
            self.end("connect_timeout")
            return
        idle_s = self.gateway.manager.limits.idle_timeout_s
        connected_at = loop.time()
        while self.outcome is None:
            since = max(connected_at, self.last_frame_at or connected_at)
            if loop.time() - since > idle_s:
                self.end("idle_timeout", IdleTimeout(f"no microphone audio for {idle_s:g} s"))
                return
            await asyncio.sleep(min(1.0, idle_s / 4))

    async def _await_end_request(self) -> None:
        """The server asks the session to end (drain: flushed, ``done``; deletion: at once)."""
        assert self.pipeline is not None
        await self.pipeline.end_requested.wait()
        reason = self.pipeline.end_reason
        assert reason is not None
        if self.pipeline.end_flush:
            self.end(reason.error_code, clean=True)
        else:
            self.end(reason.error_code, reason)

    # --- the end ---

    def end(self, outcome: str, error: RtsepError | None = None, *, clean: bool = False) -> None:
        """Ends the session once, whatever the reason: ``clean`` after a client ``stop``."""
        if self.outcome is not None:
            return
        self.outcome = outcome
        self._end_task = asyncio.create_task(self._shutdown(outcome, error, clean),
                                             name=f"rtsep-webrtc-end-{self.session_id}")

    async def _shutdown(self, outcome: str, error: RtsepError | None, clean: bool) -> None:
        pipeline = self.pipeline
        assert pipeline is not None and self._feeder is not None
        manager = self.gateway.manager
        try:
            if error is not None:
                log.info("session %s ended: %s", self.session_id, error.message)
                if pipeline.error is not error:  # the pipeline counts and reports its own failures
                    manager.metrics.errors.labels(error.error_code).inc()
                    self.events.send(encode_message(ErrorMessage(error.error_code, error.message, error.close_code)))
            # no more input: flush the resampler and chunker, let the feeder drain what is queued
            self._queue_steps(self.stream.finish())
            self._steps.put_nowait(_END)
            await self._feeder
            if pipeline.info.state == "live":
                if clean and pipeline.error is None:
                    try:
                        done = await pipeline.finish(outcome)
                        self.events.send(encode_message(done))
                    except RtsepError:
                        await pipeline.abort(outcome)
                else:
                    await pipeline.abort(outcome)
        except Exception:  # ending one session must not disturb the others
            log.exception("session %s: error while ending", self.session_id)
            if pipeline.info.state == "live":
                pipeline.transport = NullSink()
                with contextlib.suppress(Exception):
                    await pipeline.abort("internal_error")
        finally:
            manager.release(pipeline, outcome)
            await self.events.drain(timeout_s=2.0)
            await self.close_media()
            playout, rate = self.playout, self.playout_rate
            log.info("session %s: playout %.1f s, %d glitch(es), %.2f s dropped, %.2f s late; %.2f s of input "
                     "shed", self.session_id, playout.played_samples / rate, playout.glitches,
                     playout.dropped_samples / rate, playout.late_samples / rate,
                     self.discarded_input_samples / OPUS_RATE_HZ)
            self.gateway.sessions.discard(self)
            self.ended.set()

    async def close_media(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for track in self.slot_tracks:
            track.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5.0)


class WebRtcGateway:
    """Answers offers and keeps the live WebRTC sessions (closed at shutdown)."""

    def __init__(self, manager: SessionManager, config: WebRtcConfig) -> None:
        self.manager = manager
        self.config = config
        self.sessions: set[WebRtcSession] = set()
        self.closing = False

    @property
    def num_sources(self) -> int:
        """Separated-source tracks per session (0 without a separator): they take slots first."""
        separation = self.manager.separation
        return separation.spec.num_outputs if separation is not None else 0

    def client_config(self) -> dict[str, Any]:
        sources, speakers = self.num_sources, self.manager.config.max_speakers
        return {
            "ice_servers": [s.public() for s in self.config.ice_servers],
            "max_speakers": speakers,
            "sources": sources,
            "slots": sources + speakers,  # recvonly transceivers to offer so that every track gets one
            "separator": self.manager.config.separator,
            "sample_rate": self.manager.config.diarization.sample_rate_hz,
            "frame_ms": self.config.frame_ms,
        }

    async def answer(self, body: bytes, api_key: str | None = None) -> dict[str, Any]:
        self.manager.check_api_key(api_key)
        offer = parse_offer(body, self.config.max_offer_bytes)
        layout = describe_offer(offer.sdp)
        if self.closing:
            raise ServerDraining("the server is shutting down; retry later")
        self.manager.check_capacity()
        stream = StreamSession(self.manager.stream_config)
        start_text = json.dumps({"type": "start", "sample_rate": OPUS_RATE_HZ, "encoding": "pcm_f32le",
                                 "output_encoding": "pcm_f32le", **offer.options})
        (accepted,) = stream.receive_text(start_text)  # the options pass the protocol's own checks
        start = accepted.start
        if layout.slots:  # every track gets a slot: the separated sources first, then the speakers
            limit = min(start.max_speakers or self.manager.config.max_speakers,
                        max(1, layout.slots - self.num_sources))
            start = dataclasses.replace(start, max_speakers=limit)

        pc = RTCPeerConnection(rtc_configuration(self.config))
        opus = [c for c in RTCRtpReceiver.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]
        rate = self.manager.config.diarization.sample_rate_hz
        mic: RTCRtpTransceiver | None = None
        tracks: list[SlotTrack] = []
        slot_transceivers: list[RTCRtpTransceiver] = []
        # transceivers in m-line order, so that aiortc pairs each with its m-line
        for role in layout.roles:
            if role == "mic":
                mic = pc.addTransceiver("audio", direction="recvonly")
                mic.setCodecPreferences(opus)
            elif role == "slot":
                track = SlotTrack(len(tracks), rate, self.config.max_queued_frames)
                transceiver = pc.addTransceiver(track, direction="sendonly")
                transceiver.setCodecPreferences(opus)
                tracks.append(track)
                slot_transceivers.append(transceiver)
        assert mic is not None
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
        except Exception as exc:  # noqa: BLE001 - aiortc raises several kinds for offers it cannot take
            await pc.close()
            raise ProtocolViolation(f"the offer cannot be answered: {exc}", error_code="bad_offer") from None
        slots = SlotMap([t.mid or "" for t in slot_transceivers])
        playout = Playout(len(tracks), rate * self.config.max_buffer_ms // 1000,
                          rate * self.config.prebuffer_ms // 1000)
        events = DataChannelEvents(max_held=1000, max_buffered_bytes=self.config.max_channel_buffer_bytes)
        session = WebRtcSession(self, pc, stream, mic, tracks, slots, playout, events)
        try:
            pipeline, token = await self.manager.open(start, WebRtcOutbox(events, slots, playout), "webrtc")
        except RtsepError:
            await pc.close()
            raise
        session.attach(pipeline, token)
        self.sessions.add(session)
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:  # noqa: BLE001
            session.start()
            session.end("bad_offer")
            raise ProtocolViolation(f"the offer cannot be answered: {exc}", error_code="bad_offer") from None
        session.start()
        await pipeline.announce_sources()  # held until the data channel opens, like every event
        log.info("session %s: WebRTC, %d slot(s)", pipeline.session_id, len(tracks))
        local = pc.localDescription
        return {
            "sdp": local.sdp,
            "type": local.type,
            "session_id": pipeline.session_id,
            "token": token,
            "slots": [{"slot": i, "mid": mid} for i, mid in enumerate(slots.mids)],
            "max_speakers": pipeline.max_speakers,
            "sources": self.num_sources,
            "sample_rate": rate,
            "step_s": self.manager.config.diarization.step_s,
        }

    async def close(self) -> None:
        """Server shutdown: end every session (keeping what it produced) and close its connection."""
        self.closing = True
        sessions = list(self.sessions)
        for session in sessions:
            session.end(ServerDraining.error_code, clean=True)
        if sessions:
            await asyncio.wait([asyncio.create_task(s.ended.wait()) for s in sessions], timeout=10)


OFFER_SCHEMA = {
    "type": "object",
    "required": ["sdp", "type"],
    "properties": {
        "sdp": {"type": "string", "description": "the client's SDP offer (ICE candidates gathered)"},
        "type": {"type": "string", "enum": ["offer"]},
        "max_speakers": {"type": "integer", "minimum": 1},
        "client": {"type": "string"},
    },
    "additionalProperties": False,
}


def api_key_of(request: Request) -> str | None:
    """The API key a client presented: Authorization: Bearer, X-API-Key, or ?api_key= (as for WebSocket)."""
    scheme, _, value = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return request.headers.get("x-api-key") or request.query_params.get("api_key")


def add_webrtc_routes(app: FastAPI, manager: SessionManager, config: WebRtcConfig) -> WebRtcGateway:
    gateway = WebRtcGateway(manager, config)

    @app.get("/v1/webrtc/config", tags=["webrtc"])
    async def webrtc_config() -> dict:
        """What a WebRTC client needs before its offer: ICE servers and the number of speaker slots."""
        return gateway.client_config()

    @app.post("/v1/webrtc/offer", tags=["webrtc"],
              openapi_extra={"requestBody": {"required": True,
                                             "content": {"application/json": {"schema": OFFER_SCHEMA}}}})
    async def webrtc_offer(request: Request) -> JSONResponse:
        """Start a session over WebRTC: the answer carries the session id, its token and the slots' mids."""
        body = await request.body()
        try:
            return JSONResponse(await gateway.answer(body, api_key_of(request)))
        except BadApiKey as exc:
            manager.metrics.errors.labels(exc.error_code).inc()
            return JSONResponse({"detail": exc.message, "code": exc.error_code}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        except (ServerBusy, ServerDraining) as exc:
            manager.metrics.errors.labels(exc.error_code).inc()
            return JSONResponse({"detail": exc.message, "code": exc.error_code}, 503, headers={"Retry-After": "5"})
        except ClientError as exc:
            manager.metrics.errors.labels(exc.error_code).inc()
            status = 413 if isinstance(exc, MessageTooBig) else 400
            return JSONResponse({"detail": exc.message, "code": exc.error_code}, status)

    app.state.webrtc = gateway
    return gateway
