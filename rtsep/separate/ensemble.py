"""Offline speed ensemble: separate a whole recording at several playback speeds and average the results.

A small separator's errors differ from one playback speed to the next (the learned filterbank frames the signal
differently, the voices move in pitch), while the sources do not; averaging the passes, each mapped back to the
original time axis, cancels part of the errors. Each pass plays the input at speed ``f`` (resampled by soxr to
``rate / f`` samples per second of the original, so pitch and tempo move together, as the adaptation's speed
perturbation does), separates it causally and resamples every source back. Output channels are put in the order
of the reference pass (the speed nearest 1) block by block before averaging, so a pass that swapped its sources
somewhere does not cancel them.

It needs the whole recording, so it is for offline processing (``rtsep process``); cost: one causal pass per
member (bench/RESULTS.md has the figures).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

Separate = Callable[[np.ndarray], np.ndarray]  # mono signal at the model rate -> (num_sources, T)


def ensemble_speeds(members: int, spread: float) -> list[float]:
    """``members`` playback speeds spread evenly over 1 +- ``spread`` (members = 1: [1.0]; odd counts include 1)."""
    if members < 1:
        raise ValueError("an ensemble needs at least one member")
    if not 0.0 <= spread < 0.5:
        raise ValueError("the speed spread must lie in [0, 0.5)")
    if members == 1 or spread == 0.0:
        return [1.0]
    return [round(1.0 + spread * (2.0 * k / (members - 1) - 1.0), 6) for k in range(members)]


def at_speed(separate: Separate, audio: np.ndarray, rate_hz: int, speed: float) -> np.ndarray:
    """Separate ``audio`` played at ``speed`` and return the sources on the original time axis (num_sources, T)."""
    import soxr

    if speed == 1.0:
        return separate(audio)
    played_hz = rate_hz / speed  # the played signal's samples per second of the original
    played = soxr.resample(audio, rate_hz, played_hz).astype(np.float32)
    sources = separate(played)
    back = [soxr.resample(np.ascontiguousarray(s), played_hz, rate_hz)[: len(audio)] for s in sources]
    out = np.zeros((len(back), len(audio)), np.float32)
    for k, s in enumerate(back):
        out[k, : len(s)] = s
    return out


def align_blocks(reference: np.ndarray, estimate: np.ndarray, block_samples: int) -> np.ndarray:
    """``estimate`` (S, T) with its channels reordered, block by block, to the permutation that correlates best
    with ``reference`` (S, T)."""
    sources = reference.shape[0]
    perms = [list(p) for p in itertools.permutations(range(sources))]
    out = np.empty_like(estimate)
    for start in range(0, reference.shape[1], block_samples):
        ref = reference[:, start : start + block_samples].astype(np.float64)
        est = estimate[:, start : start + block_samples].astype(np.float64)
        corr = ref @ est.T  # (S_ref, S_est)
        best = max(perms, key=lambda p: sum(corr[k, p[k]] for k in range(sources)))
        out[:, start : start + block_samples] = estimate[best, start : start + block_samples]
    return out


def separate_ensemble(separate: Separate, audio: np.ndarray, rate_hz: int, speeds: Sequence[float],
                      block_s: float = 1.0, reference: np.ndarray | None = None) -> np.ndarray:
    """The mean of ``separate`` run at each of ``speeds`` (see the module docstring); (num_sources, T).
    ``reference``: the pass at speed 1, already run (then 1 must be one of ``speeds``)."""
    if not speeds:
        raise ValueError("an ensemble needs at least one speed")
    audio = np.asarray(audio, np.float32)
    order = sorted(speeds, key=lambda f: abs(f - 1.0))  # the reference pass first
    if reference is not None and order[0] != 1.0:
        raise ValueError(f"a given reference pass is the pass at speed 1, which is not among {list(speeds)}")
    if reference is None:
        reference = at_speed(separate, audio, rate_hz, order[0])
    if len(order) == 1:
        return reference
    total = reference.astype(np.float32)  # float32: an hour at 8 kHz is 230 MB per copy of two sources
    block = max(1, int(block_s * rate_hz))
    for speed in order[1:]:
        total += align_blocks(reference, at_speed(separate, audio, rate_hz, speed), block)
    total /= len(order)
    return total
