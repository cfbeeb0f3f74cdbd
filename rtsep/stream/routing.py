"""Routing a step's audio to per-speaker tracks from per-frame speaker labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RoutedRun:
    speaker: int
    start_sample: int  # absolute, at the model rate
    samples: np.ndarray


def route_by_labels(
    samples: np.ndarray, start_sample: int, labels: np.ndarray, frame_samples: int, valid_samples: int
) -> list[RoutedRun]:
    """Contiguous runs of frames with the same speaker label (>= 0) become one run each."""
    runs: list[RoutedRun] = []
    i = 0
    n = len(labels)
    while i < n:
        label = int(labels[i])
        j = i + 1
        while j < n and int(labels[j]) == label:
            j += 1
        if label >= 0:
            lo, hi = i * frame_samples, min(j * frame_samples, valid_samples)
            if hi > lo:
                runs.append(RoutedRun(label, start_sample + lo, samples[lo:hi]))
        i = j
    return runs
