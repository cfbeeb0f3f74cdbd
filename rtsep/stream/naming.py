"""Named speakers (sans-I/O, numpy + scipy): which session speaker is which enrolled voice.

The session's speakers are the online clustering's centroids (mean speaker embeddings); an enrolled voice is one
unit embedding from the same encoder. Each update matches them one to one (Hungarian assignment on cosine
similarity, scipy's ``linear_sum_assignment``), keeping only pairs at least ``min_similarity`` alike. A name,
once given, is sticky: it moves to another speaker (or the speaker takes another name) only when the new pair
beats the current one by ``switch_margin`` for ``switch_updates`` updates in a row; a speaker whose similarity
later falls below the threshold keeps its name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from rtsep.errors import ConfigError


@dataclass(frozen=True)
class VoicesConfig:
    """The ``[voices]`` section: enrollment and matching of named speakers (docs/deploy.md)."""

    # cosine similarity (-1..1) of a speaker's centroid to an enrolled voice needed to name the speaker; chosen on
    # same- vs different-voice similarities of the real-voice corpus's development actors (bench/RESULTS.md)
    min_similarity: float = 0.84
    switch_margin: float = 0.05  # a name moves only to a pair this much more similar ...
    switch_updates: int = 8  # ... for this many consecutive updates (one per step with an embedding, 256 ms)
    min_enroll_speech_s: float = 3.0  # an enrollment clip needs this much speech (silero-vad)
    max_enroll_s: float = 120.0  # longest enrollment clip accepted

    def __post_init__(self) -> None:
        if not -1.0 <= self.min_similarity <= 1.0:
            raise ConfigError(f"[voices] min_similarity is a cosine similarity in -1..1, got {self.min_similarity}")
        if self.switch_margin < 0 or self.switch_updates < 1:
            raise ConfigError("[voices] switch_margin must be >= 0 and switch_updates >= 1")
        if not 0 < self.min_enroll_speech_s <= self.max_enroll_s:
            raise ConfigError("[voices] need 0 < min_enroll_speech_s <= max_enroll_s")


@dataclass(frozen=True)
class Naming:
    """Speaker ``speaker`` (its index) is now ``name`` (None: it lost its name to a better-matching speaker)."""

    speaker: int
    name: str | None
    similarity: float


def _units(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"expected a (count, dim) array, got shape {vectors.shape}")
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)


def similarities(centroids: np.ndarray, voices: np.ndarray) -> np.ndarray:
    """(speakers, voices) cosine similarities."""
    if not len(centroids) or not len(voices):
        return np.zeros((len(centroids), len(voices)))
    return _units(centroids) @ _units(voices).T


def assign(sim: np.ndarray, min_similarity: float) -> dict[int, tuple[int, float]]:
    """The one-to-one assignment of speakers to voices with the largest total similarity, keeping the pairs at
    least ``min_similarity`` alike: {speaker: (voice, similarity)}."""
    if not sim.size:
        return {}
    from scipy.optimize import linear_sum_assignment

    # pairs below the threshold may not take part: they must never displace a valid pair from the optimum
    gain = np.where(sim >= min_similarity, sim - min_similarity + 1.0, 0.0)
    rows, cols = linear_sum_assignment(gain, maximize=True)
    return {int(s): (int(v), float(sim[s, v])) for s, v in zip(rows, cols, strict=True) if sim[s, v] >= min_similarity}


def match_once(voices: Mapping[str, np.ndarray], centroids: np.ndarray, min_similarity: float) -> dict[int, Naming]:
    """A one-off assignment (no stickiness), e.g. for the final timeline's speakers: {speaker: Naming}."""
    names = list(voices)
    if not names:
        return {}
    sim = similarities(centroids, np.stack([voices[n] for n in names]))
    return {s: Naming(s, names[v], round(x, 4)) for s, (v, x) in assign(sim, min_similarity).items()}


class VoiceMatcher:
    """The names of one session's speakers, updated with each new set of centroids."""

    def __init__(self, voices: Mapping[str, np.ndarray], config: VoicesConfig) -> None:
        self.config = config
        self.voice_names = list(voices)
        self._voices = np.stack([np.asarray(voices[n], np.float32) for n in self.voice_names]) if voices else None
        self.names: dict[int, str] = {}  # speaker index -> voice name
        self._challenges: dict[tuple[int, int], int] = {}  # proposed (speaker, voice) -> consecutive updates

    @property
    def voices(self) -> dict[str, np.ndarray]:
        if self._voices is None:
            return {}
        return dict(zip(self.voice_names, self._voices, strict=True))

    def update(self, centroids: np.ndarray) -> list[Naming]:
        """``centroids``: (speakers, dim), row k = speaker k. Returns the names given, moved or taken now."""
        if self._voices is None or not len(centroids):
            return []
        cfg = self.config
        sim = similarities(centroids, self._voices)
        index = {name: v for v, name in enumerate(self.voice_names)}
        held = {index[name]: s for s, name in self.names.items()}  # voice -> speaker
        out: list[Naming] = []
        seen: set[tuple[int, int]] = set()
        for s, (v, x) in sorted(assign(sim, cfg.min_similarity).items()):
            current = self.names.get(s)
            if current == self.voice_names[v]:
                continue
            rivals = []  # the similarities of the pairs this one would undo
            if current is not None:
                rivals.append(sim[s, index[current]])
            if v in held and held[v] != s:
                rivals.append(sim[held[v], v])
            if rivals:
                key = (s, v)
                if x < max(rivals) + cfg.switch_margin:
                    continue
                seen.add(key)
                self._challenges[key] = self._challenges.get(key, 0) + 1
                if self._challenges[key] < cfg.switch_updates:
                    continue
            out += self._give(s, v, x, sim, held)
            held = {index[name]: spk for spk, name in self.names.items()}
        self._challenges = {k: n for k, n in self._challenges.items() if k in seen}
        return out

    def _give(self, s: int, v: int, x: float, sim: np.ndarray, held: dict[int, int]) -> list[Naming]:
        out = []
        other = held.get(v)
        if other is not None and other != s:
            del self.names[other]
            out.append(Naming(other, None, round(float(sim[other, v]), 4)))
        self.names[s] = self.voice_names[v]
        out.append(Naming(s, self.voice_names[v], round(x, 4)))
        self._challenges = {k: n for k, n in self._challenges.items() if k[0] != s and k[1] != v}
        return out


def speaker_centroids(embeddings: np.ndarray, labels: np.ndarray, count: int) -> np.ndarray:
    """(count, dim) unit mean embedding of each label 0..count-1 (zeros for a label without embeddings)."""
    embeddings = np.asarray(embeddings, np.float64)
    dim = embeddings.shape[1] if embeddings.ndim == 2 and embeddings.size else 0
    out = np.zeros((count, dim))
    for k in range(count):
        members = embeddings[labels == k]
        if len(members):
            mean = _units(members).mean(axis=0)
            out[k] = mean / max(float(np.linalg.norm(mean)), 1e-8)
    return out


def final_names(records: list, segments: list[tuple[int, int, int]], voices: Mapping[str, np.ndarray],
                window_samples: int, step_samples: int, min_similarity: float) -> dict[int, Naming]:
    """Names of the final timeline's speakers: each step embedding belongs to the final speaker whose segment is
    nearest its window's centre; each speaker's centroid is then matched once to the voices (no stickiness)."""
    with_emb = [r for r in records if getattr(r, "embedding", None) is not None]
    if not with_emb or not segments or not voices:
        return {}
    centres = np.array([r.start_sample + step_samples - window_samples / 2 for r in with_emb])
    starts = np.array([s for s, _, _ in segments], np.float64)
    ends = np.array([e for _, e, _ in segments], np.float64)
    speakers = np.array([k for _, _, k in segments])
    distance = np.maximum(starts[None, :] - centres[:, None], 0) + np.maximum(centres[:, None] - ends[None, :], 0)
    labels = speakers[np.argmin(distance, axis=1)]
    count = int(speakers.max()) + 1
    centroids = speaker_centroids(np.stack([r.embedding for r in with_emb]), labels, count)
    present = [k for k in range(count) if np.any(labels == k)]
    named = match_once(voices, centroids[present], min_similarity)
    return {present[i]: Naming(present[i], n.name, n.similarity) for i, n in named.items()}
