"""Simulated rooms for the training corpora: shoebox impulse responses (pyroomacoustics' image method), one
microphone and two talker positions per room, RT60 0.15..0.8 s."""

from __future__ import annotations

import numpy as np


def normalised_impulse(h: np.ndarray, max_len: int, from_onset: bool) -> np.ndarray:
    if from_onset:  # from just before the direct sound
        onset = int(np.argmax(np.abs(h) > 0.1 * np.abs(h).max()))
        h = h[max(0, onset - 8) :]
    h = h[:max_len]
    return h / (np.abs(h).max() + 1e-9)


def shoebox_pair(rng: np.random.Generator, rate_hz: int, max_len: int, from_onset: bool) -> tuple[np.ndarray, float]:
    """(2, max_len) float32 impulse responses of two talkers to one microphone in a random room, and its RT60."""
    return shoebox_talkers(rng, rate_hz, max_len, from_onset, talkers=2)


def shoebox_talkers(rng: np.random.Generator, rate_hz: int, max_len: int, from_onset: bool,
                    talkers: int) -> tuple[np.ndarray, float]:
    """(talkers, max_len) float32 impulse responses of ``talkers`` talkers to one microphone in a random room,
    and its RT60 (the same draws, in the same order, as ``shoebox_pair`` for two talkers)."""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 3.5)])
    rt60 = float(rng.uniform(0.15, 0.8))
    absorption, max_order = pra.inverse_sabine(rt60, dims)
    room = pra.ShoeBox(dims, fs=rate_hz, materials=pra.Material(absorption), max_order=min(max_order, 12))
    mic = dims * rng.uniform(0.2, 0.8, 3)
    mic[2] = rng.uniform(0.7, 1.6)
    for _ in range(talkers):
        pos = dims * rng.uniform(0.1, 0.9, 3)
        pos[2] = rng.uniform(1.1, 1.9)
        room.add_source(pos)
    room.add_microphone(mic)
    room.compute_rir()
    responses = np.zeros((talkers, max_len), np.float32)
    for s in range(talkers):
        h = normalised_impulse(np.asarray(room.rir[0][s], np.float32), max_len, from_onset)
        responses[s, : len(h)] = h
    return responses, rt60
