"""One session's pipeline: model-rate steps -> batched inference -> online diarization -> events,
per-speaker audio and the store. Transports (WebSocket, WebRTC, file) feed it and deliver its output.

Steps are submitted to the shared runtime as they arrive and their results are consumed strictly in
order by one task per session. The number of steps awaiting inference is bounded per session; the
overflow policy says whether the session then waits (backpressure to the client) or drops the step.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rtsep.audio import AudioChunk
from rtsep.diarize.offline import final_segments
from rtsep.diarize.online import (
    DiarizationConfig,
    FrameLabels,
    NewSpeaker,
    OnlineDiarizer,
    SegmentClosed,
    SpeakerStarted,
    SpeakerStopped,
    StepAnalysis,
    speaker_name,
)
from rtsep.diarize.timeline import annotation_from_segments, to_json
from rtsep.diarize.vad import VadState
from rtsep.errors import ConfigError, RtsepError
from rtsep.metrics import Metrics
from rtsep.protocol.frames import encode_audio_frame
from rtsep.protocol.messages import (
    Done,
    ErrorMessage,
    Segment,
    SpeakerActivity,
    Stats,
    TimelineMessage,
    TrackAnnouncement,
)
from rtsep.runtime.diarization import DiarizationRuntime, DiarizeRequest, RuntimeConfig
from rtsep.runtime.separation import SeparateRequest, SeparationRuntime
from rtsep.separate.adapt import AdaptationSchedule, AdaptConfig, AdaptReport
from rtsep.separate.base import create_separator
from rtsep.store.base import SessionInfo, SessionStore
from rtsep.stream.chunker import Chunker
from rtsep.stream.history import SampleHistory
from rtsep.stream.resample import StreamResampler
from rtsep.stream.routing import route_by_labels
from rtsep.stream.session import ChunkReady, StreamConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineConfig:
    diarization: DiarizationConfig = field(default_factory=DiarizationConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    max_speakers: int = 8
    stats_interval_s: float = 2.0
    # a registered separator (rtsep.separate); the shipped causal Conv-TasNet by default. None ("none"): no
    # separation, each speaker's track carries the input while that speaker talks
    separator: str | None = "convtasnet"
    separator_checkpoint: str | None = None  # convtasnet: a checkpoint file (default: the shipped one)
    separator_dir: str | None = None  # sepformer: SpeechBrain's on-disk model directory
    # convtasnet: its layer norms pool the last ~this many seconds rather than the whole session (0: all of it, as
    # in training on 2-3 s segments; bench/RESULTS.md: +0.13 dB through `rtsep process`, 12 of 15 meetings up)
    separator_norm_memory_s: float = 16.0
    # convtasnet: fine-tune a copy on the session's own single-talker turns (rtsep.separate.adapt); 0: never.
    # `rtsep process` adapts once on the whole file, then separates it; a live session adapts in the background
    # once two talkers have `adapt_min_speech_s` of single-talker speech each (again as that grows, 3 rounds)
    # Optimiser steps and remixes per step; None: by device and use (adapt_recipe). The gain grows with steps x
    # batch (bench/RESULTS.md): `rtsep process` on the CPU, 1000 x 4 compiled steps (~5 min of one core) reach
    # 3.80 dB on the remix meetings against 2.79 with 300 x 4; live sessions (uncompiled) keep 300 x 4; on a GPU
    # 600 x 8 takes ~70 s
    adapt_steps: int | None = None
    adapt_batch_size: int | None = None
    # `rtsep process` on the CPU: torch threads while it adapts (nothing else runs then); 0: one per core
    adapt_threads: int = 0
    # `rtsep process`: compile the adaptation's training step (torch.compile; plain steps when compiling fails):
    # ~2.4x fewer CPU seconds per step on one core; the first compile on a machine takes ~95 s, later ones reuse
    # inductor's on-disk cache. Live sessions adapt uncompiled
    adapt_compile: bool = True
    adapt_live: bool = True
    adapt_min_speech_s: float = 4.0
    # adapt only on turn windows whose speaker embedding has at least this cosine similarity to their talker's
    # (rtsep.separate.purity: overlaps labelled as one talker's turn are left out); 0: on all of the turns
    adapt_min_similarity: float = 0.82
    # and only on windows where at least this share of the voiced frames sound like one voice (periodic at one
    # pitch: rtsep.separate.periodicity), which catches overlaps an embedding takes for the louder talker; 0: off,
    # the default: at 0.65 it also drops 13 % of the clean speech, a net loss through `rtsep process` (bench/RESULTS.md)
    adapt_min_periodicity: float = 0.0
    # `rtsep process` with adaptation: separate the file this many times, at playback speeds spread over the
    # adaptation's speed perturbation (+-8 %), and average (rtsep.separate.ensemble); 1: one pass. Each member is
    # one more causal pass over the file (bench/RESULTS.md, 1000 adaptation steps: 1 / 5 / 10 / 20 members 3.27 /
    # 3.80 / 3.90 / 3.90 dB on the 15 remix meetings; 10 raise 12 of them over 5, at half the cost of 20)
    offline_ensemble: int = 10
    # `rtsep process` with adaptation: re-estimate the (averaged) sources from the file by a Wiener filter with
    # their power spectra (rtsep.separate.postfilter; 32 ms window), when the adaptation ran. On the 15 remix meetings
    # 3.90 -> 4.63 dB through `rtsep process` (bench/RESULTS.md). Not causal: live tracks do not use it
    offline_wiener: bool = True

    def __post_init__(self) -> None:
        steps, batch = self.adapt_recipe()
        if steps < 0 or batch < 1 or self.adapt_threads < 0 or not self.separator_norm_memory_s >= 0:
            raise ConfigError("adapt_steps, adapt_threads and separator_norm_memory_s must be >= 0 and "
                              "adapt_batch_size >= 1")
        if self.offline_ensemble < 1:
            raise ConfigError("offline_ensemble must be >= 1")
        if not 0.0 <= self.adapt_min_periodicity <= 1.0:
            raise ConfigError("adapt_min_periodicity must be within [0, 1]")
        if isinstance(self.separator, str) and self.separator.strip().lower() in ("", "none", "off"):
            object.__setattr__(self, "separator", None)  # `--separator none`: route the input by speaker

    def adapt_recipe(self, live: bool = False) -> tuple[int, int]:
        """(steps, batch size) of the in-session adaptation: as set, else 600 x 8 on a GPU; on the CPU 1000 x 4 for
        `rtsep process` (compiled steps) and 300 x 4 for live sessions (uncompiled, beside the session's inference)."""
        gpu = str(self.runtime.device).startswith("cuda")
        steps = self.adapt_steps if self.adapt_steps is not None else (600 if gpu else 300 if live else 1000)
        batch = self.adapt_batch_size if self.adapt_batch_size is not None else (8 if gpu else 4)
        return steps, batch

    def purity_config(self) -> Any:
        """The adaptation material's purity filter settings (rtsep.separate.purity.PurityConfig), None when both of
        its checks are off."""
        if self.adapt_min_similarity <= 0 and self.adapt_min_periodicity <= 0:
            return None
        from rtsep.separate.purity import PurityConfig

        return PurityConfig(min_similarity=self.adapt_min_similarity, min_periodic_share=self.adapt_min_periodicity)

    def separator_options(self) -> dict[str, Any]:
        if self.separator == "sepformer":
            return {"separator_dir": self.separator_dir}
        if self.separator == "convtasnet":
            return {"checkpoint": self.separator_checkpoint, "norm_memory_s": self.separator_norm_memory_s}
        return {}

    def stream_config(self, max_message_bytes: int) -> StreamConfig:
        return StreamConfig(
            model_sample_rate_hz=self.diarization.sample_rate_hz,
            step_samples=self.diarization.step_samples,
            max_message_bytes=max_message_bytes,
        )


def build_separation(config: PipelineConfig) -> SeparationRuntime | None:
    """The configured separator, loaded once for every session (None: tracks are routed by speaker)."""
    if config.separator is None:
        return None
    separator = create_separator(config.separator, **config.separator_options())
    return SeparationRuntime(config.runtime, separator)


class Outbox(Protocol):
    """Where a session's output goes (the transport)."""

    async def send_message(self, message: Any) -> None: ...

    async def send_audio(self, frame: bytes) -> None: ...


class NullOutbox:
    """For sessions whose client is gone: output is still stored, nothing is sent."""

    async def send_message(self, message: Any) -> None:
        return None

    async def send_audio(self, frame: bytes) -> None:
        return None


SOURCE_TRACK_BASE = 0x8000  # audio frames of separated source k carry track index 0x8000 + k


def source_name(index: int) -> str:
    return f"source_{index}"


def track_url(session_id: str, track: str) -> str:
    return f"/v1/sessions/{session_id}/tracks/{track}.wav"


def timeline_url(session_id: str) -> str:
    return f"/v1/sessions/{session_id}/timeline"


_STOP = object()


class SeparationPath:
    """A session's separated sources: model-rate steps -> separator rate -> batched separator -> back to
    the model rate -> ``source_<k>`` tracks (stored and sent). Results are consumed in step order; steps
    awaiting the separator are bounded (the session waits for room)."""

    def __init__(self, pipeline: SessionPipeline, runtime: SeparationRuntime, max_in_flight: int) -> None:
        self.pipeline = pipeline
        self.runtime = runtime
        spec = runtime.spec
        rate = pipeline.rate
        self._down = StreamResampler(rate, spec.sample_rate_hz)
        self._up = [StreamResampler(spec.sample_rate_hz, rate) for _ in range(spec.num_outputs)]
        self._chunker = Chunker(spec.step_samples)
        self._state = runtime.new_state()
        self._written = [0] * spec.num_outputs  # model-rate samples written per source
        self._queue: asyncio.Queue = asyncio.Queue()
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._step_index = 0
        self._consumer = asyncio.create_task(self._consume())
        config = pipeline.config
        self.adaptation: AdaptationSchedule | None = None
        steps, batch = config.adapt_recipe(live=True)
        if config.adapt_live and steps > 0 and runtime.supports_adaptation:
            # live sessions adapt uncompiled: a compile beside the session's inference costs ~95 s of a core the
            # first time, and cannot be stopped when the session or the server ends
            adapt = AdaptConfig(steps=steps, batch_size=batch, min_speech_s=config.adapt_min_speech_s, compile=False)
            # the schedule keeps the input at the pipeline rate: the purity filter's speaker encoder needs 16 kHz
            self.adaptation = AdaptationSchedule(rate, adapt, min_speech_s=config.adapt_min_speech_s)
        self.adaptations: list[AdaptReport] = []
        self._ended = False  # a running adaptation stops when the session ends

    @property
    def num_sources(self) -> int:
        return self.runtime.spec.num_outputs

    async def feed(self, samples: np.ndarray) -> None:
        down = self._down.process(samples)
        if self.adaptation is not None:
            self.adaptation.push(samples)
        for start, chunk in self._chunker.push(down):
            await self._submit(start, chunk)

    def segments_changed(self, closed: list[tuple[int, int, int]]) -> None:
        """The diarizer closed a segment: start a background adaptation if the schedule says it is due."""
        if self.adaptation is None or not self.adaptation.open:
            return
        rate = self.pipeline.rate
        material = self.adaptation.due(
            [{"speaker": speaker_name(k), "start_s": a / rate, "end_s": b / rate} for a, b, k in closed])
        if material is None:
            return
        schedule, sid = self.adaptation, self.pipeline.session_id
        log.info("session %s: adapting the separator on %s", sid,
                 ", ".join(f"{spk} {sum(b - a for a, b in items):.1f} s" for spk, items in material.spans.items()))
        purity_config, model_rate = self.pipeline.config.purity_config(), self.runtime.spec.sample_rate_hz

        def speech() -> dict[str, np.ndarray]:  # in the adaptation thread
            purity = self.runtime.purity_filter(purity_config) if purity_config is not None else None
            return material.speech(model_rate, purity)

        def finished(future) -> None:  # in the adaptation thread
            schedule.done()
            if future.cancelled():
                return
            if future.exception() is not None:
                log.error("session %s: separator adaptation failed: %s", sid, future.exception())
                return
            report = future.result()
            if report.skipped is None:
                self.adaptations.append(report)
                self.pipeline.metrics.separator_adaptations.inc()
            log.info("session %s: separator adaptation: %s", sid, report.as_dict())

        self.runtime.adapt(self._state, speech, schedule.config, stop=lambda: self._ended).add_done_callback(finished)

    async def finish(self) -> None:
        self._ended = True
        for start, chunk in self._chunker.push(self._down.flush()):
            await self._submit(start, chunk)
        last = self._chunker.flush()
        if last is not None:
            await self._submit(last[0], last[1])
        self._queue.put_nowait(_STOP)
        await self._consumer
        for k, up in enumerate(self._up):
            await self._write(k, up.flush())

    async def _submit(self, start: int, chunk: np.ndarray) -> None:
        await self._in_flight.acquire()
        request = SeparateRequest(self._step_index, start, chunk, self._state)
        self._step_index += 1
        self._queue.put_nowait(asyncio.wrap_future(self.runtime.submit(self.pipeline.session_id, request)))

    async def _consume(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _STOP:
                return
            try:
                step = await item
            finally:
                self._in_flight.release()
            skip = max(0, -step.start_sample)  # the separator's look-ahead delays its first outputs
            for k, source in enumerate(step.sources):
                await self._write(k, self._up[k].process(np.ascontiguousarray(source[skip:], np.float32)))

    async def _write(self, k: int, samples: np.ndarray) -> None:
        if not samples.size:
            return
        p = self.pipeline
        start = self._written[k]
        self._written[k] += samples.size
        p.store.write_track(p.session_id, source_name(k), start, samples)
        if p.send_audio:
            await p.outbox.send_audio(
                encode_audio_frame(SOURCE_TRACK_BASE + k, start, samples, p.rate, p.output_encoding))
        p.metrics.audio_out_seconds.inc(samples.size / p.rate)


class SessionPipeline:
    def __init__(
        self,
        *,
        info: SessionInfo,
        config: PipelineConfig,
        runtime: DiarizationRuntime,
        store: SessionStore,
        metrics: Metrics,
        outbox: Outbox,
        max_speakers: int | None = None,
        send_audio: bool = True,
        output_encoding: str = "pcm_s16le",
        clock: Callable[[], float] = time.monotonic,
        separation: SeparationRuntime | None = None,
    ) -> None:
        self.info = info
        self.config = config
        self.runtime = runtime
        self.store = store
        self.metrics = metrics
        self.outbox: Outbox = outbox
        self.send_audio = send_audio
        self.output_encoding = output_encoding
        self.clock = clock
        diar = config.diarization
        self.max_speakers = min(max_speakers or config.max_speakers, config.max_speakers)
        self.diarizer = OnlineDiarizer(diar, self.max_speakers)
        self._history = SampleHistory(diar.embedding_window_samples)
        self._vad_state = VadState.initial()
        # results in step order; the number awaiting inference is bounded by the semaphore
        self._queue: asyncio.Queue = asyncio.Queue()
        self._in_flight = asyncio.Semaphore(config.runtime.max_in_flight_steps)
        self._chunks: dict[int, tuple[np.ndarray, float]] = {}
        self._step_index = 0
        self.processed_samples = 0
        self.dropped_steps = 0
        self._next_stats_sample = int(config.stats_interval_s * diar.sample_rate_hz)
        self._closed_segments: list[tuple[int, int, int]] = []
        self.error: RtsepError | None = None
        # set by the server (drain, deletion): the transport ends the session with ``end_reason``
        self.end_requested = asyncio.Event()
        self.end_reason: RtsepError | None = None
        self.end_flush = True
        self._consumer = asyncio.create_task(self._consume(), name=f"rtsep-session-{info.session_id}")
        self.separation = (
            SeparationPath(self, separation, config.runtime.max_in_flight_steps) if separation is not None else None
        )

    @property
    def session_id(self) -> str:
        return self.info.session_id

    @property
    def rate(self) -> int:
        return self.config.diarization.sample_rate_hz

    async def announce_sources(self) -> None:
        """Tell the client about the separated-source tracks (after ``ready``)."""
        if self.separation is None:
            return
        for k in range(self.separation.num_sources):
            name = source_name(k)
            await self.outbox.send_message(
                TrackAnnouncement(name, SOURCE_TRACK_BASE + k, track_url(self.session_id, name), kind="source"))

    def request_end(self, reason: RtsepError, flush: bool) -> None:
        """Ask the transport to end this session: ``flush`` finishes it normally (final timeline, done)."""
        if not self.end_requested.is_set():
            self.end_reason, self.end_flush = reason, flush
            self.end_requested.set()

    # --- input ---

    async def feed(self, event: ChunkReady) -> None:
        """Submit one model-rate step; returns once it is queued (or dropped, per the overflow policy)."""
        self._raise_if_failed()
        chunk: AudioChunk = event.chunk
        index = self._step_index
        self._step_index += 1
        window = self._history.push(chunk.samples)
        arrived = self.clock()
        self.metrics.audio_in_seconds.inc(event.valid_samples / self.rate)
        self._chunks[index] = (chunk.samples, arrived)
        if self.separation is not None:
            await self.separation.feed(chunk.samples[: event.valid_samples])
        if self._in_flight.locked() and self.config.runtime.overflow == "drop":
            self.dropped_steps += 1
            self.metrics.dropped_frames.inc()
            silent = StepAnalysis(index, chunk.start_sample, event.valid_samples,
                                  np.zeros(self.config.diarization.frames_per_step, np.float32), None)
            future: asyncio.Future = asyncio.get_running_loop().create_future()
            future.set_result(silent)
            self._queue.put_nowait((future, False))
        else:
            await self._in_flight.acquire()  # backpressure: wait for room
            self._raise_if_failed()
            request = DiarizeRequest(index, chunk.start_sample, event.valid_samples, chunk.samples, window,
                                     self._vad_state)
            self._queue.put_nowait((asyncio.wrap_future(self.runtime.submit(self.session_id, request)), True))
        self.metrics.queue_depth.set(self.runtime.queue_depth)

    async def finish(self, outcome: str = "completed") -> Done:
        """No more input: drain, close the turns, compute and store the final timeline."""
        self._queue.put_nowait(_STOP)
        await self._consumer
        self._raise_if_failed()
        if self.separation is not None:
            await self.separation.finish()
        await self._handle(self.diarizer.finish())
        final = await asyncio.to_thread(self.final_timeline)
        self.store.write_final(self.session_id, final)
        await self.outbox.send_message(TimelineMessage("final", final["segments"]))
        self._close_info("done", outcome)
        return Done(self.session_id, round(self.info.duration_s, 3), list(self.info.speakers),
                    timeline_url(self.session_id))

    async def abort(self, outcome: str) -> None:
        """The session ends abnormally (client gone, error): keep everything produced, send nothing more."""
        self.outbox = NullOutbox()
        if not self._consumer.done():
            self._queue.put_nowait(_STOP)
            try:
                await self._consumer
            except Exception:  # noqa: BLE001 - already recorded in self.error
                pass
        try:
            if self.error is None and self.separation is not None:
                await self.separation.finish()
            if self.error is None:
                await self._handle(self.diarizer.finish())
                self.store.write_final(self.session_id, await asyncio.to_thread(self.final_timeline))
        except RtsepError as exc:
            log.warning("session %s: could not store its final timeline: %s", self.session_id, exc)
        clean = self.error is None and outcome in ("completed", "client_gone", "server_shutting_down")
        self._close_info("done" if clean else "failed", outcome)

    def _close_info(self, state: str, outcome: str) -> None:
        self.info.state = state
        self.info.outcome = outcome
        self.info.ended_at = time.time()
        self.info.duration_s = self.processed_samples / self.rate
        try:
            self.store.update(self.info)
        except RtsepError as exc:  # e.g. disk full: the session's earlier state stays on disk
            log.error("session %s: could not store its end state: %s", self.session_id, exc)
        finally:
            self.store.close_session(self.session_id)

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    # --- timelines ---

    def live_timeline(self) -> dict[str, Any]:
        segments = [(s / self.rate, e / self.rate, speaker_name(k)) for s, e, k in self._closed_segments]
        return to_json(annotation_from_segments(segments, self.session_id), "live")

    def final_timeline(self) -> dict[str, Any]:
        """Re-cluster everything received so far (on the event loop, or in a thread once input has ended)."""
        return self._final_from(list(self.diarizer.records), self.diarizer.embedding_labels)

    async def final_timeline_now(self) -> dict[str, Any]:
        """The final timeline on demand while the session is live: snapshot here, re-cluster in a thread."""
        records, labels = list(self.diarizer.records), self.diarizer.embedding_labels
        return await asyncio.to_thread(self._final_from, records, labels)

    def _final_from(self, records: list, embedding_labels: dict[int, int]) -> dict[str, Any]:
        segments = final_segments(records, embedding_labels, self.config.diarization, self.max_speakers)
        return to_json(
            annotation_from_segments(
                [(s / self.rate, e / self.rate, speaker_name(k)) for s, e, k in segments], self.session_id
            ),
            "final",
        )

    # --- output ---

    async def _consume(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if item is _STOP:
                    return
                future, holds_slot = item
                try:
                    analysis: StepAnalysis = await future
                finally:
                    if holds_slot:
                        self._in_flight.release()
                self.processed_samples += analysis.valid_samples
                await self._handle(self.diarizer.push(analysis))
                await self._maybe_send_stats()
        except RtsepError as exc:
            log.error("session %s failed: %s", self.session_id, exc)
            await self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - one session's failure must not reach the server
            log.exception("session %s failed", self.session_id)
            await self._fail(RtsepError(f"internal error: {exc}"))

    async def _fail(self, exc: RtsepError) -> None:
        self.error = exc
        self.metrics.errors.labels(exc.error_code).inc()
        for _ in range(self.config.runtime.max_in_flight_steps):  # wake a feed() waiting for room: it raises
            self._in_flight.release()
        await self._send_error(exc)

    async def _send_error(self, exc: RtsepError) -> None:
        try:
            await self.outbox.send_message(ErrorMessage(exc.error_code, exc.message, exc.close_code))
        except Exception:  # noqa: BLE001 - the client may be gone already
            pass

    async def _handle(self, events: list) -> None:
        sid = self.session_id
        for event in events:
            if isinstance(event, FrameLabels):
                await self._route(event)
            elif isinstance(event, NewSpeaker):
                name = speaker_name(event.speaker)
                self.info.speakers.append(name)
                self.store.update(self.info)
                await self.outbox.send_message(TrackAnnouncement(name, event.speaker, track_url(sid, name)))
            elif isinstance(event, (SpeakerStarted, SpeakerStopped)):
                kind = "started" if isinstance(event, SpeakerStarted) else "stopped"
                await self.outbox.send_message(
                    SpeakerActivity(speaker_name(event.speaker), event.speaker, kind,
                                    round(event.sample / self.rate, 3), event.sample)
                )
            elif isinstance(event, SegmentClosed):
                self._closed_segments.append((event.start_sample, event.end_sample, event.speaker))
                if self.separation is not None:
                    self.separation.segments_changed(self._closed_segments)
                name = speaker_name(event.speaker)
                start_s, end_s = event.start_sample / self.rate, event.end_sample / self.rate
                self.store.append_live_segment(sid, name, start_s, end_s)
                await self.outbox.send_message(Segment(name, event.speaker, round(start_s, 3), round(end_s, 3)))

    async def _route(self, labels: FrameLabels) -> None:
        samples, arrived = self._chunks.pop(labels.step_index)
        runs = route_by_labels(samples, labels.start_sample, labels.labels,
                               self.config.diarization.frame_samples, labels.valid_samples)
        for run in runs:
            self.store.write_track(self.session_id, speaker_name(run.speaker), run.start_sample, run.samples)
            if self.send_audio:
                await self.outbox.send_audio(
                    encode_audio_frame(run.speaker, run.start_sample, run.samples, self.rate, self.output_encoding)
                )
            self.metrics.audio_out_seconds.inc(run.samples.size / self.rate)
        self.metrics.processing_latency_seconds.observe(self.clock() - arrived)

    async def _maybe_send_stats(self) -> None:
        if self.processed_samples < self._next_stats_sample:
            return
        self._next_stats_sample += int(self.config.stats_interval_s * self.rate)
        audio_in_s = (self._step_index * self.config.diarization.step_samples) / self.rate
        await self.outbox.send_message(
            Stats(round(audio_in_s, 3), round(self.processed_samples / self.rate, 3),
                  round(self.metrics.last_real_time_factor, 4), self.runtime.queue_depth, self.dropped_steps)
        )
