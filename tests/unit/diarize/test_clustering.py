import numpy as np
import pytest

from rtsep.diarize.clustering import ClusteringConfig, OnlineClustering
from rtsep.errors import ConfigError


def _speaker(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(256)
    return v / np.linalg.norm(v)


def _near(centre: np.ndarray, rng: np.random.Generator, spread: float = 0.02) -> np.ndarray:
    v = centre + spread * rng.standard_normal(centre.size)
    return v / np.linalg.norm(v)


def test_first_embedding_gets_a_label_at_once():
    c = OnlineClustering(ClusteringConfig())
    assert c.assign(_speaker(0), speech_ratio=0.1) == 0
    assert c.num_speakers == 1


def test_one_stray_embedding_does_not_found_a_speaker():
    rng = np.random.default_rng(0)
    a, b = _speaker(1), _speaker(2)
    c = OnlineClustering(ClusteringConfig(new_speaker_patience=3))
    for _ in range(5):
        assert c.assign(_near(a, rng), 1.0) == 0
    assert c.assign(_near(b, rng), 1.0) == 0  # far, but alone: the nearest speaker
    assert c.assign(_near(a, rng), 1.0) == 0
    assert c.num_speakers == 1


def test_new_speaker_after_patience_and_stable_names():
    rng = np.random.default_rng(0)
    a, b = _speaker(1), _speaker(2)
    c = OnlineClustering(ClusteringConfig(new_speaker_patience=3))
    for _ in range(5):
        c.assign(_near(a, rng), 1.0)
    got = [c.assign(_near(b, rng), 1.0) for _ in range(3)]
    assert got[-1] == 1 and c.num_speakers == 2
    assert [c.assign(_near(x, rng), 1.0) for x in (a, b, a, b)] == [0, 1, 0, 1]


def test_far_embeddings_from_weak_windows_found_nothing():
    rng = np.random.default_rng(0)
    a, b = _speaker(1), _speaker(2)
    c = OnlineClustering(ClusteringConfig(new_speaker_patience=2, min_speech_ratio_new=0.6))
    c.assign(_near(a, rng), 1.0)
    for _ in range(4):
        c.assign(_near(b, rng), 0.3)
    assert c.num_speakers == 1


def test_centroid_founded_from_a_weak_window_is_repaired():
    rng = np.random.default_rng(0)
    a = _speaker(1)
    poor = _speaker(3)  # e.g. mostly silence: unrelated to the talker
    c = OnlineClustering(ClusteringConfig(new_speaker_distance=0.5))
    c.assign(poor, speech_ratio=0.1)
    for _ in range(3):
        c.assign(_near(a, rng), 1.0)
    assert c.num_speakers == 1
    assert 1.0 - float(c.centroids()[0] @ a) < 0.05


def test_deterministic():
    rng = np.random.default_rng(5)
    embs = [_near(_speaker(i % 2), rng, 0.3) for i in range(40)]
    runs = []
    for _ in range(2):
        c = OnlineClustering(ClusteringConfig())
        runs.append([c.assign(e, 1.0) for e in embs])
    assert runs[0] == runs[1]


def test_config_validation():
    with pytest.raises(ConfigError):
        ClusteringConfig(new_speaker_distance=0)
    with pytest.raises(ConfigError):
        ClusteringConfig(new_speaker_patience=0)


def test_a_centroid_between_two_talkers_is_split():
    """Two talkers whose embeddings interleave from the start: the first centroid settles between them,
    every embedding is near it, and only the split check can tell that it holds two speakers."""
    from rtsep.diarize.clustering import ClusteringConfig, OnlineClustering

    rng = np.random.default_rng(0)
    u = np.zeros(256, np.float32)
    u[0] = 1.0
    v = np.zeros(256, np.float32)
    v[0], v[1] = 0.6, 0.8  # cosine distance 0.4 between the talkers

    def noisy(c):
        e = c + rng.normal(0, 0.01, 256).astype(np.float32)
        return e / np.linalg.norm(e)

    def run(config):
        clustering = OnlineClustering(config)
        mid = (u + v) / np.linalg.norm(u + v)  # the first windows hold both talkers
        [clustering.assign(noisy(mid), 1.0) for _ in range(5)]
        labels = [clustering.assign(noisy(u if i % 2 else v), 1.0) for i in range(60)]
        return clustering.num_speakers, labels

    n_without, _ = run(ClusteringConfig(split_check_every=0))
    n_with, labels = run(ClusteringConfig())
    assert n_without == 1
    assert n_with == 2
    tail = labels[-20:]  # after the split, the two talkers get different labels
    assert len(set(tail[0::2])) == 1 and len(set(tail[1::2])) == 1 and tail[0] != tail[1]


def _merging_run(merge_distance: float) -> tuple[OnlineClustering, list[int]]:
    """Talker a; then 4 windows 0.3 away (a level or channel change: they found speaker 1); then the voice drifts
    back to a, and speaker 1's centroid follows it towards speaker 0's; then the changed voice once more."""
    rng = np.random.default_rng(3)
    a = np.zeros(256)
    a[0] = 1.0
    b = np.zeros(256)
    b[0], b[1] = 0.7, np.sqrt(1 - 0.7**2)  # cosine distance 0.3 > new_speaker_distance
    c = OnlineClustering(ClusteringConfig(merge_distance=merge_distance, split_check_every=0))
    for _ in range(10):
        c.assign(_near(a, rng, 0.005), 1.0)
    for _ in range(4):
        c.assign(_near(b, rng, 0.005), 1.0)
    assert c.num_speakers == 2
    for t in np.linspace(0, 1, 40):
        c.assign(_near((1 - t) * b + t * a, rng, 0.005), 1.0)
    return c, [c.assign(_near(b, rng, 0.005), 1.0) for _ in range(3)]


def test_converged_speakers_are_merged_into_the_older():
    without, labels = _merging_run(0.0)
    cents = without.centroids()
    assert without.merged == {} and 1.0 - float(cents[0] @ cents[1]) < 0.15 and labels == [1, 1, 1]
    c, labels = _merging_run(0.15)
    assert c.merged == {1: 0}
    assert labels == [0, 0, 0]  # speaker 1 takes no embedding again: the talker goes on as speaker 0
    assert np.isinf(c.distances(c.centroids()[1])[1])
    assert c.num_speakers == 2  # its index stays taken (its past turns keep their label)


def test_merge_distance_validation():
    with pytest.raises(ConfigError):
        ClusteringConfig(merge_distance=-0.1)
