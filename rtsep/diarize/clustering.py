"""Incremental speaker clustering with a growing number of speakers (in the manner of diart).

Each speaker is a centroid (sum of its unit embeddings). An embedding joins the nearest centroid when
its cosine distance is below ``new_speaker_distance``; otherwise it founds a new speaker, as long as the
cap allows and the embedding came from enough speech to be trusted. Centroids are only updated by
embeddings from windows with enough speech (diart's ``rho_update``). The diarizer feeds one local speaker
per step, so two simultaneous local speakers can never land in one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClusteringConfig:
    new_speaker_distance: float = 0.35
    max_speakers: int = 8
    min_speech_ratio_new: float = 0.6  # share of the embedding window that must be speech to found a speaker
    min_speech_ratio_update: float = 0.4  # ... to update a centroid
    new_speaker_patience: int = 2  # consecutive far embeddings needed before a new speaker is founded


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-8)


class OnlineClustering:
    def __init__(self, config: ClusteringConfig) -> None:
        self.config = config
        self._sums: list[np.ndarray] = []
        self._far_streak = 0
        self._far_sum: np.ndarray | None = None

    @property
    def num_speakers(self) -> int:
        return len(self._sums)

    def centroids(self) -> np.ndarray:
        if not self._sums:
            return np.zeros((0, 0), np.float32)
        return np.stack([_unit(s) for s in self._sums])

    def distances(self, embedding: np.ndarray) -> np.ndarray:
        if not self._sums:
            return np.zeros(0, np.float32)
        return 1.0 - self.centroids() @ _unit(embedding)

    def assign(self, embedding: np.ndarray, speech_ratio: float) -> int | None:
        """The speaker index for this embedding (possibly a new one), or None when it cannot be trusted yet."""
        cfg = self.config
        embedding = _unit(np.asarray(embedding, np.float32))
        dists = self.distances(embedding)
        nearest = int(np.argmin(dists)) if dists.size else None
        if nearest is not None and dists[nearest] < cfg.new_speaker_distance:
            self._far_streak, self._far_sum = 0, None
            if speech_ratio >= cfg.min_speech_ratio_update:
                self._sums[nearest] = self._sums[nearest] + embedding
            return nearest
        # the very first speaker needs no evidence against anyone else
        can_found = self.num_speakers < cfg.max_speakers and (
            nearest is None or speech_ratio >= cfg.min_speech_ratio_new
        )
        if can_found:
            self._far_streak += 1
            self._far_sum = embedding if self._far_sum is None else self._far_sum + embedding
            if nearest is None or self._far_streak >= cfg.new_speaker_patience:
                self._sums.append(self._far_sum)
                self._far_streak, self._far_sum = 0, None
                return self.num_speakers - 1
        # not (yet) a new speaker: keep the nearest one if there is any
        return nearest
