"""The overlap-aware final timeline's pure parts: detector frames -> regions, and a second speaker inside them."""

import numpy as np
import pytest

from rtsep.diarize.overlap import (
    OverlapConfig,
    add_second_speakers,
    detect_overlaps,
    merge_segments,
    overlap_regions,
)
from rtsep.errors import ConfigError

NO_EMBEDDINGS = (np.zeros((0, 3)), np.zeros(0), [])


def test_regions_follow_the_frames_over_the_threshold_merge_close_ones_and_drop_short_ones():
    p = np.array([0, 0.9, 0.9, 0, 0.8, 0, 0, 0, 0.7, 0, 0, 0, 0, 0.6, 0.6, 0.6])
    # frames of 10 samples: [10, 30), [40, 50) one frame apart, [80, 90) three apart, [130, 160)
    assert overlap_regions(p, 10, 0.5) == [(10, 30), (40, 50), (80, 90), (130, 160)]
    assert overlap_regions(p, 10, 0.5, merge_gap_samples=10) == [(10, 50), (80, 90), (130, 160)]
    assert overlap_regions(p, 10, 0.5, min_duration_samples=20, merge_gap_samples=10) == [(10, 50), (130, 160)]
    assert overlap_regions(p, 10, 0.95) == []
    assert overlap_regions(np.zeros(0), 10, 0.5) == []
    with pytest.raises(ValueError, match="frame_samples"):
        overlap_regions(p, 0, 0.5)


def test_nearest_adds_the_speaker_who_speaks_nearest_in_time():
    # speaker 0 until 100, speaker 1 from 100; an overlap [80, 120) around the turn change; speaker 2 far away
    segments = [(0, 100, 0), (100, 200, 1), (1000, 1100, 2)]
    out = add_second_speakers(segments, [(80, 120)], *NO_EMBEDDINGS, method="nearest", max_gap_samples=50)
    # [80, 100): 0 speaks, 1 (gap 0) joins; [100, 120): 1 speaks, 0 joins -> 0 until 120, 1 from 80
    assert out == [(0, 120, 0), (80, 200, 1), (1000, 1100, 2)]


def test_a_region_without_another_speaker_nearby_or_without_speech_keeps_its_timeline():
    segments = [(0, 100, 0), (1000, 1100, 1)]
    assert add_second_speakers(segments, [(40, 60)], *NO_EMBEDDINGS, method="nearest",
                               max_gap_samples=100) == segments
    # a region over silence adds nobody; one already holding two speakers adds nobody
    assert add_second_speakers(segments, [(200, 300)], *NO_EMBEDDINGS, method="nearest",
                               max_gap_samples=10_000) == segments
    both = [(0, 100, 0), (50, 150, 1), (300, 400, 2)]
    assert add_second_speakers(both, [(60, 90)], *NO_EMBEDDINGS, method="nearest", max_gap_samples=10_000) == both


def test_centroid_adds_the_most_similar_other_speaker_and_hybrid_limits_it_to_speakers_nearby():
    segments = [(0, 100, 0), (100, 200, 1), (300, 400, 2)]
    # speaker 0's embeddings point along x, 1's along y, 2's along z; the region's embedding is between x and z
    embeddings = np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 1, 0.1], [0, 0, 1], [0.6, 0.0, 0.8]], float)
    centres = np.array([20, 60, 120, 160, 350, 50])
    speakers = [0, 0, 1, 1, 2, 0]
    region = [(40, 60)]  # inside speaker 0's turn: the most similar other speaker is 2, the nearest is 1
    assert add_second_speakers(segments, region, embeddings, centres, speakers, method="centroid") == \
        [(0, 100, 0), (40, 60, 2), (100, 200, 1), (300, 400, 2)]
    assert add_second_speakers(segments, region, embeddings, centres, speakers, method="hybrid",
                               max_gap_samples=100) == [(0, 100, 0), (40, 60, 1), (100, 200, 1), (300, 400, 2)]
    assert add_second_speakers(segments, region, embeddings, centres, speakers, method="hybrid",
                               max_gap_samples=1000) == [(0, 100, 0), (40, 60, 2), (100, 200, 1), (300, 400, 2)]
    # embeddings of a cluster without speech (None) are left out: speaker 2 is no candidate then
    unnamed = [0, 0, 1, 1, None, 0]
    assert add_second_speakers(segments, region, embeddings, centres, unnamed, method="centroid") == \
        [(0, 100, 0), (40, 60, 1), (100, 200, 1), (300, 400, 2)]
    with pytest.raises(ValueError, match="one of each per embedding"):
        add_second_speakers(segments, region, embeddings, centres[:2], speakers, method="centroid")


def test_merge_segments_joins_one_speakers_touching_or_overlapping_segments_only():
    assert merge_segments([(0, 10, 1), (10, 20, 1), (15, 30, 1), (31, 40, 1), (5, 8, 0)]) == \
        [(0, 30, 1), (5, 8, 0), (31, 40, 1)]
    with pytest.raises(ValueError, match="method"):
        add_second_speakers([(0, 10, 0)], [(0, 5)], *NO_EMBEDDINGS, method="loudest")


class _Detector:
    frame_s = 0.02

    def __init__(self, probability):
        self.probability = np.asarray(probability, np.float32)
        self.calls = []

    def overlap_probability(self, audio, rate_hz):
        self.calls.append((audio.size, rate_hz))
        return self.probability


def test_detect_overlaps_turns_the_detectors_frames_into_sample_regions_at_the_session_rate():
    detector = _Detector([0, 0.8, 0.8, 0.8, 0.8, 0.8, 0.2, 0.9, 0])
    config = OverlapConfig(enabled=True, threshold=0.5, min_duration_s=0.05, merge_gap_s=0.0)
    # frames of 320 samples at 16 kHz: [320, 1920) is 0.1 s (kept), [2240, 2560) is 0.02 s (dropped)
    assert detect_overlaps(detector, np.zeros(2880, np.float32), 16000, config) == [(320, 1920)]
    assert detector.calls == [(2880, 16000)]
    merged = OverlapConfig(enabled=True, threshold=0.5, min_duration_s=0.05, merge_gap_s=0.02)
    assert detect_overlaps(detector, np.zeros(2880, np.float32), 16000, merged) == [(320, 2560)]


@pytest.mark.parametrize("bad", [{"method": "loudest"}, {"threshold": 1.0}, {"threshold": 0.0},
                                 {"min_duration_s": -1.0}, {"max_gap_s": -0.5}])
def test_bad_overlap_settings_are_refused_with_the_setting_named(bad):
    with pytest.raises(ConfigError, match="overlap"):
        OverlapConfig(**bad)


def _records(config, speakers_per_step, embeddings):
    from rtsep.diarize.online import StepRecord

    frames = config.frames_per_step
    return [StepRecord(i, i * config.step_samples, config.step_samples, np.ones(frames, bool), embeddings[k])
            for i, k in enumerate(speakers_per_step)]


def test_final_segments_adds_the_second_speaker_only_with_the_switch_on():
    assert OverlapConfig().enabled  # the default (chosen on the dev meetings)
    import dataclasses

    from rtsep.diarize.offline import final_segments
    from rtsep.diarize.online import DiarizationConfig

    base = dataclasses.replace(DiarizationConfig(), overlap=OverlapConfig(enabled=False))
    step = base.step_samples
    records = _records(base, [0] * 20 + [1] * 20, {0: np.array([1.0, 0, 0]), 1: np.array([0, 1.0, 0])})
    off = final_segments(records, {}, base, 8, ())
    assert [k for _, _, k in off] == [0, 1] and off[0][1] == off[1][0]  # one speaker at a time
    assert final_segments(records, {}, base, 8, (), [(off[0][1] - step, off[0][1] + step)]) == off  # switch off
    region = [(off[0][1] - step, off[0][1] + step)]  # around the turn change
    on = dataclasses.replace(base, overlap=OverlapConfig(enabled=True, method="nearest"))
    both = final_segments(records, {}, on, 8, (), region)
    assert both == [(0, off[0][1] + step, 0), (off[1][0] - step, off[1][1], 1)]
    assert final_segments(records, {}, on, 8, (), []) == off
