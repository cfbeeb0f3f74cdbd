"""The named-speaker matcher: one-to-one assignment above a similarity threshold, sticky names."""

import numpy as np
import pytest

from rtsep.errors import ConfigError
from rtsep.stream.naming import Naming, VoiceMatcher, VoicesConfig, assign, match_once, speaker_centroids


def _unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def _basis(dim=8):
    return np.eye(dim)


def _mix(a, b, w):
    """A unit vector whose cosine similarity to unit a is w (b orthogonal to a)."""
    return _unit(w * a + np.sqrt(1 - w * w) * b)


def test_the_assignment_is_optimal_and_one_to_one():
    # speaker 0 is most like voice 0, but speaker 1 is only like voice 0 a little less and nothing else:
    # greedy would give voice 0 to speaker 0 and leave speaker 1 unnamed; the optimum names both
    sim = np.array([[0.9, 0.85], [0.88, 0.1]])
    assert assign(sim, 0.5) == {0: (1, 0.85), 1: (0, 0.88)}


def test_pairs_below_the_threshold_are_never_named():
    sim = np.array([[0.74, 0.2], [0.1, 0.76]])
    assert assign(sim, 0.75) == {1: (1, 0.76)}
    e = _basis()
    voices = {"alice": e[0], "bob": e[1]}
    centroids = np.stack([_mix(e[0], e[2], 0.74), _mix(e[1], e[3], 0.9)])
    assert match_once(voices, centroids, 0.75) == {1: Naming(1, "bob", 0.9)}


def test_the_matcher_names_each_speaker_once_and_reports_it():
    e = _basis()
    matcher = VoiceMatcher({"alice": e[0], "bob": e[1]}, VoicesConfig(min_similarity=0.6))
    centroids = np.stack([_mix(e[1], e[2], 0.8), _mix(e[0], e[3], 0.7)])
    named = matcher.update(centroids)
    assert sorted(named, key=lambda n: n.speaker) == [Naming(0, "bob", 0.8), Naming(1, "alice", 0.7)]
    assert matcher.update(centroids) == []  # nothing new
    assert matcher.names == {0: "bob", 1: "alice"}


def test_a_speaker_founded_later_is_named_when_it_appears():
    e = _basis()
    matcher = VoiceMatcher({"alice": e[0], "bob": e[1]}, VoicesConfig(min_similarity=0.6))
    assert matcher.update(np.stack([_mix(e[0], e[2], 0.9)])) == [Naming(0, "alice", 0.9)]
    assert matcher.update(np.stack([_mix(e[0], e[2], 0.9), _mix(e[4], e[5], 0.5)])) == []  # unknown person
    named = matcher.update(np.stack([_mix(e[0], e[2], 0.9), _mix(e[4], e[5], 0.5), _mix(e[1], e[3], 0.8)]))
    assert named == [Naming(2, "bob", 0.8)]


def test_a_name_is_sticky_and_moves_only_when_another_speaker_is_clearly_better_for_several_updates():
    e = _basis()
    cfg = VoicesConfig(min_similarity=0.6, switch_margin=0.05, switch_updates=3)
    matcher = VoiceMatcher({"alice": e[0]}, cfg)
    assert matcher.update(np.stack([_mix(e[0], e[2], 0.8)])) == [Naming(0, "alice", 0.8)]
    slightly = np.stack([_mix(e[0], e[2], 0.8), _mix(e[0], e[3], 0.83)])  # better, but within the margin
    for _ in range(10):
        assert matcher.update(slightly) == []
    clearly = np.stack([_mix(e[0], e[2], 0.8), _mix(e[0], e[3], 0.9)])
    assert matcher.update(clearly) == [] and matcher.update(clearly) == []
    matcher.update(slightly)  # one update without the lead: the count starts again
    assert matcher.update(clearly) == [] and matcher.update(clearly) == []
    assert matcher.update(clearly) == [Naming(0, None, 0.8), Naming(1, "alice", 0.9)]
    assert matcher.names == {1: "alice"}


def test_a_speaker_keeps_its_name_when_its_similarity_falls_below_the_threshold():
    e = _basis()
    matcher = VoiceMatcher({"alice": e[0]}, VoicesConfig(min_similarity=0.6))
    matcher.update(np.stack([_mix(e[0], e[2], 0.8)]))
    assert matcher.update(np.stack([_mix(e[0], e[2], 0.5)])) == []
    assert matcher.names == {0: "alice"}


def test_no_voices_or_no_speakers_name_nothing():
    assert VoiceMatcher({}, VoicesConfig()).update(np.eye(3)) == []
    assert VoiceMatcher({"a": np.eye(3)[0]}, VoicesConfig()).update(np.zeros((0, 3))) == []


def test_speaker_centroids_are_unit_means_per_label():
    x = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]])
    c = speaker_centroids(x, np.array([0, 0, 1]), 3)
    np.testing.assert_allclose(c, [[2 ** -0.5, 2 ** -0.5, 0], [0, 0, 1], [0, 0, 0]])


@pytest.mark.parametrize("kwargs", [{"min_similarity": 1.5}, {"switch_updates": 0}, {"min_enroll_speech_s": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ConfigError):
        VoicesConfig(**kwargs)
