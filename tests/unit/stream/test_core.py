"""SessionCore (rtsep.stream.core) without an event loop: runtime results in, typed events out."""

import numpy as np
import pytest

from rtsep.audio import AudioChunk
from rtsep.errors import RtsepError
from rtsep.stream.adaptation import AdaptationSchedule
from rtsep.stream.core import (
    AdaptationDue,
    AudioOut,
    CoreConfig,
    DiarizeDue,
    Failed,
    FinalTimeline,
    FinalTimelineDue,
    Finished,
    InputAudio,
    SeparateDue,
    SeparatorLayout,
    SessionCore,
    SpeakerActivity,
    StatsDue,
    StepDropped,
    StepLatency,
    TrackAnnounced,
    TurnClosed,
)
from rtsep.stream.session import ChunkReady
from rtsep.stream.turns import (
    SOURCE_TRACK_BASE,
    FrameLabels,
    NewSpeaker,
    SegmentClosed,
    SpeakerStarted,
    SpeakerStopped,
    StepAnalysis,
)

STEP = 4096
FRAME = 512


class ScriptedDiarizer:
    """Speaker ``speaker_of(step)`` talks through a step with speech (probability >= 0.5 in its first frame);
    every step's frames are labelled with it; a step without speech closes the turn."""

    def __init__(self, speaker_of=lambda index: 0) -> None:
        self.speaker_of = speaker_of
        self.records: list = []
        self.pushed: list[StepAnalysis] = []
        self.known: set[int] = set()
        self.active: tuple[int, int] | None = None  # (speaker, start)
        self.finished = False

    @property
    def embedding_labels(self) -> dict[int, int]:
        return {r: 0 for r in range(len(self.records))}

    def push(self, step: StepAnalysis) -> list:
        self.pushed.append(step)
        self.records.append(step.step_index)
        events: list = []
        frames = len(step.speech_probs)
        end = step.start_sample + step.valid_samples
        if step.speech_probs[0] >= 0.5:
            speaker = self.speaker_of(step.step_index)
            if speaker not in self.known:
                self.known.add(speaker)
                events.append(NewSpeaker(speaker))
            if self.active is not None and self.active[0] != speaker:
                events += self._close(step.start_sample)
            if self.active is None:
                self.active = (speaker, step.start_sample)
                events.append(SpeakerStarted(speaker, step.start_sample))
            labels = np.full(frames, speaker)
        else:
            if self.active is not None:
                events += self._close(step.start_sample)
            labels = np.full(frames, -1)
        events.append(FrameLabels(step.step_index, step.start_sample, step.valid_samples, labels))
        self._end = end
        return events

    def _close(self, at: int) -> list:
        speaker, start = self.active
        self.active = None
        return [SpeakerStopped(speaker, at), SegmentClosed(speaker, start, at)]

    def finish(self) -> list:
        self.finished = True
        return self._close(self._end) if self.active is not None else []


def step(i: int, value: float = 0.1, valid: int = STEP) -> ChunkReady:
    return ChunkReady(AudioChunk(np.full(STEP, value, np.float32), i * STEP, 16000), valid)


def analysis(due: DiarizeDue, speech: bool = True) -> StepAnalysis:
    return StepAnalysis(due.step_index, due.start_sample, due.valid_samples,
                        np.full(STEP // FRAME, 0.9 if speech else 0.0, np.float32), None)


def core(**overrides) -> tuple[SessionCore, ScriptedDiarizer]:
    diarizer = overrides.pop("diarizer", None) or ScriptedDiarizer()
    adaptation = overrides.pop("adaptation", None)
    config = CoreConfig(session_id="s1", step_samples=STEP, frame_samples=FRAME, embedding_window_samples=STEP * 2,
                        **overrides)
    return SessionCore(config, diarizer, adaptation), diarizer


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def push(c: SessionCore, *args, **kwargs) -> list:
    """``c.push_step`` without its InputAudio (the input to store, tested on its own below)."""
    return [e for e in c.push_step(*args, **kwargs) if not isinstance(e, InputAudio)]


def test_every_step_s_valid_input_is_stored_once_as_the_input_track():
    c, _ = core()
    events = c.push_step(step(0, 0.25), 0.0) + c.push_step(step(1, 0.5, valid=100), 0.0, shed=True)
    stored = of(events, InputAudio)
    assert [(e.start_sample, e.samples.size) for e in stored] == [(0, STEP), (STEP, 100)]
    np.testing.assert_array_equal(stored[1].samples, np.full(100, 0.5, np.float32))
    assert not of(c.push_step(step(2, valid=0), 0.0), InputAudio)  # nothing valid: nothing to store


def test_a_step_goes_to_the_runtime_and_its_result_becomes_audio_labels_and_a_turn():
    c, _ = core()
    (due,) = push(c, step(0), now_s=10.0)
    assert isinstance(due, DiarizeDue) and (due.step_index, due.start_sample, due.valid_samples) == (0, 0, STEP)
    assert due.window.shape == (2 * STEP,) and np.all(due.window[:STEP] == 0) and np.all(due.window[STEP:] == 0.1)
    events = c.diarization_result(analysis(due), now_s=10.25)
    assert of(events, TrackAnnounced) == [TrackAnnounced("SPEAKER_00", 0, "/v1/sessions/s1/tracks/SPEAKER_00.wav",
                                                         "speaker")]
    assert of(events, SpeakerActivity) == [SpeakerActivity("SPEAKER_00", 0, "started", 0, 0.0)]
    (audio,) = of(events, AudioOut)
    assert (audio.track, audio.index, audio.start_sample, audio.samples.size) == ("SPEAKER_00", 0, 0, STEP)
    assert of(events, StepLatency) == [StepLatency(0.25)]
    (due,) = push(c, step(1), now_s=11.0)
    events = c.diarization_result(analysis(due, speech=False), now_s=11.5)
    assert of(events, TurnClosed) == [TurnClosed("SPEAKER_00", 0, 0, STEP, 0.0, STEP / 16000)]
    assert not of(events, AudioOut) and c.speakers == ["SPEAKER_00"] and c.closed_segments == [(0, STEP, 0)]


def test_results_are_taken_strictly_in_order():
    c, _ = core()
    first = push(c, step(0), 0.0)[0]
    second = push(c, step(1), 0.0)[0]
    with pytest.raises(RuntimeError, match="out of order"):
        c.diarization_result(analysis(second), 0.0)
    assert c.diarization_result(analysis(first), 0.0)


def test_drop_policy_marks_gaps_and_later_positions_do_not_move():
    c, diarizer = core(overflow="drop", max_in_flight_steps=2)
    events = [e for i in range(5) for e in push(c, step(i), 0.0)]
    dues = of(events, DiarizeDue)
    assert [d.start_sample for d in dues] == [0, STEP]
    assert of(events, StepDropped) == [StepDropped("diarization", i * STEP, STEP) for i in (2, 3, 4)]
    assert c.dropped_steps == 3 and c.has_room()  # drop never waits
    out = c.diarization_result(analysis(dues[0]), 0.0) + c.diarization_result(analysis(dues[1]), 0.0)
    # the dropped steps took their turn after the submitted ones, as silence, at their own positions
    assert [(s.step_index, s.start_sample) for s in diarizer.pushed] == [(i, i * STEP) for i in range(5)]
    assert all(not s.speech_probs.any() for s in diarizer.pushed[2:])
    assert [a.start_sample for a in of(out, AudioOut)] == [0, STEP]  # nothing routed into the gap
    assert c.processed_samples == 5 * STEP
    (later,) = push(c, step(5), 0.0)
    assert later.start_sample == 5 * STEP and later.step_index == 5


def test_backpressure_has_no_room_at_the_bound_and_drops_nothing():
    c, _ = core(overflow="backpressure", max_in_flight_steps=2)
    first = push(c, step(0), 0.0)[0]
    assert c.has_room()
    push(c, step(1), 0.0)
    assert not c.has_room()
    c.diarization_result(analysis(first), 0.0)
    assert c.has_room() and c.dropped_steps == 0


def test_a_step_shed_by_the_transport_is_a_gap_that_needs_no_room():
    c, diarizer = core(overflow="backpressure", max_in_flight_steps=1)
    first = push(c, step(0), 0.0)[0]
    assert not c.has_room()
    assert push(c, step(1), 0.0, shed=True) == [StepDropped("input", STEP, STEP)]
    (third,) = push(c, step(2), 0.0)[-1:]
    assert isinstance(third, DiarizeDue) and third.start_sample == 2 * STEP
    c.diarization_result(analysis(first), 0.0)
    assert [s.start_sample for s in diarizer.pushed] == [0, STEP]  # the shed step followed, as silence
    assert c.dropped_steps == 1


def separating(**overrides):
    layout = SeparatorLayout(sample_rate_hz=16000, step_samples=2048, num_outputs=2, lookahead_samples=512)
    return core(separator=layout, **overrides)


def test_separated_sources_come_out_at_their_positions_after_the_lookahead():
    c, _ = separating()
    assert [(t.name, t.index, t.kind) for t in c.announce()] == [("source_0", SOURCE_TRACK_BASE, "source"),
                                                                ("source_1", SOURCE_TRACK_BASE + 1, "source")]
    events = push(c, step(0), 0.0)
    seps = of(events, SeparateDue)
    assert [(s.step_index, s.start_sample, s.samples.size) for s in seps] == [(0, 0, 2048), (1, 2048, 2048)]
    out = []
    for s in seps:
        sources = np.stack([np.full(2048, 0.5, np.float32), np.full(2048, -0.5, np.float32)])
        out += c.separation_result(s.step_index, s.start_sample - 512, sources)
    audio = [(a.track, a.start_sample, a.samples.size) for a in of(out, AudioOut)]
    assert audio == [("source_0", 0, 1536), ("source_1", 0, 1536), ("source_0", 1536, 2048),
                     ("source_1", 1536, 2048)]


def test_a_dropped_separator_step_is_a_gap_in_the_sources():
    c, _ = separating(overflow="drop", max_in_flight_steps=1)
    events = push(c, step(0), 0.0)
    seps = of(events, SeparateDue)
    assert len(seps) == 1 and of(events, StepDropped) == [StepDropped("separation", 2048, 2048)]
    sources = np.ones((2, 2048), np.float32)
    out = c.separation_result(0, -512, sources)
    assert [(a.start_sample, a.samples.size) for a in of(out, AudioOut) if a.index == SOURCE_TRACK_BASE] == [(0, 1536)]
    later = of(push(c, step(1), 0.0), SeparateDue)[0]
    out = c.separation_result(later.step_index, later.start_sample - 512, sources)
    # the gap's 2048 samples are skipped, not closed up: the next source audio starts after them
    assert [a.start_sample for a in of(out, AudioOut) if a.index == SOURCE_TRACK_BASE] == [1536 + 2048]


def test_the_end_comes_once_every_result_is_in():
    c, diarizer = separating()
    events = push(c, step(0), 0.0)
    due, seps = of(events, DiarizeDue)[0], of(events, SeparateDue)
    assert not of(c.end_input(1.0), FinalTimelineDue)  # results outstanding
    out = c.diarization_result(analysis(due), 1.0)
    for s in seps:
        out += c.separation_result(s.step_index, s.start_sample - 512, np.zeros((2, 2048), np.float32))
    (final,) = of(out, FinalTimelineDue)
    assert diarizer.finished and final.records == [0] and of(out, TurnClosed)  # the open turn was closed
    assert c.final_timeline_ready({"segments": []}) == [FinalTimeline({"segments": []}),
                                                        Finished(STEP / 16000, ["SPEAKER_00"])]
    assert c.finished and c.diarization_result(analysis(due), 2.0) == []


def test_end_without_pending_results_asks_for_the_final_timeline_at_once():
    c, _ = core()
    assert of(c.end_input(0.0), FinalTimelineDue)
    assert c.end_input(0.0) == []  # once


def test_a_failure_is_reported_once_and_later_results_are_ignored():
    c, _ = core()
    due = push(c, step(0), 0.0)[0]
    error = RtsepError("internal error: the model broke")
    assert c.fail(error) == [Failed(error)] and c.fail(RtsepError("again")) == []
    assert c.diarization_result(analysis(due), 0.0) == [] and c.ended
    assert c.end_input(0.0) == [] and c.final_timeline_ready({}) == []


def test_stats_are_due_every_interval_of_processed_audio():
    c, _ = core(stats_interval_s=STEP * 2 / 16000, overflow="drop", max_in_flight_steps=1)
    stats = []
    for i in range(4):
        events = push(c, step(i), 0.0)
        for due in of(events, DiarizeDue):
            events += c.diarization_result(analysis(due, speech=False), 0.0)
        stats += of(events, StatsDue)
    assert [s.processed_s for s in stats] == [round(2 * STEP / 16000, 3), round(4 * STEP / 16000, 3)]


def test_adaptation_is_due_when_two_talkers_have_enough_speech_and_once_at_a_time():
    class Limits:
        min_turn_s = 0.0
        edge_trim_s = 0.0

    schedule = AdaptationSchedule(16000, Limits(), min_speech_s=STEP * 2 / 16000 - 0.01, max_rounds=2)
    # steps 0-1 talker 0, 2 silence, 3-4 talker 1, 5 silence, ...
    pattern = {0: 0, 1: 0, 3: 1, 4: 1, 6: 0, 7: 0, 8: 0, 9: 0, 11: 1, 12: 1, 13: 1, 14: 1}
    c, _ = separating(adaptation=schedule, diarizer=ScriptedDiarizer(lambda i: pattern[i]))
    due_at = []
    for i in range(16):
        events = push(c, step(i), 0.0)
        for s in of(events, SeparateDue):
            events += c.separation_result(s.step_index, s.start_sample - 512, np.zeros((2, 2048), np.float32))
        for d in of(events, DiarizeDue):
            events += c.diarization_result(analysis(d, speech=i in pattern), 0.0)
        if of(events, AdaptationDue):
            due_at.append(i)
            material = of(events, AdaptationDue)[0].material
            assert set(material.spans) == {"SPEAKER_00", "SPEAKER_01"}
        if i == 10:
            c.adaptation_done(adopted=True)
    assert due_at == [5, 15]  # not again while the first round runs; again once it is done and speech doubled
    assert c.adaptations == 1


def test_a_round_that_waited_trains_on_the_session_s_latest_material():
    class Limits:
        min_turn_s = 0.0
        edge_trim_s = 0.0

    schedule = AdaptationSchedule(16000, Limits(), min_speech_s=STEP * 2 / 16000 - 0.01)
    pattern = {0: 0, 1: 0, 3: 1, 4: 1, 6: 0, 7: 0, 8: 0, 9: 0}
    c, _ = separating(adaptation=schedule, diarizer=ScriptedDiarizer(lambda i: pattern[i]))
    assert c.latest_adaptation_material() is None  # no round is out
    latest = {}
    for i in range(11):
        events = push(c, step(i), 0.0)
        for s in of(events, SeparateDue):
            events += c.separation_result(s.step_index, s.start_sample - 512, np.zeros((2, 2048), np.float32))
        for d in of(events, DiarizeDue):
            events += c.diarization_result(analysis(d, speech=i in pattern), 0.0)
        if of(events, AdaptationDue):
            due = of(events, AdaptationDue)[0].material
            assert c.latest_adaptation_material() is None  # at once: nothing more than the round has
        latest[i] = c.latest_adaptation_material()
    assert all(latest[i] is None for i in range(5, 10))  # talker 0's second turn is still open
    seconds = {spk: sum(b - a for a, b in spans) for spk, spans in latest[10].spans.items()}
    assert seconds["SPEAKER_00"] > sum(b - a for a, b in due.spans["SPEAKER_00"]) + 0.5  # its 4-step turn counts
    assert c.latest_adaptation_material() is None  # taken: no more again until the session says more


def test_no_adaptation_after_the_input_ended():
    class Limits:
        min_turn_s = 0.0
        edge_trim_s = 0.0

    schedule = AdaptationSchedule(16000, Limits(), min_speech_s=0.1)
    pattern = {0: 0, 1: 1}
    c, _ = separating(adaptation=schedule, diarizer=ScriptedDiarizer(lambda i: pattern[i]))
    events = push(c, step(0), 0.0) + push(c, step(1), 0.0)
    out = c.end_input(0.0)
    for s in of(events + out, SeparateDue):
        out += c.separation_result(s.step_index, s.start_sample - 512, np.zeros((2, 2048), np.float32))
    for d in of(events, DiarizeDue):
        out += c.diarization_result(analysis(d), 0.0)
    assert of(out, TurnClosed) and not of(out, AdaptationDue)


class CentroidDiarizer(ScriptedDiarizer):
    """A scripted diarizer whose speakers' centroids are set by the test."""

    def __init__(self, speaker_of, centroids) -> None:
        super().__init__(speaker_of)
        self.table = centroids

    def centroids(self) -> np.ndarray:
        return self.table[: len(self.known)]


def test_matched_speakers_are_named_and_their_later_events_carry_the_name():
    from rtsep.stream.core import SpeakerNamed
    from rtsep.stream.naming import VoiceMatcher, VoicesConfig

    e = np.eye(4)
    diarizer = CentroidDiarizer(lambda i: 0 if i < 2 else 1, np.stack([e[0], 0.6 * e[1] + 0.8 * e[2]]))
    matcher = VoiceMatcher({"alice": e[0], "bob": e[1]}, VoicesConfig(min_similarity=0.5))
    config = CoreConfig(session_id="s1", step_samples=STEP, frame_samples=FRAME, embedding_window_samples=STEP * 2)
    c = SessionCore(config, diarizer, None, matcher)
    with_embedding = lambda due: StepAnalysis(due.step_index, due.start_sample, due.valid_samples,  # noqa: E731
                                              np.full(STEP // FRAME, 0.9, np.float32), e[0])
    (due,) = of(c.push_step(step(0), 0.0), DiarizeDue)
    events = c.diarization_result(with_embedding(due), 0.1)
    assert of(events, SpeakerNamed) == [SpeakerNamed("SPEAKER_00", 0, "alice", 1.0)]
    # named before its turn is reported: the activity already carries the name
    assert events.index(of(events, SpeakerNamed)[0]) < events.index(of(events, SpeakerActivity)[0])
    assert of(events, SpeakerActivity) == [SpeakerActivity("SPEAKER_00", 0, "started", 0, 0.0, "alice")]
    (due,) = of(c.push_step(step(1), 0.2), DiarizeDue)
    assert of(c.diarization_result(analysis(due), 0.3), SpeakerNamed) == []  # no embedding, no update
    (due,) = of(c.push_step(step(2), 0.4), DiarizeDue)
    events = c.diarization_result(with_embedding(due), 0.5)  # speaker 1 appears: 0.6 like bob, below alice's 1.0
    assert of(events, SpeakerNamed) == [SpeakerNamed("SPEAKER_01", 1, "bob", 0.6)]
    assert of(events, TurnClosed)[0].voice == "alice"
    assert c.names == {"SPEAKER_00": "alice", "SPEAKER_01": "bob"}


def test_without_a_matcher_nothing_is_named():
    c, _ = core()
    (due,) = of(c.push_step(step(0), 0.0), DiarizeDue)
    events = c.diarization_result(analysis(due), 0.1)
    assert of(events, SpeakerActivity)[0].voice is None and c.names == {}


def test_input_pushed_as_it_arrives_reaches_the_separator_before_its_step_is_complete():
    c, _ = separating()
    block = np.full(1024, 0.1, np.float32)
    assert of(c.push_samples(0, block), SeparateDue) == []  # half a separator step: nothing due yet
    seps = of(c.push_samples(1024, block), SeparateDue)
    assert [(s.step_index, s.start_sample) for s in seps] == [(0, 0)]
    c.push_samples(2048, np.full(1024, 0.1, np.float32))
    # the step brings the same samples again: the separator only hears what push_samples did not give it
    seps = of(push(c, step(0), 0.0), SeparateDue)
    assert [(s.step_index, s.start_sample, s.samples.size) for s in seps] == [(1, 2048, 2048)]
    assert c._separator_fed == STEP


def test_early_input_gives_the_separator_exactly_what_the_steps_alone_give_it():
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(3 * STEP).astype(np.float32) * 0.1
    steps = [ChunkReady(AudioChunk(audio[i * STEP:(i + 1) * STEP], i * STEP, 16000), STEP) for i in range(3)]
    by_steps, _ = separating()
    heard_by_steps = [s.samples for st in steps for s in of(push(by_steps, st, 0.0), SeparateDue)]
    early, _ = separating()
    heard_early = []
    cuts = [0, 700, 1500, 4096, 5000, 9000, 3 * STEP]
    for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
        heard_early += [s.samples for s in of(early.push_samples(a, audio[a:b]), SeparateDue)]
        for st in steps:  # a step follows the block that completes it
            if st.chunk.start_sample + STEP == b:
                heard_early += [s.samples for s in of(push(early, st, 0.0), SeparateDue)]
    assert len(heard_early) == len(heard_by_steps) == 6
    for x, y in zip(heard_early, heard_by_steps):
        np.testing.assert_array_equal(x, y)


def test_early_input_must_not_leave_a_hole():
    c, _ = separating()
    c.push_samples(0, np.zeros(100, np.float32))
    with pytest.raises(RuntimeError, match="from 200"):
        c.push_samples(200, np.zeros(100, np.float32))
    c.push_samples(50, np.zeros(100, np.float32))  # an overlap is skipped
    assert c._separator_fed == 150


def test_without_a_separator_early_input_is_ignored():
    c, _ = core()
    assert c.push_samples(0, np.zeros(100, np.float32)) == []


def test_a_separated_frame_leaves_at_most_one_client_message_after_its_last_sample():
    """The input machine and the core together, on message counts rather than a clock: with every separation
    answered at once, the source audio up to sample e is out by the message after the one that brought e (the
    3 ms the rate converter holds back); before SamplesReady and the low-delay converter, up to 24 messages."""
    import json

    from rtsep.stream.session import SamplesReady, StreamConfig, StreamSession

    layout = SeparatorLayout(sample_rate_hz=8000, step_samples=800, num_outputs=2, lookahead_samples=16)
    c, _ = core(separator=layout)
    stream = StreamSession(StreamConfig(model_sample_rate_hz=16000, step_samples=STEP, emit_samples=True))
    stream.receive_text(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_f32le"}))
    audio = np.random.default_rng(4).standard_normal(16000 * 3).astype(np.float32) * 0.1
    message = 320  # 20 ms
    lags = []
    for k, i in enumerate(range(0, audio.size, message)):
        out = []
        for event in stream.receive_samples(audio[i:i + message]):
            if isinstance(event, SamplesReady):
                out += c.push_samples(event.start_sample, event.samples)
            elif isinstance(event, ChunkReady):
                out += c.push_step(event, 0.0)
        while out:
            event = out.pop(0)
            if isinstance(event, SeparateDue):
                out += c.separation_result(event.step_index, event.start_sample - 16,
                                           np.stack([event.samples, event.samples]))
            elif isinstance(event, AudioOut) and event.index == SOURCE_TRACK_BASE:
                last = event.start_sample + event.samples.size - 1
                lags.append(k - last // message)  # messages since the one that brought its last sample
    assert len(lags) >= 25 and max(lags) <= 1
