import numpy as np

from rtsep.stream.chunker import Chunker


def test_chunker_positions_and_flush():
    chunker = Chunker(4)
    out = chunker.push(np.arange(6, dtype=np.float32)) + chunker.push(np.arange(6, 9, dtype=np.float32))
    assert [(s, list(c)) for s, c in out] == [(0, [0, 1, 2, 3]), (4, [4, 5, 6, 7])]
    start, chunk, valid = chunker.flush()
    assert (start, list(chunk), valid) == (8, [8, 0, 0, 0], 1)
    assert chunker.flush() is None

