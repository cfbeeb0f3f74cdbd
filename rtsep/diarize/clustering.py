"""Incremental speaker clustering with a growing number of speakers (in the manner of diart), refined.

Each speaker is a centroid: the quality-weighted mean of the unit embeddings assigned to it. An embedding
joins the nearest centroid when its cosine distance is below ``new_speaker_distance``. Otherwise it is a
candidate for a new speaker: a speaker is founded only when ``new_speaker_patience`` consecutive far
embeddings, each from a window with enough speech, agree with each other (one stray window never founds
a speaker). The very first embedding founds speaker 0 at once, so the first talker has a label
immediately, whatever the quality of its window.

After every embedding the recent ones (``memory`` of them) are re-assigned to their nearest centroid and
the centroids re-estimated (a few weighted spherical k-means iterations, started from the current
centroids, so the speaker indices stay put). This repairs a centroid founded from a poor window (mostly
silence, or two talkers): its weak founding embedding has little weight and moves away once better ones
arrive. Earlier decisions of the live path are not changed; only the centroids and :meth:`labels` are.
The diarizer feeds one embedding per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rtsep.errors import ConfigError


@dataclass(frozen=True)
class ClusteringConfig:
    new_speaker_distance: float = 0.25
    max_speakers: int = 8
    min_speech_ratio_new: float = 0.6  # share of the embedding window that must be speech to found a speaker
    min_speech_ratio_update: float = 0.4  # ... to weigh in a centroid (weaker windows get a token weight)
    new_speaker_patience: int = 3  # consecutive far, mutually close embeddings needed to found a speaker
    refine_iterations: int = 2  # k-means iterations over the remembered embeddings after each new one
    memory: int = 400  # embeddings remembered for refinement (older ones stay in their centroid's sum)
    # every this many embeddings, a speaker whose remembered embeddings form two groups split_distance apart
    # (average linkage), each of split_min_members, is split in two (a centroid that settled
    # between two talkers absorbs both, and no single embedding is ever far enough from it); 0: never
    split_check_every: int = 4
    split_min_members: int = 8
    split_distance: float = 0.33  # average cross-group cosine distance needed to split
    # two live speakers whose centroids come closer than this (cosine distance) are one: the younger is merged
    # into the older and never assigned again (its past labels stay; later embeddings go to the older); 0: never
    merge_distance: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.new_speaker_distance < 2.0:
            raise ConfigError("new_speaker_distance must be within (0, 2)")
        if self.max_speakers < 1 or self.new_speaker_patience < 1 or self.memory < 1:
            raise ConfigError("max_speakers, new_speaker_patience and memory must be >= 1")
        if self.refine_iterations < 0:
            raise ConfigError("refine_iterations must be >= 0")
        if not 0.0 <= self.merge_distance < 2.0:
            raise ConfigError("merge_distance must be within [0, 2)")


_WEAK_WEIGHT = 1e-3  # weight of an embedding from a window with too little speech


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-8)


class OnlineClustering:
    def __init__(self, config: ClusteringConfig) -> None:
        self.config = config
        self._num = 0
        self._old_sums: list[np.ndarray] = []  # weighted sums of embeddings that left the memory
        self._centroids = np.zeros((0, 0), np.float32)
        self._embs: list[np.ndarray] = []  # remembered unit embeddings (newest last)
        self._weights: list[float] = []
        self._ids: list[int] = []  # the embedding's position in the whole stream
        self._labels: list[int] = []  # current cluster of each remembered embedding (-1: none yet)
        self._next_id = 0
        self._far: list[int] = []  # positions (in memory) of the current run of far embeddings
        self._merged: dict[int, int] = {}  # speaker -> the older speaker it was merged into

    @property
    def num_speakers(self) -> int:
        return self._num

    def centroids(self) -> np.ndarray:
        return self._centroids.copy()

    @property
    def merged(self) -> dict[int, int]:
        """Speakers merged into an older one (speaker -> the one it became); they get no more embeddings."""
        return dict(self._merged)

    def distances(self, embedding: np.ndarray) -> np.ndarray:
        """Cosine distance to each speaker's centroid (infinite for merged speakers)."""
        if not self._num:
            return np.zeros(0, np.float32)
        dists = 1.0 - self._centroids @ _unit(np.asarray(embedding, np.float32))
        for k in self._merged:
            dists[k] = np.inf
        return dists

    def labels(self) -> dict[int, int]:
        """Current cluster of each remembered embedding, by its position in the stream (0, 1, ...)."""
        return {i: lab for i, lab in zip(self._ids, self._labels) if lab >= 0}

    def assign(self, embedding: np.ndarray, speech_ratio: float) -> int | None:
        """The speaker index for this embedding (possibly a new one), or None when it cannot be trusted yet."""
        cfg = self.config
        embedding = _unit(np.asarray(embedding, np.float32))
        weight = float(speech_ratio) if speech_ratio >= cfg.min_speech_ratio_update else _WEAK_WEIGHT
        self._remember(embedding, weight)
        pos = len(self._embs) - 1
        if self._num == 0:  # the first talker gets a label at once
            return self._found([pos])
        dists = self.distances(embedding)
        nearest = int(np.argmin(dists))
        if dists[nearest] < cfg.new_speaker_distance:
            self._far = []
            self._labels[pos] = nearest
            self._refine()
            if cfg.split_check_every and self._next_id % cfg.split_check_every == 0:
                self._split_mixed()
            self._merge_close()
            return int(self._labels[pos])
        if speech_ratio >= cfg.min_speech_ratio_new and self._num < cfg.max_speakers:
            self._far.append(pos)
            run = self._far[-cfg.new_speaker_patience :]
            if len(run) >= cfg.new_speaker_patience and self._coherent(run):
                self._far = []
                weak = self._provisional()
                if weak is not None:  # a speaker founded from weak windows only: founded afresh
                    for p in run:
                        self._labels[p] = weak
                    self._update_centroids()
                    self._refine()
                    return int(self._labels[run[-1]])
                return self._found(run)
        else:
            self._far = []
        # not (yet) a new speaker: the nearest one; it does not move the centroid until confirmed
        return nearest

    # --- internals ---

    def _remember(self, embedding: np.ndarray, weight: float) -> None:
        self._embs.append(embedding)
        self._weights.append(weight)
        self._ids.append(self._next_id)
        self._labels.append(-1)
        self._next_id += 1
        if len(self._embs) > self.config.memory:
            lab = self._labels[0]
            if lab >= 0:
                self._old_sums[lab] = self._old_sums[lab] + self._weights[0] * self._embs[0]
            del self._embs[0], self._weights[0], self._ids[0], self._labels[0]
            self._far = [p - 1 for p in self._far if p > 0]

    def _merge_close(self) -> None:
        """Merge the younger of the closest pair of live speakers into the older while they are closer than
        ``merge_distance``: its remembered embeddings and history join the older one."""
        cfg = self.config
        while cfg.merge_distance > 0 and self._num - len(self._merged) >= 2:
            alive = [k for k in range(self._num) if k not in self._merged]
            cents = self._centroids[alive]
            dists = 1.0 - cents @ cents.T
            np.fill_diagonal(dists, np.inf)
            i, j = np.unravel_index(int(np.argmin(dists)), dists.shape)
            if dists[i, j] >= cfg.merge_distance:
                return
            older, younger = alive[min(i, j)], alive[max(i, j)]
            self._merged[younger] = older
            for k, target in self._merged.items():  # chains: a speaker merged into one merged now
                if target == younger:
                    self._merged[k] = older
            for p, lab in enumerate(self._labels):
                if lab == younger:
                    self._labels[p] = older
            self._old_sums[older] = self._old_sums[older] + self._old_sums[younger]
            self._old_sums[younger] = np.zeros_like(self._old_sums[younger])
            self._update_centroids()

    def _provisional(self) -> int | None:
        """A speaker whose centroid rests on weak windows only (e.g. the first one, founded at once from a
        mostly silent window), if any."""
        weights, labels = np.asarray(self._weights), np.asarray(self._labels)
        for k in range(self._num):
            if k in self._merged:
                continue
            if not np.any(self._old_sums[k]) and weights[labels == k].sum() < 0.5:
                return k
        return None

    def _coherent(self, positions: list[int]) -> bool:
        run = np.stack([self._embs[p] for p in positions])
        centre = _unit(run.mean(axis=0))
        return bool(np.all(1.0 - run @ centre < self.config.new_speaker_distance))

    def _found(self, positions: list[int]) -> int:
        speaker = self._num
        self._num += 1
        self._old_sums.append(np.zeros_like(self._embs[positions[0]]))
        for p in positions:
            self._labels[p] = speaker
        self._update_centroids()
        self._refine()
        return int(self._labels[positions[-1]])

    def _update_centroids(self) -> None:
        embs = np.stack(self._embs)
        weights = np.asarray(self._weights)
        labels = np.asarray(self._labels)
        cents = []
        for k in range(self._num):
            members = labels == k
            total = self._old_sums[k] + (weights[members, None] * embs[members]).sum(axis=0)
            if not np.any(total):  # lost every member: keep the old centroid
                total = self._centroids[k] if k < len(self._centroids) else embs[members].sum(axis=0)
            cents.append(_unit(total))
        self._centroids = np.stack(cents).astype(np.float32)

    def _refine(self) -> None:
        """Weighted spherical k-means over the remembered, assigned embeddings, from the current centroids.
        Embeddings still waiting to found a speaker (the current far run) are left out."""
        if self._num < 2:
            self._update_centroids()
            return
        embs = np.stack(self._embs)
        pending = set(self._far)
        movable = np.array([lab >= 0 and p not in pending for p, lab in enumerate(self._labels)])
        merged = list(self._merged)
        for _ in range(self.config.refine_iterations):
            sims = embs @ self._centroids.T
            sims[:, merged] = -np.inf  # a merged speaker takes no embedding back
            new = np.argmax(sims, axis=1)
            labels = np.asarray(self._labels)
            changed = movable & (new != labels)
            if not changed.any():
                break
            for p in np.flatnonzero(changed):
                self._labels[p] = int(new[p])
            self._update_centroids()
        self._update_centroids()

    def _split_mixed(self) -> None:
        """Split a speaker whose trusted remembered embeddings form two distinct groups (2-means)."""
        cfg = self.config
        if self._num >= cfg.max_speakers:
            return
        embs = np.stack(self._embs)
        labels = np.asarray(self._labels)
        trusted = np.asarray(self._weights) >= cfg.min_speech_ratio_update
        for k in range(self._num):
            members = np.flatnonzero((labels == k) & trusted)
            if members.size < 2 * cfg.split_min_members:
                continue
            x = embs[members]
            # start from the member farthest from the centroid and the member farthest from that one
            a = x[np.argmin(x @ self._centroids[k])]
            b = x[np.argmin(x @ a)]
            for _ in range(10):
                side = (x @ a) < (x @ b)
                if side.all() or not side.any():
                    break
                a, b = _unit(x[~side].mean(axis=0)), _unit(x[side].mean(axis=0))
            n_b = int(side.sum())
            if min(n_b, side.size - n_b) < cfg.split_min_members:
                continue
            # average-linkage distance between the groups, as the final re-clustering measures clusters
            if 1.0 - float(np.mean(x[side] @ x[~side].T)) < cfg.split_distance:
                continue
            # the group holding the newest member keeps the index (the live turn goes on); the other is new
            moved = members[side] if not side[-1] else members[~side]
            speaker = self._num
            self._num += 1
            self._old_sums.append(np.zeros_like(self._embs[0]))
            for p in moved:
                self._labels[p] = speaker
            self._old_sums[k] = np.zeros_like(self._old_sums[k])  # its older history was the mixture
            self._update_centroids()
            self._refine()
            return

