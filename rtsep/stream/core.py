"""The per-session output state machine (sans-I/O): runtime results in, typed output events out.

:class:`SessionCore` is to a session's output what :class:`~rtsep.stream.session.StreamSession` is to its
input, in the manner of python-websockets' ``Protocol``: the driver (rtsep.driver) hands it model-rate steps,
the runtime's results (step analyses, separated steps, adaptation outcomes) and the end of input; every call
returns a list of events saying what to do next: submit a step to a runtime, send or store audio of a track
at a sample position, announce a track, report speaker activity or a closed turn, adapt the separator, send
stats, compute the final timeline, finish. Nothing here waits, reads a clock or touches a model or a disk.

The overflow policy lives here, in one place, for every path (diarization, separation, and input a transport
had to shed): each path has at most ``max_in_flight_steps`` steps awaiting the runtime; beyond that the
session either waits (``backpressure``: :meth:`has_room` is False) or the step is dropped (``drop``). A
dropped step becomes a marked gap (:class:`StepDropped`): its samples count as silence, every later position
stays where it was, and the step is counted.

Results are consumed strictly in submission order per path; a dropped step takes its turn in that order.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from rtsep.errors import ConfigError, RtsepError
from rtsep.stream.adaptation import AdaptationMaterial, AdaptationSchedule
from rtsep.stream.attribution import AttributionConfig
from rtsep.stream.chunker import Chunker
from rtsep.stream.history import SampleHistory
from rtsep.stream.live_attribution import LiveAttribution
from rtsep.stream.naming import VoiceMatcher
from rtsep.stream.resample import low_delay_resampler
from rtsep.stream.routing import route_by_labels
from rtsep.stream.session import ChunkReady
from rtsep.stream.turns import (
    SOURCE_TRACK_BASE,
    FrameLabels,
    NewSpeaker,
    SegmentClosed,
    SpeakerStarted,
    SpeakerStopped,
    StepAnalysis,
    source_name,
    speaker_name,
)

OVERFLOW_POLICIES = ("backpressure", "drop")
PATHS = ("diarization", "separation", "input")  # "input": steps a transport shed before they reached the core


def track_url(session_id: str, track: str) -> str:
    return f"/v1/sessions/{session_id}/tracks/{track}.wav"


def timeline_url(session_id: str) -> str:
    return f"/v1/sessions/{session_id}/timeline"


class Diarizer(Protocol):
    """The online diarizer of one session (rtsep.diarize.online.OnlineDiarizer, or with ``--diarizer pyannote``
    rtsep.diarize.pyannote_stream.PyannoteStreamDiarizer, whose speakers may overlap)."""

    records: list

    def push(self, step: StepAnalysis) -> list: ...

    def finish(self) -> list: ...

    @property
    def embedding_labels(self) -> dict[int, int]: ...

    def centroids(self) -> np.ndarray:
        """(speakers, dim): speaker k's current centroid (only read when the session names speakers)."""
        ...


@dataclass(frozen=True)
class SeparatorLayout:
    """What the core needs of the separator's spec: its rate, step, number of sources and look-ahead."""

    sample_rate_hz: int
    step_samples: int
    num_outputs: int
    lookahead_samples: int = 0


@dataclass(frozen=True)
class CoreConfig:
    session_id: str
    sample_rate_hz: int = 16000  # of every position the core returns
    step_samples: int = 4096
    frame_samples: int = 512  # one speaker label per frame
    embedding_window_samples: int = 16000
    stats_interval_s: float = 2.0
    max_in_flight_steps: int = 16  # per path
    overflow: str = "backpressure"
    separator: SeparatorLayout | None = None
    # with a separator: the live speaker tracks carry the attributed sources (rtsep.stream.live_attribution); their
    # frames then wait for the separator's output of the same samples. None: the gated input, sent at once
    attribution: AttributionConfig | None = None

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(f"overflow policy must be one of {OVERFLOW_POLICIES}, got {self.overflow!r}")
        if self.max_in_flight_steps < 1:
            raise ConfigError("max_in_flight_steps must be >= 1")

    @property
    def frames_per_step(self) -> int:
        return self.step_samples // self.frame_samples


# --- events: what the driver does next --------------------------------------------------------------


@dataclass(frozen=True)
class DiarizeDue:
    """Submit this step to the diarization runtime (``window``: the embedding window that ends with it)."""

    step_index: int
    start_sample: int
    valid_samples: int
    samples: np.ndarray
    window: np.ndarray


@dataclass(frozen=True)
class SeparateDue:
    """Submit this step (at the separator's rate, ``start_sample`` on its timeline) to the separation runtime."""

    step_index: int
    start_sample: int
    samples: np.ndarray


@dataclass(frozen=True)
class SourcesEmbedDue:
    """Embed these windows of the sources' recent audio (``(num_sources, samples)``, the session's rate) with the
    diarizer's speaker encoder; report back with :meth:`SessionCore.sources_embedded`."""

    windows: np.ndarray


@dataclass(frozen=True)
class StepDropped:
    """A marked gap: ``samples`` model-rate samples from ``start_sample`` count as silence on ``path``."""

    path: str
    start_sample: int
    samples: int


@dataclass(frozen=True)
class AudioOut:
    """Audio of one track (float32 at the session's rate) starting at ``start_sample``."""

    track: str
    index: int  # the track index of audio frames (a speaker, or SOURCE_TRACK_BASE + k)
    start_sample: int
    samples: np.ndarray


@dataclass(frozen=True)
class InputAudio:
    """The session's input (float32 at the session's rate) from ``start_sample``: stored as the ``input`` track
    (never sent), from which the final speaker tracks are rendered at the end (rtsep.stream.render)."""

    start_sample: int
    samples: np.ndarray


@dataclass(frozen=True)
class TrackAnnounced:
    name: str
    index: int
    url: str
    kind: str  # "speaker" | "source"


@dataclass(frozen=True)
class SpeakerActivity:
    name: str
    index: int
    event: str  # "started" | "stopped"
    sample: int
    time_s: float
    voice: str | None = None  # the enrolled voice the speaker is matched to, if any


@dataclass(frozen=True)
class TurnClosed:
    name: str
    index: int
    start_sample: int
    end_sample: int
    start_s: float
    end_s: float
    voice: str | None = None


@dataclass(frozen=True)
class SpeakerNamed:
    """Speaker ``name`` (``index``) is now the enrolled voice ``voice`` (None: it lost it to a better match)."""

    name: str
    index: int
    voice: str | None
    similarity: float


@dataclass(frozen=True)
class StepLatency:
    """A step's labels and audio are out ``latency_s`` after its last sample arrived."""

    latency_s: float


@dataclass(frozen=True)
class StatsDue:
    audio_in_s: float
    processed_s: float
    dropped_steps: int


@dataclass(frozen=True)
class AdaptationDue:
    """Fine-tune the session's separator on ``material``; report back with :meth:`SessionCore.adaptation_done`."""

    material: AdaptationMaterial


@dataclass(frozen=True)
class FinalTimelineDue:
    """Every result is in: re-cluster ``records`` (off the event loop), then call :meth:`final_timeline_ready`."""

    records: list
    embedding_labels: dict[int, int]
    live_segments: list[tuple[int, int, int]] = field(default_factory=list)  # the live turns, to name by


@dataclass(frozen=True)
class FinalTimeline:
    timeline: dict[str, Any]


@dataclass(frozen=True)
class Finished:
    duration_s: float
    speakers: list[str]


@dataclass(frozen=True)
class Failed:
    """The session cannot go on (a runtime failed, a write failed): send ``error``, close with its code."""

    error: RtsepError


Event = (DiarizeDue | SeparateDue | SourcesEmbedDue | StepDropped | AudioOut | InputAudio | TrackAnnounced
         | SpeakerActivity | TurnClosed | SpeakerNamed | StepLatency | StatsDue | AdaptationDue | FinalTimelineDue
         | FinalTimeline | Finished | Failed)


@dataclass
class _Pending:
    """A step awaiting its result, in submission order (``dropped``: it gets none, it is a gap)."""

    index: int
    start_sample: int
    valid_samples: int
    dropped: bool


@dataclass
class _Path:
    pending: deque[_Pending] = field(default_factory=deque)
    in_flight: int = 0
    next_index: int = 0
    dropped: int = 0


class SessionCore:
    def __init__(self, config: CoreConfig, diarizer: Diarizer,
                 adaptation: AdaptationSchedule | None = None, matcher: VoiceMatcher | None = None) -> None:
        self.config = config
        self.diarizer = diarizer
        self.matcher = matcher  # names speakers after enrolled voices (the session's ``voices`` option)
        self.adaptation = adaptation if config.separator is not None else None
        self.rate = config.sample_rate_hz
        self._history = SampleHistory(config.embedding_window_samples)
        self._diar = _Path()
        self._sep = _Path()
        self._input_dropped = 0
        self._chunks: dict[int, tuple[np.ndarray, float]] = {}  # step index -> (samples, arrival time)
        self.processed_samples = 0
        self.closed_segments: list[tuple[int, int, int]] = []
        self.speakers: list[str] = []
        self.adaptations = 0
        self._next_stats_sample = int(config.stats_interval_s * self.rate)
        self.input_ended = False
        self.final_requested = False
        self.finished = False
        self.error: RtsepError | None = None
        sep = config.separator
        if sep is not None:
            # low-delay converters: a separated frame is out a few ms after its input, not soxr's ~90 ms each way
            self._down = low_delay_resampler(self.rate, sep.sample_rate_hz)
            self._up = [low_delay_resampler(sep.sample_rate_hz, self.rate) for _ in range(sep.num_outputs)]
            self._sep_chunker = Chunker(sep.step_samples)
            self._written = [0] * sep.num_outputs  # model-rate samples out per source
        # input samples (session rate) the separator has been given, early by push_samples or with their step
        self._separator_fed = 0
        self.live_attribution = (LiveAttribution(config.attribution, sep.num_outputs, self.rate)
                                 if sep is not None and config.attribution is not None else None)

    # --- state ---

    @property
    def ended(self) -> bool:
        """No more results are taken (finished, or failed)."""
        return self.finished or self.error is not None

    @property
    def dropped_steps(self) -> int:
        return self._diar.dropped + self._sep.dropped + self._input_dropped

    @property
    def steps_in(self) -> int:
        return self._diar.next_index

    def has_room(self) -> bool:
        """Whether a step may be pushed now; always True under ``drop``. A model-rate step becomes one or more
        separator steps, so the separator's bound may be passed by the few steps of the last one admitted."""
        if self.config.overflow == "drop":
            return True
        bound = self.config.max_in_flight_steps
        return self._diar.in_flight < bound and self._sep.in_flight < bound

    @property
    def idle(self) -> bool:
        """Nothing awaits a result."""
        return not self._diar.pending and not self._sep.pending

    # --- input ---

    def announce(self) -> list[Event]:
        """The separated-source tracks (right after ``ready``)."""
        sep = self.config.separator
        if sep is None:
            return []
        sid = self.config.session_id
        return [TrackAnnounced(source_name(k), SOURCE_TRACK_BASE + k, track_url(sid, source_name(k)), "source")
                for k in range(sep.num_outputs)]

    def push_samples(self, start_sample: int, samples: np.ndarray, shed: bool = False) -> list[Event]:
        """Input as it arrives, before its step is complete (rtsep.stream.session.SamplesReady): the separator
        hears it now, so that a separated frame does not wait for the diarizer's step (256 ms) to fill. The same
        samples come again with their step (:meth:`push_step`), which then gives the separator only the rest.
        ``samples`` are the input from ``start_sample`` on (session rate), with no hole after what the separator has
        (what it has already is skipped); ``shed`` as in :meth:`push_step`."""
        if self.config.separator is None or self.ended:
            return []
        if self.input_ended:
            raise RuntimeError("push_samples after end_input")
        if start_sample > self._separator_fed:
            raise RuntimeError(f"samples from {start_sample} pushed, the separator has up to {self._separator_fed}")
        new = np.asarray(samples, np.float32)[self._separator_fed - start_sample:]  # (a step may have given some)
        self._separator_fed += new.size
        return self._feed_separator(new, shed)

    def push_step(self, step: ChunkReady, now_s: float, shed: bool = False) -> list[Event]:
        """One model-rate step in. ``shed``: the transport could not keep up and drops it before analysis (a gap,
        like a drop by the overflow policy). The diarizer hears ``step.analysis`` where there is one (the step
        denoised); the tracks, the separator and the adaptation keep ``step.chunk``."""
        if self.input_ended:
            raise RuntimeError("push_step after end_input")
        chunk = step.chunk
        heard = chunk.samples if step.analysis is None else step.analysis
        index = self._diar.next_index
        self._diar.next_index += 1
        window = self._history.push(heard)
        self._chunks[index] = (chunk.samples, now_s)
        valid = chunk.samples[: step.valid_samples]
        events: list[Event] = [InputAudio(chunk.start_sample, valid)] if valid.size else []
        if self.config.separator is not None:
            new = valid[max(0, self._separator_fed - chunk.start_sample):]  # what push_samples has not given it
            self._separator_fed = max(self._separator_fed, chunk.start_sample + valid.size)
            events += self._feed_separator(new, shed)
        if self.adaptation is not None:
            self.adaptation.push(valid)
        if shed or self._full(self._diar):
            path = "input" if shed else "diarization"
            if shed:
                self._input_dropped += 1
            else:
                self._diar.dropped += 1
            self._diar.pending.append(_Pending(index, chunk.start_sample, step.valid_samples, True))
            events.append(StepDropped(path, chunk.start_sample, step.valid_samples))
            events += self._drain_diarization(now_s)
        else:
            self._diar.pending.append(_Pending(index, chunk.start_sample, step.valid_samples, False))
            self._diar.in_flight += 1
            events.append(DiarizeDue(index, chunk.start_sample, step.valid_samples, heard, window))
        return events

    def end_input(self, now_s: float) -> list[Event]:
        """No more steps: flush the separator's buffers; the end follows once every result is in."""
        if self.input_ended:
            return []
        events: list[Event] = []
        if self.config.separator is not None and self.error is None:
            events += self._chunk_separator(self._down.flush(), False)
            last = self._sep_chunker.flush()
            if last is not None:
                events += self._submit_separation(last[0], last[1], False)
        self.input_ended = True
        return events + self._maybe_finish()

    # --- results ---

    def diarization_result(self, analysis: StepAnalysis, now_s: float) -> list[Event]:
        if self.ended:
            return []
        head = self._diar.pending[0] if self._diar.pending else None
        if head is None or head.dropped or head.index != analysis.step_index:
            raise RuntimeError(f"diarization result for step {analysis.step_index} out of order")
        self._diar.pending.popleft()
        self._diar.in_flight -= 1
        events = self._analysed(analysis, now_s)
        events += self._drain_diarization(now_s)
        return events + self._maybe_finish()

    def separation_result(self, step_index: int, start_sample: int, sources: np.ndarray) -> list[Event]:
        """``sources``: (num_outputs, step_samples) at the separator's rate, covering ``start_sample`` on (which is
        the input step shifted back by the separator's look-ahead, so negative at first)."""
        if self.ended:
            return []
        head = self._sep.pending[0] if self._sep.pending else None
        if head is None or head.dropped or head.index != step_index:
            raise RuntimeError(f"separation result for step {step_index} out of order")
        self._sep.pending.popleft()
        self._sep.in_flight -= 1
        events = self._separated(start_sample, sources, emit=True)
        events += self._drain_separation()
        return events + self._maybe_finish()

    def adaptation_done(self, adopted: bool) -> list[Event]:
        """An adaptation round ended (``adopted``: the session now separates with the fine-tuned copy)."""
        if self.adaptation is not None:
            self.adaptation.done()
        if adopted:
            self.adaptations += 1
        return []

    def sources_embedded(self, embeddings: np.ndarray | None) -> list[Event]:
        """The embeddings of a :class:`SourcesEmbedDue` (None: they failed; the attribution keeps the ones before)."""
        if self.live_attribution is None or self.ended:
            return []
        self.live_attribution.embedded(embeddings)
        return self._embed_due()

    def final_timeline_ready(self, timeline: dict[str, Any]) -> list[Event]:
        if self.ended or not self.final_requested:
            return []
        self.finished = True
        return [FinalTimeline(timeline), Finished(self.processed_samples / self.rate, list(self.speakers))]

    def fail(self, error: RtsepError) -> list[Event]:
        """The session cannot go on: no result is taken after this; the first failure is the one reported."""
        if self.ended:
            return []
        self.error = error
        return [Failed(error)]

    @property
    def names(self) -> dict[str, str]:
        """Live speaker name -> enrolled voice, for the speakers matched so far."""
        if self.matcher is None:
            return {}
        return {speaker_name(k): voice for k, voice in sorted(self.matcher.names.items())}

    def snapshot(self) -> tuple[list, dict[int, int], list[tuple[int, int, int]]]:
        """What the final timeline is computed from, as of now: the diarizer's step records and labels, and the
        live turns closed so far (whose names the final speakers take where they agree)."""
        return list(self.diarizer.records), self.diarizer.embedding_labels, list(self.closed_segments)

    # --- internals: diarization ---

    def _full(self, path: _Path) -> bool:
        return self.config.overflow == "drop" and path.in_flight >= self.config.max_in_flight_steps

    def _drain_diarization(self, now_s: float) -> list[Event]:
        """Dropped steps whose turn has come are analysed as silence."""
        events: list[Event] = []
        while self._diar.pending and self._diar.pending[0].dropped:
            gap = self._diar.pending.popleft()
            silent = StepAnalysis(gap.index, gap.start_sample, gap.valid_samples,
                                  np.zeros(self.config.frames_per_step, np.float32), None)
            events += self._analysed(silent, now_s)
        return events

    def _analysed(self, analysis: StepAnalysis, now_s: float) -> list[Event]:
        self.processed_samples += analysis.valid_samples
        diarized = self.diarizer.push(analysis)
        events: list[Event] = []
        if self.matcher is not None and analysis.embedding is not None:
            # named before the turns of this step are reported, so that they carry the name
            new = [e for e in diarized if isinstance(e, NewSpeaker)]
            rest = [e for e in diarized if not isinstance(e, NewSpeaker)]
            events += self._from_diarizer(new, now_s)
            for naming in self.matcher.update(self.diarizer.centroids()):
                events.append(SpeakerNamed(speaker_name(naming.speaker), naming.speaker, naming.name,
                                           naming.similarity))
            diarized = rest
        events += self._from_diarizer(diarized, now_s)
        if self.processed_samples >= self._next_stats_sample:
            self._next_stats_sample += int(self.config.stats_interval_s * self.rate)
            events.append(StatsDue(round(self.steps_in * self.config.step_samples / self.rate, 3),
                                   round(self.processed_samples / self.rate, 3), self.dropped_steps))
        return events

    def _from_diarizer(self, diarized: list, now_s: float | None) -> list[Event]:
        """The diarizer's events as the session's (``now_s`` None: at the end, no latency to report)."""
        events: list[Event] = []
        sid = self.config.session_id
        for event in diarized:
            if isinstance(event, FrameLabels):
                samples, arrived_s = self._chunks.pop(event.step_index)
                for run in route_by_labels(samples, event.start_sample, event.labels, self.config.frame_samples,
                                           event.valid_samples):
                    if self.live_attribution is not None:  # out once the sources cover it
                        events += self._speaker_audio(self.live_attribution.push_run(run, self._centroids))
                    else:
                        events.append(AudioOut(speaker_name(run.speaker), run.speaker, run.start_sample,
                                               run.samples))
                if self.live_attribution is not None:
                    self.live_attribution.labelled(event.start_sample + event.valid_samples)
                if now_s is not None:
                    events.append(StepLatency(now_s - arrived_s))
            elif isinstance(event, NewSpeaker):
                name = speaker_name(event.speaker)
                self.speakers.append(name)
                events.append(TrackAnnounced(name, event.speaker, track_url(sid, name), "speaker"))
            elif isinstance(event, (SpeakerStarted, SpeakerStopped)):
                kind = "started" if isinstance(event, SpeakerStarted) else "stopped"
                events.append(SpeakerActivity(speaker_name(event.speaker), event.speaker, kind, event.sample,
                                              round(event.sample / self.rate, 3), self._voice(event.speaker)))
            elif isinstance(event, SegmentClosed):
                self.closed_segments.append((event.start_sample, event.end_sample, event.speaker))
                events.append(TurnClosed(speaker_name(event.speaker), event.speaker, event.start_sample,
                                         event.end_sample, event.start_sample / self.rate,
                                         event.end_sample / self.rate, self._voice(event.speaker)))
                events += self._adaptation_due()
        return events

    def _centroids(self) -> dict[int, np.ndarray]:
        """The live speakers' centroids (row k: speaker k), what the sources are attributed by."""
        return dict(enumerate(np.asarray(self.diarizer.centroids())))

    def _speaker_audio(self, pieces: list) -> list[Event]:
        return [AudioOut(speaker_name(p.speaker), p.speaker, p.start_sample, p.samples) for p in pieces]

    def _embed_due(self) -> list[Event]:
        windows = self.live_attribution.embed_due() if self.live_attribution is not None else None
        return [SourcesEmbedDue(windows)] if windows is not None and not self.ended else []

    def _voice(self, speaker: int) -> str | None:
        return self.matcher.names.get(speaker) if self.matcher is not None else None

    def latest_adaptation_material(self) -> AdaptationMaterial | None:
        """When the session's round, queued behind other sessions' rounds, starts: the material it should train on
        now, if the session has more single-talker speech than when the round was due (None: keep what it had)."""
        if self.adaptation is None or self.ended:
            return None
        return self.adaptation.latest(self._segments_s())

    def _segments_s(self) -> list[dict]:
        rate = self.rate
        return [{"speaker": speaker_name(k), "start_s": a / rate, "end_s": b / rate}
                for a, b, k in self.closed_segments]

    def _adaptation_due(self) -> list[Event]:
        if self.adaptation is None or not self.adaptation.open or self.ended or self.input_ended:
            return []
        material = self.adaptation.due(self._segments_s())
        return [AdaptationDue(material)] if material is not None else []

    # --- internals: separation ---

    def _feed_separator(self, samples: np.ndarray, shed: bool) -> list[Event]:
        return self._chunk_separator(self._down.process(samples), shed)

    def _chunk_separator(self, at_separator_rate: np.ndarray, shed: bool) -> list[Event]:
        events: list[Event] = []
        for start, chunk in self._sep_chunker.push(at_separator_rate):
            events += self._submit_separation(start, chunk, shed)
        return events

    def _submit_separation(self, start: int, chunk: np.ndarray, shed: bool) -> list[Event]:
        sep = self.config.separator
        assert sep is not None
        index = self._sep.next_index
        self._sep.next_index += 1
        if shed or self._full(self._sep):
            if not shed:
                self._sep.dropped += 1  # a shed step is counted once, as input
            self._sep.pending.append(_Pending(index, start, chunk.size, True))
            at_rate = round(start * self.rate / sep.sample_rate_hz)
            return [StepDropped("input" if shed else "separation", at_rate,
                                round(chunk.size * self.rate / sep.sample_rate_hz)), *self._drain_separation()]
        self._sep.pending.append(_Pending(index, start, chunk.size, False))
        self._sep.in_flight += 1
        return [SeparateDue(index, start, chunk)]

    def _drain_separation(self) -> list[Event]:
        sep = self.config.separator
        events: list[Event] = []
        while self._sep.pending and self._sep.pending[0].dropped:
            gap = self._sep.pending.popleft()
            assert sep is not None
            silence = np.zeros((sep.num_outputs, gap.valid_samples), np.float32)
            events += self._separated(gap.start_sample - sep.lookahead_samples, silence, emit=False)
        return events

    def _separated(self, start_sample: int, sources: np.ndarray, emit: bool) -> list[Event]:
        """Sources back to the session's rate; a gap (``emit`` False) only moves the positions on."""
        events: list[Event] = []
        skip = max(0, -start_sample)  # the separator's look-ahead delays its first outputs
        for k, source in enumerate(sources):
            out = self._up[k].process(np.ascontiguousarray(source[skip:], np.float32))
            events += self._source_out(k, out, emit)
        return events

    def _source_out(self, k: int, samples: np.ndarray, emit: bool) -> list[Event]:
        if not samples.size:
            return []
        start = self._written[k]
        self._written[k] += samples.size
        events: list[Event] = [AudioOut(source_name(k), SOURCE_TRACK_BASE + k, start, samples)] if emit else []
        if self.live_attribution is not None:  # a gap counts as silence
            heard = samples if emit else np.zeros(samples.size, np.float32)
            events += self._speaker_audio(self.live_attribution.push_source(k, heard, self._centroids))
            events += self._embed_due()
        return events

    # --- the end ---

    def _maybe_finish(self) -> list[Event]:
        if not self.input_ended or self.final_requested or self.ended or not self.idle:
            return []
        self.final_requested = True
        events = self._from_diarizer(self.diarizer.finish(), None)  # look-ahead steps, the open turn
        if self.config.separator is not None:
            for k, up in enumerate(self._up):
                events += self._source_out(k, up.flush(), True)
        if self.live_attribution is not None:
            events += self._speaker_audio(self.live_attribution.flush(self._centroids))
        records, labels, live = self.snapshot()
        return events + [FinalTimelineDue(records, labels, live)]
