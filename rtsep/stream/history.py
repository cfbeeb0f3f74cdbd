"""A fixed-length window over the most recent samples of a stream (zeros before the stream began)."""

from __future__ import annotations

import numpy as np


class SampleHistory:
    def __init__(self, window_samples: int) -> None:
        self.window_samples = window_samples
        self._buffer = np.zeros(window_samples, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append ``samples`` and return a copy of the window that ends with them."""
        n = samples.size
        if n >= self.window_samples:
            self._buffer = samples[-self.window_samples :].astype(np.float32, copy=True)
        else:
            self._buffer = np.concatenate([self._buffer[n:], samples]).astype(np.float32, copy=False)
        return self._buffer.copy()
