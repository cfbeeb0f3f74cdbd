"""The streaming diarizer of ``--diarizer pyannote`` on buffers whose local speakers and embeddings the test sets."""

import numpy as np
import pytest

from rtsep.diarize.pyannote_stream import (
    BufferLayout,
    CentroidClustering,
    PyannoteStreamConfig,
    PyannoteStreamDiarizer,
    embedding_weights,
    final_segments,
    name_after_live,
)
from rtsep.errors import ConfigError
from rtsep.stream.turns import FrameLabels, NewSpeaker, SegmentClosed, SpeakerStarted, StepAnalysis

FRAME = 512
STEP_FRAMES = 4
WINDOW_FRAMES = 16  # a buffer of four steps
LAYOUT = BufferLayout(FRAME, STEP_FRAMES, WINDOW_FRAMES)
VOICES = np.eye(4)[:3] * 3.0  # three voices with orthogonal embeddings (unnormalised on purpose)


def buffer_step(step_index: int, truth: np.ndarray, order: list[int], valid_frames: int | None = None
                ) -> StepAnalysis:
    """The step's buffer as a segmentation model would see it: ``truth`` (frames, voices) of the session, voice
    ``order[j]`` in local slot j; each local speaker's embedding is its voice's (NaN when it is silent)."""
    end = (step_index + 1) * STEP_FRAMES
    window = np.zeros((WINDOW_FRAMES, len(order)))
    for i in range(WINDOW_FRAMES):
        frame = end - WINDOW_FRAMES + i
        if 0 <= frame < truth.shape[0]:
            window[i] = truth[frame, order]
    embeddings = np.full((len(order), VOICES.shape[1]), np.nan)
    for j, voice in enumerate(order):
        if window[:, j].max() >= 0.5:
            embeddings[j] = VOICES[voice]
    valid = (valid_frames if valid_frames is not None else STEP_FRAMES) * FRAME
    return StepAnalysis(step_index, step_index * STEP_FRAMES * FRAME, valid, window[-STEP_FRAMES:].max(axis=1),
                        None, local_activity=window, local_embeddings=embeddings)


def run(truth: np.ndarray, orders: list[list[int]], config: PyannoteStreamConfig | None = None,
        max_speakers: int = 8) -> tuple[PyannoteStreamDiarizer, list[list]]:
    config = config or PyannoteStreamConfig(step_frames=STEP_FRAMES, new_speaker_distance=0.6)
    diarizer = PyannoteStreamDiarizer(config, LAYOUT, max_speakers)
    per_push = [diarizer.push(buffer_step(t, truth, orders[t % len(orders)]))
                for t in range(truth.shape[0] // STEP_FRAMES)]
    per_push.append(diarizer.finish())
    return diarizer, per_push


def labels_of(per_push: list[list]) -> np.ndarray:
    frames = [e for events in per_push for e in events if isinstance(e, FrameLabels)]
    return np.concatenate([f.labels for f in sorted(frames, key=lambda f: f.step_index)])


def two_talkers_with_overlap() -> np.ndarray:
    truth = np.zeros((48, 3))
    truth[0:28, 0] = 1.0  # voice 0 from the start ...
    truth[20:48, 1] = 1.0  # ... voice 1 joins at frame 20: frames 20..27 hold both
    return truth


def test_overlapped_frames_are_labelled_with_both_speakers():
    diarizer, per_push = run(two_talkers_with_overlap(), [[0, 1, 2]])
    events = [e for events in per_push for e in events]
    assert [e.speaker for e in events if isinstance(e, NewSpeaker)] == [0, 1]
    starts = {e.speaker: e.sample for e in events if isinstance(e, SpeakerStarted)}
    assert starts == {0: 0, 1: 20 * FRAME}
    turns = sorted((e.speaker, e.start_sample, e.end_sample) for e in events if isinstance(e, SegmentClosed))
    assert turns == [(0, 0, 28 * FRAME), (1, 20 * FRAME, 48 * FRAME)]  # they overlap on frames 20..27
    final = final_segments(diarizer.records[0], diarizer.config)
    assert final == [(0, 28 * FRAME, 0), (20 * FRAME, 48 * FRAME, 1)]


def test_consistent_local_speakers_map_to_one_global_speaker_whatever_their_slot():
    # the model's local slots change order from buffer to buffer (permutation-invariant training)
    diarizer, per_push = run(two_talkers_with_overlap(), [[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    events = [e for events in per_push for e in events]
    assert diarizer.clustering.num_speakers == 2
    assert len([e for e in events if isinstance(e, NewSpeaker)]) == 2
    labels = labels_of(per_push)
    assert set(labels[0:20].tolist()) == {0}
    assert set(labels[28:48].tolist()) == {1}
    for step, mapping in diarizer.mappings.items():
        order = [[0, 1, 2], [1, 0, 2], [2, 1, 0]][step % 3]
        for slot, voice in enumerate(order):
            if mapping[slot] >= 0:
                assert mapping[slot] == voice, (step, slot)


@pytest.mark.parametrize("latency_steps", [0, 1, 3])
def test_labels_of_a_step_come_latency_steps_after_it(latency_steps):
    config = PyannoteStreamConfig(step_frames=STEP_FRAMES, latency_steps=latency_steps)
    _, per_push = run(two_talkers_with_overlap(), [[0, 1, 2]], config)
    for push, events in enumerate(per_push[:-1]):
        decided = [e.step_index for e in events if isinstance(e, FrameLabels)]
        assert decided == ([push - latency_steps] if push >= latency_steps else [])
    assert [e.step_index for e in per_push[-1] if isinstance(e, FrameLabels)] == \
        list(range(len(per_push) - 1 - latency_steps, len(per_push) - 1))


def test_a_decided_frame_is_the_mean_of_the_buffers_that_covered_it():
    # voice 0 is heard in frames 0..3 by the first buffer only; the next buffer (in the wrong) hears nothing there
    truth = np.zeros((8, 3))
    truth[0:4, 0] = 1.0
    config = PyannoteStreamConfig(step_frames=STEP_FRAMES, latency_steps=1, onset=0.6, offset=0.6)
    diarizer = PyannoteStreamDiarizer(config, LAYOUT, 8)
    first = buffer_step(0, truth, [0, 1, 2])
    second = buffer_step(1, truth, [0, 1, 2])
    second_activity = second.local_activity.copy()
    second_activity[-8:-4, 0] = 0.0  # frames 0..3 as this buffer sees them
    second = StepAnalysis(1, second.start_sample, second.valid_samples, second.speech_probs, None,
                          local_activity=second_activity, local_embeddings=first.local_embeddings)
    diarizer.push(first)
    events = diarizer.push(second)
    labels = next(e for e in events if isinstance(e, FrameLabels))
    assert labels.step_index == 0 and set(labels.labels.tolist()) == {-1}  # mean 0.5 < onset 0.6
    assert np.allclose(diarizer.records[0].sums[0:4, 0] / diarizer.records[0].counts[0:4], 0.5)


def test_the_speaker_cap_holds_and_extra_voices_go_to_the_nearest_free_speaker():
    truth = np.zeros((24, 3))
    truth[0:8, 0] = 1.0
    truth[8:16, 1] = 1.0
    truth[16:24, 2] = 1.0
    diarizer, per_push = run(truth, [[0, 1, 2]], max_speakers=2)
    assert diarizer.clustering.num_speakers == 2
    assert set(labels_of(per_push).tolist()) <= {-1, 0, 1}


def test_gaps_and_the_padding_after_the_last_valid_sample_are_silence():
    truth = np.ones((8, 1))
    config = PyannoteStreamConfig(step_frames=STEP_FRAMES)
    diarizer = PyannoteStreamDiarizer(config, LAYOUT, 8)
    diarizer.push(buffer_step(0, truth, [0]))
    gap = StepAnalysis(1, STEP_FRAMES * FRAME, STEP_FRAMES * FRAME, np.zeros(STEP_FRAMES), None)
    events = diarizer.push(gap)
    assert set(next(e for e in events if isinstance(e, FrameLabels)).labels.tolist()) == {-1}
    partial = buffer_step(2, np.ones((12, 1)), [0], valid_frames=1)
    events = diarizer.push(partial) + diarizer.finish()
    labels = next(e for e in events if isinstance(e, FrameLabels)).labels
    assert labels.tolist() == [0, -1, -1, -1]
    ends = [e.end_sample for e in events if isinstance(e, SegmentClosed)]
    assert ends == [2 * STEP_FRAMES * FRAME + FRAME]


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="latency_steps"):
        PyannoteStreamDiarizer(PyannoteStreamConfig(step_frames=STEP_FRAMES, latency_steps=4), LAYOUT, 8)
    with pytest.raises(ConfigError, match="offset"):
        PyannoteStreamConfig(onset=0.3, offset=0.5)
    with pytest.raises(ConfigError, match="shorter than the step"):
        BufferLayout(FRAME, 8, 4)


def test_centroids_learn_only_from_local_speakers_active_enough():
    clustering = CentroidClustering(new_speaker_distance=0.6, update_min_activity=0.5, max_speakers=4)
    assert clustering.assign(np.array([[1.0, 0.0]]), np.array([1.0])).tolist() == [0]
    # a faint local speaker near voice 0 is labelled 0 but does not move its centroid
    assert clustering.assign(np.array([[1.0, 0.7]]), np.array([0.1])).tolist() == [0]
    assert np.allclose(clustering.centroids()[0], [1.0, 0.0])
    assert clustering.assign(np.array([[0.0, 1.0], [np.nan, np.nan]]), np.array([1.0, 0.0])).tolist() == [1, -1]


def test_final_labels_take_the_names_of_the_live_speakers_they_overlap():
    live = [(0, 100, 0), (100, 200, 1)]
    final = [(0, 90, "SPEAKER_01"), (95, 210, "SPEAKER_00"), (300, 400, "SPEAKER_02")]
    # at 10 Hz: 9 s and 10 s spoken together, well past the 1 s / 20 % a name needs
    assert name_after_live(final, live, rate_hz=10) == [(0, 90, 0), (95, 210, 1), (300, 400, 2)]
    assert name_after_live(final, [], rate_hz=10) == [(0, 90, 0), (95, 210, 1), (300, 400, 2)]
    # 9 samples at 16 kHz are far below the 1 s a name needs: fresh names after the live ones
    assert name_after_live(final, live) == [(0, 90, 2), (95, 210, 3), (300, 400, 4)]


def test_overlapped_frames_weigh_less_in_a_local_speakers_embedding():
    activity = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    weights = embedding_weights(activity, gamma=3.0, beta=10.0)
    assert weights[0, 0] == pytest.approx(1.0, abs=1e-3) and weights[2, 1] == pytest.approx(1.0, abs=1e-3)
    assert weights[1].tolist() == pytest.approx([0.125, 0.125])  # both active: half the share each, cubed
    assert weights[3].tolist() == [0.0, 0.0] and weights[0, 1] == 0.0
    assert np.array_equal(embedding_weights(activity, gamma=0.0, beta=10.0), activity)


def test_between_embeddings_local_speakers_follow_the_previous_buffers_by_their_activity():
    truth = two_talkers_with_overlap()
    orders = [[0, 1, 2], [1, 0, 2], [2, 1, 0]]
    config = PyannoteStreamConfig(step_frames=STEP_FRAMES, new_speaker_distance=0.6, embedding_interval_steps=3)
    diarizer = PyannoteStreamDiarizer(config, LAYOUT, 8)
    per_push = []
    for t in range(truth.shape[0] // STEP_FRAMES):
        step = buffer_step(t, truth, orders[t % 3])
        if t % 3:  # what the runtime sends between embeddings
            step = StepAnalysis(t, step.start_sample, step.valid_samples, step.speech_probs, None,
                                local_activity=step.local_activity, local_embeddings=None)
        per_push.append(diarizer.push(step))
    per_push.append(diarizer.finish())
    assert diarizer.clustering.num_speakers == 2
    for t, mapping in diarizer.mappings.items():
        for slot, voice in enumerate(orders[t % 3]):
            if mapping[slot] >= 0:
                assert mapping[slot] == voice, (t, slot)
    labels = labels_of(per_push)
    assert set(labels[0:20].tolist()) == {0} and set(labels[28:48].tolist()) == {1}
    # voice 1 first speaks in step 5 (frame 20), a step without embeddings: it follows nobody and waits for
    # step 6's embeddings, so its first buffer labels nothing for it
    assert diarizer.mappings[5][orders[5 % 3].index(1)] == -1
    assert diarizer.mappings[6][orders[6 % 3].index(1)] == 1
