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

With ``recluster_every`` > 0, every that many embeddings the trusted remembered ones are clustered afresh with
hindsight, as the final timeline clusters a whole session (rtsep.diarize.offline: embeddings averaged with their
neighbours in time, spectral clustering with the count from the eigengap; agglomerative while the history is
short), and the result replaces the live assignment of the remembered embeddings. The new clusters keep the
live speakers' indices (Hungarian matching on the speech they share); a cluster no live speaker matches founds a
new speaker; with ``recluster_merge`` a live speaker that no cluster kept is merged into the one that took most
of its embeddings. The greedy incremental decisions (a centroid founded from a few windows, one that drifted)
are thus repaired from the whole history, not only from the nearest-centroid moves of the refinement.
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
    # periodic re-clustering of the remembered embeddings with hindsight (module docstring); 0: never
    recluster_every: int = 0
    recluster_min_embeddings: int = 24  # trusted embeddings needed before the first re-clustering
    recluster_spectral_min_embeddings: int = 160  # fewer: agglomerative at recluster_distance, no averaging
    recluster_distance: float = 0.32  # agglomerative: cosine distance at which clusters stop merging
    recluster_radius_steps: int = 4  # spectral: each embedding averaged with those this many steps either side
    recluster_pruning: float = 0.15  # spectral: share of each embedding's most similar others kept as edges
    recluster_min_neighbours: int = 36  # spectral: and at least this many
    recluster_min_cluster: int = 12  # clusters with fewer embeddings fold into the nearest large one
    recluster_merge: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.new_speaker_distance < 2.0:
            raise ConfigError("new_speaker_distance must be within (0, 2)")
        if self.max_speakers < 1 or self.new_speaker_patience < 1 or self.memory < 1:
            raise ConfigError("max_speakers, new_speaker_patience and memory must be >= 1")
        if self.refine_iterations < 0:
            raise ConfigError("refine_iterations must be >= 0")
        if not 0.0 <= self.merge_distance < 2.0:
            raise ConfigError("merge_distance must be within [0, 2)")
        if self.recluster_every < 0 or self.recluster_radius_steps < 0 or self.recluster_min_neighbours < 0:
            raise ConfigError("recluster_every, recluster_radius_steps and recluster_min_neighbours must be >= 0")
        if self.recluster_min_embeddings < 3 or self.recluster_min_cluster < 1:
            raise ConfigError("recluster_min_embeddings must be >= 3 and recluster_min_cluster >= 1")
        if not 0.0 < self.recluster_distance < 2.0 or not 0.0 < self.recluster_pruning <= 1.0:
            raise ConfigError("recluster_distance must be within (0, 2) and recluster_pruning within (0, 1]")


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
        self._steps: list[int] = []  # the step each remembered embedding came from (its position if none given)
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

    def assign(self, embedding: np.ndarray, speech_ratio: float, step_index: int | None = None) -> int | None:
        """The speaker index for this embedding (possibly a new one), or None when it cannot be trusted yet.
        ``step_index``: the step the embedding's window ends with (re-clustering averages neighbours in time)."""
        cfg = self.config
        embedding = _unit(np.asarray(embedding, np.float32))
        weight = float(speech_ratio) if speech_ratio >= cfg.min_speech_ratio_update else _WEAK_WEIGHT
        self._remember(embedding, weight, self._next_id if step_index is None else int(step_index))
        pos = len(self._embs) - 1
        if self._num == 0:  # the first talker gets a label at once
            return self._found([pos])
        if cfg.recluster_every and self._next_id % cfg.recluster_every == 0:
            self._recluster()
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

    def _remember(self, embedding: np.ndarray, weight: float, step_index: int) -> None:
        self._embs.append(embedding)
        self._weights.append(weight)
        self._ids.append(self._next_id)
        self._steps.append(step_index)
        self._labels.append(-1)
        self._next_id += 1
        if len(self._embs) > self.config.memory:
            lab = self._labels[0]
            if lab >= 0:
                self._old_sums[lab] = self._old_sums[lab] + self._weights[0] * self._embs[0]
            del self._embs[0], self._weights[0], self._ids[0], self._labels[0], self._steps[0]
            self._far = [p - 1 for p in self._far if p > 0]

    def _recluster(self) -> None:
        """The remembered, trusted, assigned embeddings clustered afresh with hindsight (module docstring)."""
        from scipy.optimize import linear_sum_assignment

        from rtsep.diarize.offline import average_neighbours, recluster

        cfg = self.config
        pending = set(self._far)
        labels = np.asarray(self._labels)
        weights = np.asarray(self._weights)
        trusted = np.flatnonzero((labels >= 0) & (weights >= cfg.min_speech_ratio_update)
                                 & np.array([p not in pending for p in range(len(labels))]))
        if trusted.size < cfg.recluster_min_embeddings:
            return
        embs = np.stack([self._embs[p] for p in trusted])
        if trusted.size >= cfg.recluster_spectral_min_embeddings:
            unit = average_neighbours(embs, np.asarray(self._steps)[trusted], cfg.recluster_radius_steps)
            ids = recluster(unit, cfg.recluster_distance, cfg.max_speakers, cfg.recluster_min_cluster, "spectral",
                            cfg.recluster_pruning, cfg.recluster_min_neighbours)
        else:
            ids = recluster(embs, cfg.recluster_distance, cfg.max_speakers, cfg.recluster_min_cluster, "ahc")
        live = labels[trusted]
        shared = np.zeros((int(ids.max()) + 1, self._num))
        np.add.at(shared, (ids, live), weights[trusted])
        shared[:, list(self._merged)] = 0.0  # a merged speaker is never matched again
        rows, cols = linear_sum_assignment(-shared)
        mapping = {int(r): int(c) for r, c in zip(rows, cols) if shared[r, c] > 0}
        for cluster in range(shared.shape[0]):
            if cluster in mapping:
                continue
            if self._num < cfg.max_speakers:  # hindsight found a talker the live path had not: a new speaker
                mapping[cluster] = self._num
                self._num += 1
                self._old_sums.append(np.zeros_like(self._embs[0]))
            else:
                mapping[cluster] = int(np.argmax(shared[cluster]))
        new = np.array([mapping[int(c)] for c in ids])
        if cfg.recluster_merge:
            kept = set(mapping.values())
            for speaker in set(live.tolist()) - kept - set(self._merged):
                target = int(np.bincount(new[live == speaker]).argmax())
                self._merged[speaker] = target
                for k, t in self._merged.items():  # chains, as in _merge_close
                    if t == speaker:
                        self._merged[k] = target
                self._old_sums[target] = self._old_sums[target] + self._old_sums[speaker]
                self._old_sums[speaker] = np.zeros_like(self._old_sums[speaker])
        for p, speaker in zip(trusted, new):
            self._labels[int(p)] = int(speaker)
        self._update_centroids()

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

