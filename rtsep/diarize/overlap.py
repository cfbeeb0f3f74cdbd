"""Overlap-aware final timelines: regions where two or more talkers speak, and a second speaker inside them.

Pure functions (numpy only). The overlapped-speech detector itself is a model (rtsep.runtime.overlap); here its
per-frame probabilities become regions (:func:`overlap_regions`), and inside each region the final timeline's
one speaker gets company (:func:`add_second_speakers`):

* ``"nearest"`` (pyannote's heuristic for overlap-aware resegmentation): the other speaker who speaks nearest
  in time (in meetings most overlaps are a turn change: the next talker starts before the last one stops);
* ``"centroid"``: the other speaker whose centroid (the mean of their unit embeddings) is most similar to the
  embeddings of the region;
* ``"hybrid"``: among the other speakers who speak within ``max_gap_s`` of the region, the most similar by
  centroid; the nearest in time where none has an embedding.

A region part where the timeline has no speaker (the VAD heard none) or already two is left as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

METHODS = ("nearest", "centroid", "hybrid")


@dataclass(frozen=True)
class OverlapConfig:
    """``[diarization.overlap]``: the overlap-aware final timeline (the embedded diarizer)."""

    # on by default: on the meeting set's dev split the final DER fell 43.9 -> 42.8 % pooled (nearest, 0.5: the
    # lowest of thresholds 0.1..0.8 x the three methods; bench/RESULTS.md "Overlapped speech"); detector RTF ~0.003.
    # threshold 0.35 and max_gap_s 1 with the detector of step 16,441: dev 24.2 (off) -> 21.3 % pooled, the lowest
    # of thresholds 0.2..0.5 x max_gap_s 1 / 2 / 3 (bench/RESULTS.md "The detector trained longer")
    enabled: bool = True
    threshold: float = 0.35  # a frame is overlapped when the detector's P(2+ talkers) reaches this
    min_duration_s: float = 0.1  # shorter overlap regions are dropped ...
    merge_gap_s: float = 0.1  # ... after regions this close are joined
    method: str = "nearest"  # how the second speaker is chosen (METHODS; centroid and hybrid were worse on dev)
    max_gap_s: float = 1.0  # the second speaker must speak within this of the region
    weights: str | None = None  # the detector's safetensors file; None: the one shipped in the package

    def __post_init__(self) -> None:
        from rtsep.errors import ConfigError

        if self.method not in METHODS:
            raise ConfigError(f"[diarization.overlap] method must be one of {METHODS}, got {self.method!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"[diarization.overlap] threshold must be within (0, 1), got {self.threshold!r}")
        if self.min_duration_s < 0 or self.merge_gap_s < 0 or self.max_gap_s < 0:
            raise ConfigError("[diarization.overlap] min_duration_s, merge_gap_s and max_gap_s must be >= 0")


def overlap_regions(overlap_probability: np.ndarray, frame_samples: int, threshold: float,
                    min_duration_samples: int = 0, merge_gap_samples: int = 0) -> list[tuple[int, int]]:
    """[start_sample, end_sample) regions where ``overlap_probability`` (one value per frame of
    ``frame_samples``) reaches ``threshold``; regions closer than ``merge_gap_samples`` joined, then those shorter
    than ``min_duration_samples`` dropped."""
    if frame_samples < 1:
        raise ValueError(f"frame_samples must be >= 1, got {frame_samples}")
    above = np.asarray(overlap_probability) >= threshold
    padded = np.concatenate([[False], above, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    merged: list[list[int]] = []
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        start, end = int(a) * frame_samples, int(b) * frame_samples
        if merged and start - merged[-1][1] <= merge_gap_samples:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged if b - a >= max(1, min_duration_samples)]


def _pieces(region: tuple[int, int], segments: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, set[int]]]:
    """The region cut where the set of speakers of ``segments`` changes: (start, end, speakers)."""
    a, b = region
    inside = [(max(a, s), min(b, e), k) for s, e, k in segments if s < b and e > a]
    cuts = sorted({a, b} | {s for s, _, _ in inside} | {e for _, e, _ in inside})
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        if hi > lo:
            out.append((lo, hi, {k for s, e, k in inside if s <= lo and e >= hi}))
    return out


def _gap(lo: int, hi: int, s: int, e: int) -> int:
    """Samples between [lo, hi) and [s, e) (0 when they touch or overlap)."""
    return max(0, s - hi, lo - e)


def _nearest_other(lo: int, hi: int, speaker: int, segments: Sequence[tuple[int, int, int]],
                   max_gap_samples: int) -> dict[int, int]:
    """Other speakers within ``max_gap_samples`` of [lo, hi), with their smallest gap."""
    near: dict[int, int] = {}
    for s, e, k in segments:
        if k == speaker:
            continue
        g = _gap(lo, hi, s, e)
        if g <= max_gap_samples and g < near.get(k, max_gap_samples + 1):
            near[k] = g
    return near


def speaker_centroids(embeddings: np.ndarray, speakers: Sequence[int | None]) -> dict[int, np.ndarray]:
    """Unit mean of the unit embeddings of each speaker (embeddings of speaker None left out)."""
    out: dict[int, np.ndarray] = {}
    if len(embeddings) == 0:
        return out
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-8)
    labels = np.array([-1 if k is None else int(k) for k in speakers])
    for k in sorted(set(int(x) for x in labels) - {-1}):
        c = unit[labels == k].mean(axis=0)
        out[k] = c / max(float(np.linalg.norm(c)), 1e-8)
    return out


def _region_embedding(lo: int, hi: int, embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray | None:
    """Unit mean of the embeddings centred in [lo, hi); the one centred nearest to it when none is."""
    if len(embeddings) == 0:
        return None
    inside = np.flatnonzero((centres >= lo) & (centres < hi))
    if inside.size == 0:
        inside = np.array([int(np.argmin(np.abs(centres - (lo + hi) / 2)))])
    chosen = embeddings[inside]
    unit = chosen / np.maximum(np.linalg.norm(chosen, axis=1, keepdims=True), 1e-8)
    mean = unit.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-8)


def merge_segments(segments: Sequence[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Segments of one speaker that overlap or touch joined; sorted by (start, speaker)."""
    by_speaker: dict[int, list[list[int]]] = {}
    for s, e, k in sorted(segments, key=lambda x: (x[2], x[0], x[1])):
        runs = by_speaker.setdefault(k, [])
        if runs and s <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], e)
        else:
            runs.append([s, e])
    return sorted(((s, e, k) for k, runs in by_speaker.items() for s, e in runs), key=lambda x: (x[0], x[2]))


def add_second_speakers(segments: Sequence[tuple[int, int, int]], regions: Sequence[tuple[int, int]],
                        embeddings: np.ndarray, centres_samples: np.ndarray, embedding_speakers: Sequence[int | None],
                        method: str = "nearest", max_gap_samples: int = 0) -> list[tuple[int, int, int]]:
    """The final timeline ``segments`` ((start_sample, end_sample, speaker)) with a second speaker added inside
    the overlap ``regions`` wherever the timeline has exactly one. ``embeddings`` (N, D) are the session's step
    embeddings, ``centres_samples`` (N,) the centre of each one's window, ``embedding_speakers`` (N,) the final
    speaker each belongs to (None: a cluster with no speech of its own, left out). A part of a region where no
    other speaker speaks within ``max_gap_samples`` (and, for ``"centroid"``, no other speaker has an embedding)
    keeps one speaker."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    segments = list(segments)
    if not regions or not segments:
        return merge_segments(segments)
    embeddings = np.asarray(embeddings, np.float64)
    centres = np.asarray(centres_samples, np.float64)
    if len(embeddings) != len(embedding_speakers) or len(centres) != len(embedding_speakers):
        raise ValueError(f"{len(embeddings)} embeddings, {len(centres)} centres and {len(embedding_speakers)} "
                         "speakers: one of each per embedding is needed")
    centroids = speaker_centroids(embeddings, embedding_speakers)
    added: list[tuple[int, int, int]] = []
    for region in regions:
        for lo, hi, present in _pieces(region, segments):
            if len(present) != 1:
                continue
            (speaker,) = present
            near = _nearest_other(lo, hi, speaker, segments, max_gap_samples)
            second: int | None = None
            if method in ("centroid", "hybrid"):
                candidates = [k for k in centroids if k != speaker and (method == "centroid" or k in near)]
                region_embedding = _region_embedding(lo, hi, embeddings, centres)
                if candidates and region_embedding is not None:
                    second = max(candidates, key=lambda k: (float(centroids[k] @ region_embedding), -k))
            if second is None and near:
                second = min(near, key=lambda k: (near[k], k))
            if second is not None:
                added.append((lo, hi, second))
    return merge_segments(segments + added)


class OverlapScorer(Protocol):
    """What :func:`detect_overlaps` needs of a detector (rtsep.runtime.overlap.OverlapDetector)."""

    @property
    def frame_s(self) -> float: ...

    def overlap_probability(self, audio: np.ndarray, rate_hz: int) -> np.ndarray: ...


def detect_overlaps(detector: OverlapScorer, audio: np.ndarray, rate_hz: int,
                    config: OverlapConfig) -> list[tuple[int, int]]:
    """The overlap regions of a whole recording, (start_sample, end_sample) at ``rate_hz``."""
    probability = detector.overlap_probability(audio, rate_hz)
    return overlap_regions(probability, round(detector.frame_s * rate_hz), config.threshold,
                           round(config.min_duration_s * rate_hz), round(config.merge_gap_s * rate_hz))
