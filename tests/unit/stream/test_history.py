import numpy as np

from rtsep.stream.history import SampleHistory


def test_history_window():
    history = SampleHistory(5)
    np.testing.assert_array_equal(history.push(np.array([1, 2], np.float32)), [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(history.push(np.arange(3, 10, dtype=np.float32)), [5, 6, 7, 8, 9])

