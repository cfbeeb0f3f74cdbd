"""Re-chunking of a sample stream into fixed steps, with positions as sample indices."""

from __future__ import annotations

import numpy as np


class Chunker:
    """Cuts an arbitrary stream of sample blocks into chunks of exactly ``chunk_samples``."""

    def __init__(self, chunk_samples: int) -> None:
        if chunk_samples <= 0:
            raise ValueError("chunk_samples must be positive")
        self.chunk_samples = chunk_samples
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._next_start_sample = 0

    @property
    def pending_samples(self) -> int:
        return self._pending_samples

    @property
    def next_start_sample(self) -> int:
        return self._next_start_sample

    def push(self, samples: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Add samples; return the (start_sample, chunk) pairs that are now complete."""
        if samples.size:
            self._pending.append(samples)
            self._pending_samples += samples.size
        out: list[tuple[int, np.ndarray]] = []
        if self._pending_samples < self.chunk_samples:
            return out
        buffer = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        n_full = buffer.size // self.chunk_samples
        for i in range(n_full):
            chunk = buffer[i * self.chunk_samples : (i + 1) * self.chunk_samples].copy()
            out.append((self._next_start_sample, chunk))
            self._next_start_sample += self.chunk_samples
        rest = buffer[n_full * self.chunk_samples :]
        self._pending = [rest] if rest.size else []
        self._pending_samples = rest.size
        return out

    def flush(self) -> tuple[int, np.ndarray, int] | None:
        """The last partial chunk, zero-padded to full size, with its number of valid samples."""
        if not self._pending_samples:
            return None
        buffer = np.concatenate(self._pending)
        valid = buffer.size
        chunk = np.zeros(self.chunk_samples, np.float32)
        chunk[:valid] = buffer
        start = self._next_start_sample
        self._pending, self._pending_samples = [], 0
        self._next_start_sample += self.chunk_samples
        return start, chunk, valid
