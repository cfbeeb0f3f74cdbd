"""The steps of the final timeline (rtsep.diarize.offline), each on hand-made embeddings and turns."""

import numpy as np
import pytest

from rtsep.diarize.offline import (
    average_neighbours,
    drop_short,
    fill_gaps,
    final_segments,
    fold_small,
    frame_speakers,
    recluster,
    session_samples,
    spectral_cluster,
    speech_frames,
    turns_from_frames,
    viterbi_labels,
)
from rtsep.diarize.online import DiarizationConfig, StepRecord
from rtsep.errors import ConfigError

RATE = 16000


def voices(n_per: list[int], dim: int = 16, noise: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of len(n_per) well-separated talkers (random directions plus noise), and the true ids."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(n_per), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = np.concatenate([np.full(n, k) for k, n in enumerate(n_per)])
    return centres[truth] + noise * rng.normal(size=(len(truth), dim)) / np.sqrt(dim), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_fill_gaps_joins_a_speakers_short_pauses_even_across_another_speaker():
    segments = [(0, 100, 0), (130, 200, 0), (400, 500, 0), (200, 240, 1), (240, 260, 0)]
    filled = fill_gaps(segments, 50)
    # 0: 0-100 and 130-200 join (gap 30), 200-... : 240-260 is 40 after 200 -> joins too; 400 is 140 after 260
    assert filled == [(0, 260, 0), (200, 240, 1), (400, 500, 0)]
    assert fill_gaps(segments, 0) == sorted(segments)  # nothing filled without a gap setting


def test_fill_gaps_keeps_a_gap_as_long_as_the_setting():
    assert fill_gaps([(0, 10, 0), (20, 30, 0)], 10) == [(0, 10, 0), (20, 30, 0)]
    assert fill_gaps([(0, 10, 0), (20, 30, 0)], 11) == [(0, 30, 0)]


def test_drop_short_removes_only_turns_under_the_minimum():
    assert drop_short([(0, 10, 0), (20, 25, 1), (30, 36, 0)], 6) == [(0, 10, 0), (30, 36, 0)]


def test_turns_from_frames_joins_a_label_over_short_holes_only():
    starts = np.array([0, 10, 20, 50, 60, 70])
    ends = starts + 10
    labels = np.array([0, 0, 1, 1, 1, 0])
    # 20-30 then 50-60: a 20-sample hole, joined at max gap 20, not at 19
    assert turns_from_frames(starts, ends, labels, 20) == [(0, 20, 0), (20, 70, 1), (70, 80, 0)]
    assert turns_from_frames(starts, ends, labels, 19) == [(0, 20, 0), (20, 30, 1), (50, 70, 1), (70, 80, 0)]


def test_speech_frames_lists_speech_frames_clipped_to_valid_audio():
    speech = np.array([True, False, True, True])
    records = [StepRecord(0, 0, 40, speech, None), StepRecord(1, 40, 25, speech, None)]
    starts, ends = speech_frames(records, 10)
    # step 1 is valid for 25 samples: its frame at 60-70 is cut to 60-65 and the one at 70 is past the end
    assert starts.tolist() == [0, 20, 30, 40, 60]
    assert ends.tolist() == [10, 30, 40, 50, 65]


def test_average_neighbours_averages_within_the_radius_and_not_across_holes():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    steps = np.array([0, 1, 2, 10])
    out = average_neighbours(emb, steps, 1)
    assert np.allclose(out[0], [np.sqrt(0.5), np.sqrt(0.5)])  # steps 0 and 1
    assert np.allclose(out[1], unit([2.0, 1.0]))  # steps 0, 1, 2
    assert np.allclose(out[3], [0.0, 1.0])  # step 10 has no neighbour within 1 step
    assert np.allclose(average_neighbours(emb, steps, 0), emb)


def unit(v):
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def test_fold_small_moves_a_tiny_cluster_into_its_nearest_large_one():
    unit_emb = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1], [0.2, 0.98]])
    ids = np.array([0, 0, 0, 2, 2, 2, 1])
    assert fold_small(unit_emb, ids, 2).tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert fold_small(unit_emb, ids, 1).tolist() == ids.tolist()


@pytest.mark.parametrize("talkers", [2, 3, 5])
def test_spectral_clustering_finds_the_talkers_and_their_count(talkers):
    emb, truth = voices([40 + 7 * k for k in range(talkers)])
    ids = spectral_cluster(emb / np.linalg.norm(emb, axis=1, keepdims=True), max_speakers=8, pruning=0.2)
    assert len(set(ids.tolist())) == talkers
    assert same_partition(ids, truth)


def test_spectral_clustering_keeps_at_least_min_neighbours_edges_per_embedding():
    emb, truth = voices([45, 45], noise=0.6, seed=1)
    unit_emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    # one edge per embedding cuts the graph into small pieces: the talkers are not found
    assert not same_partition(spectral_cluster(unit_emb, 8, pruning=0.01), truth)
    ids = spectral_cluster(unit_emb, 8, pruning=0.01, min_neighbours=20)
    assert same_partition(ids, truth)


def test_spectral_clustering_of_one_talker_is_one_cluster():
    emb, _ = voices([60])
    assert set(spectral_cluster(emb / np.linalg.norm(emb, axis=1, keepdims=True), 8, 0.2).tolist()) == {0}


@pytest.mark.parametrize("method", ["ahc", "spectral"])
def test_recluster_finds_the_talkers_with_either_method_and_respects_max_speakers(method):
    emb, truth = voices([30, 50, 40])
    ids = recluster(emb, 0.32, 8, 5, method=method)
    assert same_partition(ids, truth)
    assert len(set(recluster(emb, 0.32, 2, 5, method=method).tolist())) <= 2
    with pytest.raises(ValueError, match="clustering method"):
        recluster(emb, 0.32, 8, 5, method="kmeans")


def test_viterbi_stays_through_a_short_dip_and_follows_a_long_change():
    scores = np.zeros((20, 2))
    scores[:, 0] = 1.0
    scores[5:7] = [0.0, 1.0]  # 2 frames favour label 1: worth 4 < 2 switches at 3 each
    scores[12:] = [0.0, 1.0]  # 8 frames favour label 1: worth the one switch
    path = viterbi_labels(scores, 3.0)
    assert path.tolist() == [0] * 12 + [1] * 8
    assert viterbi_labels(scores, 0.0).tolist() == np.argmax(scores, axis=1).tolist()


def test_frame_speakers_nearest_embedding_or_smoothed_path():
    unit_emb = np.array([[1.0, 0.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    ids = np.array([0, 0, 1, 0, 1, 1])
    centres = np.array([0.0, 100, 200, 300, 400, 500])
    frames = np.array([10.0, 190, 260, 400, 480, 500])
    assert frame_speakers(frames, centres, unit_emb, ids, None).tolist() == [0, 1, 0, 1, 1, 1]
    # with a switch penalty the lone frame on embedding 2 (nearer speaker 1's centroid than speaker 0's by less
    # than two switches cost) stays with speaker 0; the last three frames are worth one switch
    assert frame_speakers(frames, centres, unit_emb, ids, 0.5).tolist() == [0, 0, 0, 1, 1, 1]


def test_final_segments_fills_a_pause_and_names_after_the_live_speakers():
    # (the clustering is not what this test is about: plain ahc on identical embeddings)
    base = dict(final_min_cluster_steps=1, final_clustering="ahc", final_average_radius_steps=0)
    cfg = DiarizationConfig(final_min_gap_s=0.5, **base)
    step = cfg.step_samples
    a, b = unit([1.0, 0.0, 0.0]), unit([0.0, 1.0, 0.0])
    speech_all = np.ones(cfg.frames_per_step, bool)
    pause = np.zeros(cfg.frames_per_step, bool)
    # talker A for 8 steps with a one-step (0.256 s) pause in the middle, then talker B for 8 steps
    plan = [(a, speech_all)] * 4 + [(None, pause)] + [(a, speech_all)] * 4 + [(b, speech_all)] * 8
    records = [StepRecord(i, i * step, step, sp, emb) for i, (emb, sp) in enumerate(plan)]
    live = [(0, 9 * step, 1), (9 * step, 17 * step, 0)]
    segments = final_segments(records, {0: 1, 10: 0}, cfg, max_speakers=4, live_segments=live)
    speakers = {k for _, _, k in segments}
    assert speakers == {0, 1}
    turns_of_a = [(s, e) for s, e, k in segments if k == 1]
    assert len(turns_of_a) == 1 and turns_of_a[0][0] == 0  # the pause inside A's turn is filled
    unfilled = final_segments(records, {0: 1, 10: 0}, DiarizationConfig(final_min_gap_s=0, **base), 4, live)
    assert len([1 for _, _, k in unfilled if k == 1]) == 2


def test_final_segments_with_the_defaults_finds_three_talkers_taking_turns():
    cfg = DiarizationConfig(final_short_session_s=0)  # (23 s: the defaults' spectral path, not the short-session one)
    step = cfg.step_samples
    emb, truth = voices([30] * 3, dim=32, noise=0.3, seed=3)
    # six turns of 15 steps each: A B C A B C
    order = np.concatenate([np.flatnonzero(truth == k)[:15] if i < 3 else np.flatnonzero(truth == k)[15:]
                            for i, k in enumerate((0, 1, 2, 0, 1, 2))])
    speech = np.ones(cfg.frames_per_step, bool)
    records = [StepRecord(i, i * step, step, speech, emb[j]) for i, j in enumerate(order)]
    segments = final_segments(records, {}, cfg, max_speakers=8)
    assert len({k for _, _, k in segments}) == 3
    # a frame's speaker is its step's talker except within an embedding window of each change
    window = cfg.embedding_window_samples
    talker_at = truth[order]
    names: dict[int, set] = {}
    for start, end, k in segments:
        middle = (start + end) // 2
        names.setdefault(int(talker_at[middle // step]), set()).add(k)
    assert all(len(v) == 1 for v in names.values()) and len(names) == 3
    changes = [s for s, _, _ in segments[1:]]
    assert all(min(abs(c - 15 * i * step) for i in range(1, 6)) <= window for c in changes)


def three_talker_records(cfg: DiarizationConfig) -> list[StepRecord]:
    step = cfg.step_samples
    emb, truth = voices([30] * 3, dim=32, noise=0.3, seed=3)
    order = np.concatenate([np.flatnonzero(truth == k)[:15] if i < 3 else np.flatnonzero(truth == k)[15:]
                            for i, k in enumerate((0, 1, 2, 0, 1, 2))])
    speech = np.ones(cfg.frames_per_step, bool)
    return [StepRecord(i, i * step, step, speech, emb[j]) for i, j in enumerate(order)]


def test_a_session_shorter_than_final_short_session_s_is_clustered_by_ahc_without_averaging():
    # an ahc threshold that merges everything tells which clustering ran
    records = three_talker_records(DiarizationConfig())
    length_s = session_samples(records) / 16000
    assert length_s == pytest.approx(90 * 0.256)
    long_enough = DiarizationConfig(final_distance_threshold=2.0, final_short_session_s=length_s)
    assert len({k for _, _, k in final_segments(records, {}, long_enough, 8)}) == 3  # spectral
    too_short = DiarizationConfig(final_distance_threshold=2.0, final_short_session_s=length_s + 0.1)
    assert len({k for _, _, k in final_segments(records, {}, too_short, 8)}) == 1  # ahc


def test_final_settings_are_validated():
    with pytest.raises(ConfigError, match="final_clustering"):
        DiarizationConfig(final_clustering="kmeans")
    with pytest.raises(ConfigError, match="final_min_gap_s"):
        DiarizationConfig(final_min_gap_s=-1)
    with pytest.raises(ConfigError, match="final_switch_penalty"):
        DiarizationConfig(final_switch_penalty=-0.5)
