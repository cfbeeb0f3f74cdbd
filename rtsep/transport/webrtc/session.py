"""One WebRTC session: the microphone track into the session's :class:`~rtsep.stream.session.StreamSession`,
the pipeline's output to the data channel (:class:`WebRtcOutbox`) and the playout, one pacer for the slots.

Incoming audio feeds the same stream session as the WebSocket path (one long-lived resampler per track), and
the track is always consumed: when inference falls behind by more than ``max_pending_steps``, the new steps are
shed: marked gaps (``gap`` events, counted in ``rtsep_dropped_frames_total{path="input"}``) at their own
positions, so that later audio keeps its timestamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from aiortc import RTCDataChannel, RTCPeerConnection, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame

from rtsep.driver import NullSink, SessionDriver
from rtsep.errors import IdleTimeout, ProtocolViolation, RtsepError, UnsupportedAudio
from rtsep.protocol.messages import ErrorMessage, Ready, TrackAnnouncement, encode_message
from rtsep.stream.core import AudioOut
from rtsep.stream.limits import RealtimeGuard
from rtsep.stream.session import ChunkReady, Phase, SamplesReady, StopRequested, StreamSession
from rtsep.transport.webrtc.events import DataChannelEvents
from rtsep.transport.webrtc.media import SlotTrack, frame_to_mono
from rtsep.transport.webrtc.playout import Playout, SlotAssignment, SlotMap
from rtsep.transport.webrtc.signalling import OPUS_RATE_HZ

if TYPE_CHECKING:
    from rtsep.transport.webrtc.gateway import WebRtcGateway

log = logging.getLogger(__name__)


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
        self._queued_steps = 0  # the steps (ChunkReady) in it: the input as it arrives (SamplesReady) is not counted
        self._tasks: list[asyncio.Task] = []
        self._feeder: asyncio.Task | None = None
        self._end_task: asyncio.Task | None = None
        self.ended = asyncio.Event()
        self.outcome: str | None = None
        self.discarded_input_samples = 0
        self.frames_received = 0
        self.last_frame_at: float | None = None
        self.guard: RealtimeGuard | None = None
        # the bound counts steps of the diarizer; with --denoise the stream session cuts shorter blocks
        steps_per_block = max(1, gateway.manager.config.diarization.step_samples // stream.config.step_samples)
        self._max_pending_blocks = self.config.max_pending_steps * steps_per_block

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
                     separator=manager.config.separator.name)

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
        shed = self._queued_steps >= self._max_pending_blocks
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
            if isinstance(event, (SamplesReady, ChunkReady)):  # (the input as it arrives, for the separator)
                self._queued_steps += isinstance(event, ChunkReady)
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
                self._queued_steps -= isinstance(step, ChunkReady)
                if isinstance(step, SamplesReady):
                    await self.pipeline.feed_samples(step, shed=shed)
                else:
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
