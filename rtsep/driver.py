"""The thin async driver of one session: connects its :class:`~rtsep.stream.core.SessionCore` to the runtimes and
to its three sinks.

- Steps go to the runtimes as the core says (:class:`DiarizeDue`, :class:`SeparateDue`); one task per path awaits
  the results strictly in submission order and hands them back to the core. A result that does not come within
  ``RuntimeConfig.result_timeout_s``, or a runtime that raises, fails the session (1011 ``internal_error``).
- With ``--denoise`` (a :class:`~rtsep.runtime.denoise.DenoiseRuntime`), the transport's steps are short blocks:
  each goes to the session's denoiser (off the event loop, in order), one task awaits the denoised samples in
  order, and :class:`~rtsep.stream.denoised.DenoisedSteps` cuts them into the core's steps at the input's
  positions. A failing denoiser fails its session (1011) like a failing runtime.
- The core's output goes to the transport (:class:`TransportSink`: typed messages and float32 audio; the
  WebSocket sink encodes frames, the WebRTC sink plays arrays), to the store through the
  :class:`~rtsep.store.writer.StoreWriter` (never on the event loop; a failed write fails the session with
  ``store_error``), and to the separation runtime (adaptation, whose outcome comes back with
  ``call_soon_threadsafe``).

Acknowledgements follow commits: a closed turn's ``segment`` message, the final ``timeline`` and a track's
``stored`` mark go to the client only once the writer has committed what they acknowledge
(:class:`~rtsep.stream.acks.Acknowledgements` holds them; a sender task sends them as they are released). Live
audio frames and speaker activity are not held: their latency matters, and a ``stored`` mark tells the client
how much of each track is kept.

Every decision (overflow, ordering, gaps, when to adapt, when the session is done, which acknowledgement may go)
is a sans-I/O core's; what is here only moves data and awaits.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Protocol

import numpy as np

from rtsep.diarize import pyannote_stream
from rtsep.diarize.offline import final_segments
from rtsep.diarize.online import OnlineDiarizer
from rtsep.diarize.overlap import detect_overlaps
from rtsep.diarize.timeline import annotation_from_segments, to_json
from rtsep.diarize.vad import VadState
from rtsep.errors import ConfigError, RtsepError
from rtsep.metrics import Metrics
from rtsep.pipeline import PipelineConfig
from rtsep.protocol.messages import (
    Done,
    ErrorMessage,
    Gap,
    Segment,
    SpeakerActivity,
    SpeakerNamed,
    Stats,
    Stored,
    TimelineMessage,
    TrackAnnouncement,
)
from rtsep.runtime.denoise import DenoiseRuntime
from rtsep.runtime.diarization import DiarizationRuntime, DiarizeRequest
from rtsep.runtime.pyannote import PyannoteDiarizationRuntime
from rtsep.runtime.separation import SeparateRequest, SeparationRuntime
from rtsep.separate.adapt import AdaptConfig, AdaptReport
from rtsep.store.base import SessionInfo, SessionStore
from rtsep.store.writer import StoreWriter
from rtsep.stream.acks import Acknowledgements, TrackMark
from rtsep.stream.adaptation import AdaptationMaterial, AdaptationSchedule
from rtsep.stream.attribution import attribute
from rtsep.stream.core import (
    AdaptationDue,
    AudioOut,
    CoreConfig,
    DiarizeDue,
    Event,
    Failed,
    FinalTimeline,
    FinalTimelineDue,
    Finished,
    InputAudio,
    SeparateDue,
    SeparatorLayout,
    SessionCore,
    SourcesEmbedDue,
    StatsDue,
    StepDropped,
    StepLatency,
    TrackAnnounced,
    TurnClosed,
    timeline_url,
    track_url,
)
from rtsep.stream.core import SpeakerActivity as SpeakerActivityEvent
from rtsep.stream.core import SpeakerNamed as SpeakerNamedEvent
from rtsep.stream.denoised import DenoisedSteps
from rtsep.stream.naming import VoiceMatcher, final_names
from rtsep.stream.render import INPUT_TRACK, FinalTrack, final_tracks, segment_spans
from rtsep.stream.session import ChunkReady, SamplesReady
from rtsep.stream.turns import source_name, speaker_name

log = logging.getLogger(__name__)


class TransportSink(Protocol):
    """Where a session's output goes to its client."""

    async def send_message(self, message: Any) -> None: ...

    async def send_audio(self, audio: AudioOut) -> None: ...


class NullSink:
    """For sessions whose client is gone (or never was: ``rtsep process``): output is still stored."""

    async def send_message(self, message: Any) -> None:
        return None

    async def send_audio(self, audio: AudioOut) -> None:
        return None


def build_core(session_id: str, config: PipelineConfig, max_speakers: int,
               separation: SeparationRuntime | None,
               diarization: DiarizationRuntime | PyannoteDiarizationRuntime | None = None,
               voices: dict[str, np.ndarray] | None = None) -> SessionCore:
    """A session's core with its own online diarizer (the backend's: ``diarization``, the runtime its steps go to)
    and, with an adaptable separator, its adaptation schedule; with ``voices`` (enrolled name -> unit embedding), a
    matcher that names its speakers (the embedded diarizer's: enrolled embeddings are in its encoder's space)."""
    diar = config.diarization
    window_samples = diar.embedding_window_samples
    if diar.backend == "pyannote":
        if not isinstance(diarization, PyannoteDiarizationRuntime):
            raise ConfigError("[diarization] backend pyannote needs the pyannote runtime (rtsep.compose)")
        diarizer: Any = diarization.new_diarizer(max_speakers)
        window_samples = diarization.window_samples  # the step's window is the segmentation model's buffer
    else:
        diarizer = OnlineDiarizer(diar, max_speakers)
    layout = None
    schedule = None
    if separation is not None:
        spec = separation.spec
        layout = SeparatorLayout(spec.sample_rate_hz, spec.step_samples, spec.num_outputs, spec.lookahead_samples)
        adapt = live_adapt_config(config)
        if adapt is not None and separation.supports_adaptation:
            # the schedule keeps the input at the session's rate: the purity filter's speaker encoder needs 16 kHz
            schedule = AdaptationSchedule(diar.sample_rate_hz, adapt, min_speech_s=config.adaptation.min_speech_s)
    attribution = config.attribution
    # live attribution compares the sources with the online centroids: the embedded diarizer's (the encoder the
    # runtime embeds the sources with); pyannote's centroids are in another space
    live_attribution = (attribution if layout is not None and attribution.enabled and attribution.live
                        and diar.backend != "pyannote" and callable(getattr(diarization, "embed_windows", None))
                        else None)
    core_config = CoreConfig(
        session_id=session_id, sample_rate_hz=diar.sample_rate_hz, step_samples=diar.step_samples,
        frame_samples=diar.frame_samples, embedding_window_samples=window_samples,
        stats_interval_s=config.stats_interval_s, max_in_flight_steps=config.runtime.max_in_flight_steps,
        overflow=config.runtime.overflow, separator=layout, attribution=live_attribution,
    )
    # (with the pyannote backend the session manager refuses voices before a core is built: rtsep.sessions)
    matcher = VoiceMatcher(voices, config.voices) if voices and diar.backend != "pyannote" else None
    return SessionCore(core_config, diarizer, schedule, matcher)


def live_adapt_config(config: PipelineConfig) -> AdaptConfig | None:
    """A live session's adaptation settings, or None when live sessions do not adapt."""
    steps, batch = config.adapt_recipe(live=True)
    if not config.adaptation.live or steps <= 0:
        return None
    # uncompiled: a compile beside the session's inference takes a core away for its duration, and cannot be
    # stopped when the session or the server ends
    return AdaptConfig(steps=steps, batch_size=batch, min_speech_s=config.adaptation.min_speech_s, compile=False)


_STOP = object()
LATEST_MATERIAL_WAIT_S = 5.0  # how long a starting adaptation round waits for the event loop's newer material
FINAL_WRITE_S = 10  # final tracks go to the store in writes of this many seconds (rows of a shared store)


class SessionDriver:
    def __init__(
        self,
        *,
        info: SessionInfo,
        core: SessionCore,
        config: PipelineConfig,
        runtime: DiarizationRuntime,
        store: SessionStore,
        writer: StoreWriter,
        metrics: Metrics,
        transport: TransportSink,
        max_speakers: int,
        send_audio: bool = True,
        output_encoding: str = "pcm_s16le",
        clock: Callable[[], float] = time.monotonic,
        separation: SeparationRuntime | None = None,
        denoise: DenoiseRuntime | None = None,
    ) -> None:
        self.info = info
        self.core = core
        self.config = config
        self.runtime = runtime
        self.separation = separation
        self.store = store
        self.writer = writer
        self.metrics = metrics
        self.transport: TransportSink = transport
        self.max_speakers = max_speakers
        self.send_audio = send_audio
        self.output_encoding = output_encoding
        self.clock = clock
        self._vad_state = VadState.initial()
        # the session's audio at the model rate, kept only for a final pipeline (float32, 64 kB per second) or the
        # overlap detector (int16, 32 kB per second): they need the whole session
        self._final_pipeline = getattr(runtime, "final_pipeline", None)
        self._overlap = getattr(runtime, "overlap_detector", None)
        self._keep_audio = self._final_pipeline is not None or self._overlap is not None
        self._audio: list[np.ndarray] = []
        self._separator_state = separation.new_state() if separation is not None else None
        self._adapt_config = live_adapt_config(config)
        self.adaptations: list[AdaptReport] = []
        self._room = asyncio.Event()
        self._finished: asyncio.Future = asyncio.get_running_loop().create_future()
        self._diar_results: asyncio.Queue = asyncio.Queue()
        self._sep_results: asyncio.Queue = asyncio.Queue()
        self._denoise_results: asyncio.Queue = asyncio.Queue()
        self._tasks: set[asyncio.Task] = set()
        # acknowledgements wait for their commit; about one ``stored`` mark per track and second of committed audio
        self._acks = Acknowledgements(mark_interval_samples=core.rate)
        self._released: asyncio.Queue = asyncio.Queue()
        self._send_lock = asyncio.Lock()  # the live path and the acknowledgement sender share the transport
        sid = info.session_id
        self._ack_sender = asyncio.create_task(self._send_released(), name=f"rtsep-acks-{sid}")
        self._consumers = [
            asyncio.create_task(self._consume("diarization", self._diar_results), name=f"rtsep-diarize-{sid}"),
            asyncio.create_task(self._consume("separation", self._sep_results), name=f"rtsep-separate-{sid}"),
        ]
        self.denoise = denoise
        self._denoise_stream = denoise.new_stream(sid) if denoise is not None else None
        self._denoised: DenoisedSteps | None = None
        self._denoise_in_flight = 0
        self._denoise_flush_submitted = False
        # sees every step the core gets, in order (``rtsep process`` keeps them for its adaptive separator)
        self.on_step: Callable[[ChunkReady], None] | None = None
        self._denoise_drained = asyncio.Event()  # the denoiser's flush is handled (or the session failed)
        if denoise is not None:
            self._denoised = DenoisedSteps(core.config.step_samples, core.rate, config.denoise.tracks)
            self._consumers.append(asyncio.create_task(self._consume("denoise", self._denoise_results),
                                                       name=f"rtsep-denoise-{sid}"))
        # set by the server (drain, deletion) or by a failure: the transport ends the session with ``end_reason``
        self.end_requested = asyncio.Event()
        self.end_reason: RtsepError | None = None
        self.end_flush = True
        self.error_reported = asyncio.Event()  # set once the session's own failure was sent to its client
        self._closed = False
        self.final_names: dict[str, str] = {}  # final speaker -> enrolled voice

    @property
    def session_id(self) -> str:
        return self.info.session_id

    @property
    def rate(self) -> int:
        return self.core.rate

    @property
    def error(self) -> RtsepError | None:
        return self.core.error

    @property
    def processed_samples(self) -> int:
        return self.core.processed_samples

    @property
    def dropped_steps(self) -> int:
        return self.core.dropped_steps

    def request_end(self, reason: RtsepError, flush: bool) -> None:
        """Ask the transport to end this session: ``flush`` finishes it normally (final timeline, done)."""
        if not self.end_requested.is_set():
            self.end_reason, self.end_flush = reason, flush
            self.end_requested.set()

    # --- input ---

    async def announce_sources(self) -> None:
        """Tell the client about the separated-source tracks (after ``ready``)."""
        await self._dispatch(self.core.announce())

    async def feed_samples(self, block: SamplesReady, shed: bool = False) -> None:
        """Input as it arrives, ahead of its step (the separator hears it now); it never waits for room: the
        transport's next :meth:`feed` does, so the separator is at most one step ahead of the bound."""
        self._raise_if_failed()
        await self._dispatch(self.core.push_samples(block.start_sample, block.samples, shed))

    async def feed(self, step: ChunkReady, shed: bool = False) -> None:
        """One model-rate step (with ``--denoise``: a block of one): waits while the core has no room
        (backpressure); ``shed``: the transport fell behind and drops it (a marked gap; it needs no room)."""
        self._raise_if_failed()
        while not shed and not self._has_room():
            self._room.clear()
            await self._room.wait()
            self._raise_if_failed()
        self.metrics.audio_in_seconds.inc(step.valid_samples / self.rate)
        if self._keep_audio:  # the recording itself (a final pipeline does its own cleaning)
            samples = step.chunk.samples[: step.valid_samples]
            self._audio.append(np.array(samples, np.float32) if self._final_pipeline is not None
                               else np.round(np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16))
        if self._denoised is None:
            if self.on_step is not None:
                self.on_step(step)
            await self._dispatch(self.core.push_step(step, self.clock(), shed))
        else:
            if not self.config.denoise.tracks:  # the separator hears the raw input: it need not wait
                await self._dispatch(self.core.push_samples(step.chunk.start_sample,
                                                            step.chunk.samples[: step.valid_samples], shed))
            # a shed block is still denoised (the denoiser's state follows every sample); its step is a gap
            samples = self._denoised.push_input(step, shed, self.clock())
            self._submit_denoise(lambda: self._denoise_submit(samples))
        self.metrics.queue_depth.set(self.runtime.queue_depth)

    def _has_room(self) -> bool:
        if not self.core.has_room():
            return False
        # the denoiser's backlog is bounded too: at most max_in_flight_steps steps' worth of blocks
        bound = self.config.runtime.max_in_flight_steps * max(1, self.core.config.step_samples
                                                              // self.config.denoise.block_samples)
        return self._denoised is None or self._denoise_in_flight < bound

    def _denoise_submit(self, samples: np.ndarray) -> Future:
        assert self.denoise is not None and self._denoise_stream is not None
        return self.denoise.submit(self._denoise_stream, samples)

    def _submit_denoise(self, submit: Callable[[], Future]) -> None:
        self._denoise_in_flight += 1
        self._submit("denoise", submit)

    async def _end_input(self) -> None:
        """No more input: the denoiser's rest (with ``--denoise``) goes to the core, then the core's end."""
        if self._denoised is not None and self.denoise is not None and not self._denoised.finished:
            denoise, stream = self.denoise, self._denoise_stream
            assert stream is not None
            self._denoise_flush_submitted = True
            self._submit_denoise(lambda: denoise.flush(stream))
            await self._denoise_drained.wait()
            self._raise_if_failed()
        await self._dispatch(self.core.end_input(self.clock()))

    async def finish(self, outcome: str = "completed") -> Done:
        """No more input: drain, close the turns, compute and store the final timeline."""
        self._raise_if_failed()
        await self._end_input()
        await asyncio.shield(self._finished)
        await self._close("done", outcome)
        return Done(self.session_id, round(self.info.duration_s, 3), list(self.info.speakers),
                    timeline_url(self.session_id), dict(self.final_names))

    async def abort(self, outcome: str) -> None:
        """The session ends abnormally (client gone, error): keep everything produced, send nothing more."""
        self.transport = NullSink()
        if self.core.error is None and not self.core.finished:
            try:
                await self._end_input()
                await asyncio.shield(self._finished)
            except RtsepError as exc:
                log.warning("session %s: could not store its final timeline: %s", self.session_id, exc.message)
        clean = self.core.error is None and outcome in ("completed", "client_gone", "server_shutting_down")
        await self._close("done" if clean else "failed", outcome)

    # --- timelines ---

    def live_timeline(self) -> dict[str, Any]:
        rate = self.rate
        segments = [(s / rate, e / rate, speaker_name(k)) for s, e, k in self.core.closed_segments]
        timeline = to_json(annotation_from_segments(segments, self.session_id), "live")
        if self.core.matcher is not None:
            timeline["names"] = self.core.names
        return timeline

    async def final_timeline_now(self) -> dict[str, Any]:
        """The final timeline on demand while the session is live: snapshot here, re-cluster in a thread."""
        records, labels, live = self.core.snapshot()
        return await asyncio.to_thread(self._final_from, records, labels, live, self._audio_snapshot())

    def _audio_snapshot(self) -> list[np.ndarray] | None:
        """For a final pipeline or the overlap detector (None without either): the session's audio blocks so far
        (the list taken on the event loop, cheaply; :meth:`_final_from` joins them in its thread)."""
        return list(self._audio) if self._keep_audio else None

    @staticmethod
    def _joined(blocks: list[np.ndarray] | None) -> np.ndarray | None:
        if blocks is None:
            return None
        if not blocks:
            return np.zeros(0, np.float32)
        audio = np.concatenate(blocks)
        return audio if audio.dtype == np.float32 else audio.astype(np.float32) / 32767

    def _final_from(self, records: list, embedding_labels: dict[int, int], live_segments: list[tuple[int, int, int]],
                    audio_blocks: list[np.ndarray] | None = None) -> dict[str, Any]:
        """In a worker thread: the final timeline from the core's records (and the session's audio blocks, for a
        final pipeline or the overlap detector)."""
        audio = self._joined(audio_blocks)
        rate = self.rate
        diar = self.config.diarization
        if self._final_pipeline is not None and audio is not None:
            found = self._final_pipeline.segments(audio, rate, self.max_speakers)
            segments = pyannote_stream.name_after_live(found, live_segments, rate)
        elif diar.backend == "pyannote":
            segments = pyannote_stream.final_segments(records[0], diar.pyannote) if records else []
        else:
            overlaps: list[tuple[int, int]] = []
            if self._overlap is not None and audio is not None and audio.size:
                try:
                    overlaps = detect_overlaps(self._overlap, audio, rate, diar.overlap)
                except Exception:  # noqa: BLE001 - the timeline without second speakers is still the timeline
                    log.exception("session %s: the overlap detector failed; the final timeline has one speaker "
                                  "at a time", self.session_id)
            segments = final_segments(records, embedding_labels, diar, self.max_speakers, live_segments, overlaps)
        timeline = to_json(annotation_from_segments([(s / rate, e / rate, speaker_name(k)) for s, e, k in segments],
                                                    self.session_id), "final")
        matcher = self.core.matcher
        if matcher is not None:  # (the embedded diarizer's records: build_core refuses voices with pyannote)
            named = final_names(records, segments, matcher.voices, diar.embedding_window_samples, diar.step_samples,
                                self.config.voices.min_similarity)
            timeline["names"] = {speaker_name(k): n.name for k, n in sorted(named.items()) if n.name}
            timeline["name_similarity"] = {speaker_name(k): n.similarity for k, n in sorted(named.items())}
        return timeline

    # --- results ---

    async def _consume(self, path: str, results: asyncio.Queue) -> None:
        timeout_s = self.config.runtime.result_timeout_s
        while True:
            future = await results.get()
            if future is _STOP:
                return
            try:
                result = await asyncio.wait_for(future, timeout_s)
            except TimeoutError:
                self._fail(RtsepError(f"internal error: the {path} runtime gave no result within {timeout_s:g} s"))
                return
            except RtsepError as exc:
                log.error("session %s: %s failed: %s", self.session_id, path, exc.message)
                self._fail(exc)
                return
            except Exception as exc:  # noqa: BLE001 - one session's failure must not reach the server
                log.error("session %s: the %s runtime failed", self.session_id, path, exc_info=exc)
                self._fail(RtsepError(f"internal error: the {path} runtime failed: {exc}"))
                return
            self._room.set()
            try:
                if path == "diarization":
                    events = self.core.diarization_result(result, self.clock())
                elif path == "denoise":
                    events = self._denoised_result(result)
                else:
                    events = self.core.separation_result(result.step_index, result.start_sample, result.sources)
                await self._dispatch(events)
            except RtsepError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # noqa: BLE001
                log.exception("session %s: handling a %s result failed", self.session_id, path)
                self._fail(RtsepError(f"internal error: {exc}"))
                return

    def _denoised_result(self, samples: np.ndarray) -> list[Event]:
        """A block's denoised samples (in order): the steps now complete go to the core."""
        assert self._denoised is not None
        self._denoise_in_flight -= 1
        last = self._denoise_in_flight == 0 and self._denoise_flush_submitted  # the flush is submitted last
        events: list[Event] = []
        for assembled in self._denoised.push_denoised(samples, last):
            if self.on_step is not None:
                self.on_step(assembled.step)
            events += self.core.push_step(assembled.step, assembled.arrived_s, assembled.shed)
        if last:
            self._denoise_drained.set()
        return events

    def _submit(self, path: str, submit: Callable[[], Future]) -> None:
        results = {"diarization": self._diar_results, "separation": self._sep_results,
                   "denoise": self._denoise_results}[path]
        try:
            results.put_nowait(asyncio.wrap_future(submit()))
        except Exception as exc:  # noqa: BLE001 - e.g. the runtime is closed: this session cannot go on
            log.error("session %s: submitting to the %s runtime failed", self.session_id, path, exc_info=exc)
            failed: asyncio.Future = asyncio.get_running_loop().create_future()
            failed.set_exception(exc)
            results.put_nowait(failed)

    # --- output ---

    async def _dispatch(self, events: list[Event]) -> None:
        sid = self.session_id
        rate = self.rate
        for event in events:
            if isinstance(event, DiarizeDue):
                request = DiarizeRequest(event.step_index, event.start_sample, event.valid_samples, event.samples,
                                         event.window, self._vad_state)
                self._submit("diarization", lambda r=request: self.runtime.submit(sid, r))
            elif isinstance(event, SourcesEmbedDue):
                task = asyncio.create_task(self._embed_sources(event.windows), name=f"rtsep-embed-sources-{sid}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(event, SeparateDue):
                separation = self.separation
                assert separation is not None
                request = SeparateRequest(event.step_index, event.start_sample, event.samples, self._separator_state)
                self._submit("separation", lambda r=request: separation.submit(sid, r))
            elif isinstance(event, AudioOut):
                write = self._acks.issue()
                self._acks.track_written(write, event.track, event.index, event.start_sample + event.samples.size)
                await self._store(write, self.store.write_track, sid, event.track, event.start_sample, event.samples)
                if self.send_audio:
                    async with self._send_lock:
                        await self.transport.send_audio(event)
                self.metrics.audio_out_seconds.inc(event.samples.size / rate)
            elif isinstance(event, InputAudio):
                await self._store(self._acks.issue(), self.store.write_track, sid, INPUT_TRACK, event.start_sample,
                                  event.samples)
            elif isinstance(event, SpeakerActivityEvent):
                await self._send(
                    SpeakerActivity(event.name, event.index, event.event, event.time_s, event.sample, event.voice))
            elif isinstance(event, SpeakerNamedEvent):
                log.info("session %s: %s is %s (similarity %.3f)", sid, event.name, event.voice, event.similarity)
                await self._send(SpeakerNamed(event.name, event.index, event.voice, event.similarity))
            elif isinstance(event, TurnClosed):
                write = self._acks.issue()
                self._acks.hold(write, Segment(event.name, event.index, round(event.start_s, 3), round(event.end_s, 3),
                                               name=event.voice))
                await self._store(write, self.store.append_live_segment, sid, event.name, event.start_s, event.end_s)
            elif isinstance(event, TrackAnnounced):
                if event.kind == "speaker":
                    self.info.speakers.append(event.name)
                    await self._store(self._acks.issue(), self.store.update, self._info_snapshot())
                await self._send(TrackAnnouncement(event.name, event.index, event.url, event.kind))
            elif isinstance(event, StepLatency):
                self.metrics.processing_latency_seconds.observe(event.latency_s)
            elif isinstance(event, StepDropped):
                self.metrics.dropped_frames.labels(event.path).inc()
                await self._send(Gap(event.path, event.start_sample, event.samples,
                                     round(event.start_sample / rate, 3), round(event.samples / rate, 3)))
            elif isinstance(event, StatsDue):
                await self._send(
                    Stats(event.audio_in_s, event.processed_s, round(self.metrics.last_real_time_factor, 4),
                          self.runtime.queue_depth, event.dropped_steps))
            elif isinstance(event, AdaptationDue):
                self._adapt(event.material)
            elif isinstance(event, FinalTimelineDue):
                try:
                    timeline = await asyncio.to_thread(self._final_from, event.records, event.embedding_labels,
                                                       event.live_segments, self._audio_snapshot())
                except Exception as exc:  # noqa: BLE001 - this session fails, not the server
                    log.exception("session %s: the final timeline failed", sid)
                    self._fail(RtsepError(f"internal error: the final timeline failed: {exc}"))
                    continue
                await self._dispatch(self.core.final_timeline_ready(timeline))
            elif isinstance(event, FinalTimeline):
                timeline = event.timeline
                await self._store_final_tracks(timeline)
                if self.core.matcher is not None:
                    self.final_names = dict(timeline.get("names", {}))
                    timeline = {**timeline, "live_names": self.core.names}  # the stored live timeline's names
                write = self._acks.issue()
                self._acks.hold(write, TimelineMessage("final", event.timeline["segments"], dict(self.final_names)))
                await self._store(write, self.store.write_final, sid, timeline)
            elif isinstance(event, Finished):
                self.info.duration_s = event.duration_s
                if not self._finished.done():
                    self._finished.set_result(event)
            elif isinstance(event, Failed):
                await self._failed(event.error)

    async def _embed_sources(self, windows: np.ndarray) -> None:
        """The sources' recent audio through the diarizer's speaker encoder, off the event loop; a failure leaves the
        live attribution with the embeddings it had (logged)."""
        embed = getattr(self.runtime, "embed_windows", None)
        embeddings = None
        try:
            if embed is not None:
                embeddings = await asyncio.to_thread(embed, windows)
        except Exception:  # noqa: BLE001 - the tracks fall back to what the attribution knew; the session goes on
            log.exception("session %s: embedding the separated sources failed", self.session_id)
        try:
            await self._dispatch(self.core.sources_embedded(embeddings))
        except RtsepError as exc:
            self._fail(exc)

    async def _store_final_tracks(self, timeline: dict[str, Any]) -> None:
        """One track per final speaker, rendered from the stored input in a thread (one speaker at a time, so that a
        long session holds one rendered track at once), stored beside the live tracks (queued before the final
        timeline and the end state, so a client told ``done`` finds them); the timeline lists them (``tracks``).
        A render that fails is logged and leaves the timeline without (the rest of) its final tracks."""
        sid = self.session_id
        timeline["tracks"] = {}
        if not timeline.get("segments"):
            return
        chunk = FINAL_WRITE_S * self.rate
        try:
            await self.writer.flush()  # the input track is complete
            tracks = await asyncio.to_thread(self._final_renderer, timeline["segments"])
            while (track := await asyncio.to_thread(next, tracks, None)) is not None:
                for start in range(0, max(track.samples.size, 1), chunk):
                    await self._store(self._acks.issue(), self.store.write_track, sid, track.name, start,
                                      track.samples[start:start + chunk])
                timeline["tracks"][track.speaker] = track_url(sid, track.name)
                if track.loudness is not None:
                    log.info("session %s: final track %s: %s", sid, track.speaker, track.loudness)
                await self.writer.flush()  # written: its samples are released before the next one is rendered
        except Exception:  # noqa: BLE001 - the session's timeline and live tracks are still worth keeping
            log.exception("session %s: rendering the final speaker tracks failed", sid)

    def _final_renderer(self, segments: list[dict[str, Any]]) -> Iterator[FinalTrack]:
        """In a worker thread: the stored input, and the final tracks to render from it (rtsep.stream.render)."""
        pcm = self.store.read_track(self.session_id, INPUT_TRACK)
        audio = pcm.astype(np.float32) / 32768.0 if pcm is not None else np.zeros(0, np.float32)
        total = self.core.processed_samples
        sources = self._stored_sources(total)
        attribution = None
        if sources is not None:
            embed = getattr(self.runtime, "embed_windows", None)
            if embed is None:
                log.info("session %s: the diarizer has no speaker encoder for the sources: the final tracks are "
                         "the gated input", self.session_id)
            else:
                padded = np.zeros(total, np.float32)
                padded[: min(total, audio.size)] = audio[:total]
                attribution = attribute(padded, sources, self.rate, segment_spans(segments, self.rate),
                                        self.config.attribution, embed)
                log.info("session %s: attribution of the separated sources per speaker and block: %s",
                         self.session_id, attribution.summary())
        return final_tracks(audio, self.rate, segments, self.config.tracks, total, sources=sources,
                            attribution=attribution, source_fade_s=self.config.attribution.crossfade_s)

    def _stored_sources(self, total: int) -> np.ndarray | None:
        """The separated sources as stored (K, total) at the session's rate, when the final tracks carry them
        (a separator, ``[attribution] enabled``); None otherwise or when one is missing."""
        if self.separation is None or not self.config.attribution.enabled:
            return None
        out = np.zeros((self.separation.spec.num_outputs, total), np.float32)
        for k in range(out.shape[0]):
            pcm = self.store.read_track(self.session_id, source_name(k))
            if pcm is None:
                log.warning("session %s: source %d was not stored: the final tracks are the gated input",
                            self.session_id, k)
                return None
            n = min(total, pcm.size)
            out[k, :n] = pcm[:n].astype(np.float32) / 32768.0
        return out

    async def _store(self, number: int, write: Callable[..., Any], *args: Any) -> None:
        """Queue store write ``number`` (from ``self._acks.issue()``, in order) for the writer's thread."""
        await self.writer.submit(lambda: write(*args), lambda error: self._store_failed(number, error),
                                 lambda: self._committed(number))

    def _committed(self, number: int) -> None:
        """Store write ``number`` committed (called on the event loop by the writer, in write order)."""
        for item in self._acks.committed(number):
            self._released.put_nowait(item)

    async def _send(self, message: Any) -> None:
        async with self._send_lock:
            await self.transport.send_message(message)

    async def _send_released(self) -> None:
        """Sends the acknowledgements as their commits release them, in order, until ``_STOP``."""
        rate = self.rate
        while True:
            item = await self._released.get()
            if item is _STOP:
                return
            if isinstance(item, TrackMark):
                item = Stored(item.name, item.index, item.end_sample, round(item.end_sample / rate, 3))
            try:
                await self._send(item)
            except Exception:  # noqa: BLE001 - the client may be gone; the session's own path notices
                log.debug("session %s: could not send an acknowledgement", self.session_id, exc_info=True)

    def _store_failed(self, number: int, error: RtsepError) -> None:
        """Store write ``number`` of this session failed (called on the event loop by the writer)."""
        self._acks.write_failed(number)
        if self.core.ended:
            self.metrics.errors.labels(error.error_code).inc()  # counted; the session already ended or failed
            return
        self._fail(error)

    def _info_snapshot(self) -> SessionInfo:
        return dataclasses.replace(self.info, speakers=list(self.info.speakers))

    # --- failures ---

    def _fail(self, error: RtsepError) -> None:
        events = self.core.fail(error)
        if events:
            self._spawn(self._dispatch(events))

    async def _failed(self, error: RtsepError) -> None:
        log.error("session %s failed: %s", self.session_id, error.message)
        self.metrics.errors.labels(error.error_code).inc()
        if not self._finished.done():
            self._finished.set_exception(error)
            self._finished.exception()  # retrieved here: whoever awaits it gets it too
        self._denoise_drained.set()  # an end of input waiting for the denoiser raises
        try:  # the error first: the transport closes the connection once the end is requested
            await self._send(ErrorMessage(error.error_code, error.message, error.close_code))
        except Exception:  # noqa: BLE001 - the client may be gone already
            log.debug("session %s: could not send its error", self.session_id, exc_info=True)
        finally:
            self.error_reported.set()
            self._room.set()  # a feed() waiting for room raises
            self.request_end(error, flush=False)

    def _raise_if_failed(self) -> None:
        if self.core.error is not None:
            raise self.core.error

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- adaptation ---

    def _adapt(self, material: AdaptationMaterial) -> None:
        separation = self.separation
        assert separation is not None and self._adapt_config is not None
        sid = self.session_id
        log.info("session %s: adapting the separator on %s", sid,
                 ", ".join(f"{spk} {sum(b - a for a, b in items):.1f} s" for spk, items in material.spans.items()))
        purity_config, model_rate = self.config.purity_config(), separation.spec.sample_rate_hz

        loop = asyncio.get_running_loop()

        def speech() -> dict[str, np.ndarray]:  # in the adaptation thread, when the round starts
            latest = self._latest_material(loop) or material  # it may have waited behind other sessions' rounds
            purity = separation.purity_filter(purity_config) if purity_config is not None else None
            return latest.speech(model_rate, purity)

        def finished(future: Future) -> None:  # in the adaptation thread: back to the event loop
            try:
                loop.call_soon_threadsafe(self._adaptation_finished, future)
            except RuntimeError:  # the loop is closed (server gone): nothing is waiting for it
                log.info("session %s: adaptation ended after its event loop closed", sid)

        try:
            future = separation.adapt(self._separator_state, speech, self._adapt_config, stop=lambda: self.core.ended,
                                      key=sid)
        except Exception:  # noqa: BLE001 - the session goes on with the shared model
            log.exception("session %s: could not start the separator's adaptation", sid)
            self.core.adaptation_done(False)
            return
        future.add_done_callback(finished)

    def _latest_material(self, loop: asyncio.AbstractEventLoop) -> AdaptationMaterial | None:
        """From the adaptation thread: the core's newer material for the round about to start (on the event loop,
        where the core lives); None when there is none, or the loop does not answer (it is closing)."""
        answer: Future = Future()

        def ask() -> None:
            try:
                answer.set_result(self.core.latest_adaptation_material())
            except Exception as exc:  # noqa: BLE001 - handed to the waiting thread, which logs it
                answer.set_exception(exc)

        try:
            loop.call_soon_threadsafe(ask)
            return answer.result(timeout=LATEST_MATERIAL_WAIT_S)
        except Exception:  # noqa: BLE001 - the round trains on the material it was queued with
            log.warning("session %s: adapting on the material queued, not the latest", self.session_id, exc_info=True)
            return None

    def _adaptation_finished(self, future: Future) -> None:
        adopted = False
        if future.cancelled():
            log.info("session %s: separator adaptation cancelled", self.session_id)
        elif future.exception() is not None:
            log.error("session %s: separator adaptation failed", self.session_id, exc_info=future.exception())
        else:
            report: AdaptReport = future.result()
            adopted = report.skipped is None
            if adopted:
                self.adaptations.append(report)
                self.metrics.separator_adaptations.inc()
            log.info("session %s: separator adaptation: %s", self.session_id, report.as_dict())
        self.core.adaptation_done(adopted)

    # --- the end ---

    async def _close(self, state: str, outcome: str) -> None:
        if self._closed:
            return
        self._closed = True
        queues = (self._diar_results, self._sep_results, self._denoise_results)
        for results in queues:
            results.put_nowait(_STOP)
        for task in self._consumers:
            if self.core.error is not None:
                task.cancel()  # it may wait for a result that will not come
        await asyncio.gather(*self._consumers, return_exceptions=True)
        for results in queues:  # results nobody will take (after a failure)
            while not results.empty():
                future = results.get_nowait()
                if future is _STOP:
                    continue
                if future.done() and not future.cancelled():
                    future.exception()
                else:
                    future.cancel()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.denoise is not None and self._denoise_stream is not None:
            self.denoise.close_stream(self._denoise_stream)
        if self.separation is not None:  # a round of it still waiting in the server's queue will not run
            self.separation.end_session(self.session_id)
        self.info.state = state
        self.info.outcome = outcome
        self.info.ended_at = time.time()
        self.info.duration_s = self.core.processed_samples / self.rate
        info = self._info_snapshot()
        try:
            await self.writer.call(lambda: self.store.update(info))
        except RtsepError as exc:  # e.g. disk full: the session's earlier state stays on disk
            log.error("session %s: could not store its end state: %s", self.session_id, exc.message)
        try:
            await self.writer.call(lambda: self.store.close_session(self.session_id))
        except RtsepError as exc:
            log.error("session %s: could not close its files: %s", self.session_id, exc.message)
        # every write of the session is done and confirmed (the writer keeps their order): send what they
        # released before the transport says ``done``
        self._released.put_nowait(_STOP)
        await self._ack_sender
