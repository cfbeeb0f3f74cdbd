import numpy as np

from rtsep.stream.routing import route_by_labels


def test_routing_runs():
    samples = np.arange(8, dtype=np.float32)
    runs = route_by_labels(samples, 100, np.array([0, 0, -1, 1]), 2, valid_samples=7)
    assert [(r.speaker, r.start_sample, list(r.samples)) for r in runs] == [(0, 100, [0, 1, 2, 3]), (1, 106, [6])]

