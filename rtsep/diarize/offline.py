"""The final timeline: re-clustering of all a session's embeddings once the whole session is known.

Agglomerative clustering (average linkage, cosine distance) over every step embedding; clusters are
matched to the live speaker labels (so tracks and both timelines use the same names where they agree),
and each speech frame takes the label of the embedding whose window is centred nearest to it (the live
path can only use windows that end at the frame; here later windows are available).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from rtsep.diarize.online import DiarizationConfig, StepRecord


def recluster(embeddings: np.ndarray, distance_threshold: float, max_speakers: int, min_size: int) -> np.ndarray:
    """Cluster ids 0..K-1 for each embedding (K <= max_speakers)."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, np.int64)
    if n == 1:
        return np.zeros(1, np.int64)
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-8)
    tree = linkage(unit, method="average", metric="cosine")
    ids = fcluster(tree, t=distance_threshold, criterion="distance") - 1
    if ids.max() + 1 > max_speakers:
        ids = fcluster(tree, t=max_speakers, criterion="maxclust") - 1
    # fold clusters too small to be a speaker into the nearest large one
    sizes = np.bincount(ids)
    large = np.flatnonzero(sizes >= min_size)
    if large.size and large.size < sizes.size:
        centroids = np.stack([unit[ids == c].mean(axis=0) for c in large])
        for c in np.flatnonzero(sizes < min_size):
            members = ids == c
            ids[members] = large[np.argmax(unit[members] @ centroids.T, axis=1)]
    _, ids = np.unique(ids, return_inverse=True)
    return ids.astype(np.int64)


def match_to_live(final_ids: np.ndarray, live_ids: np.ndarray) -> np.ndarray:
    """Rename final clusters after the live labels they overlap most (Hungarian); the rest get new names."""
    if final_ids.size == 0:
        return final_ids
    n_final = int(final_ids.max()) + 1
    valid = live_ids >= 0
    n_live = int(live_ids[valid].max()) + 1 if valid.any() else 0
    mapping = {}
    if n_live:
        counts = np.zeros((n_final, n_live))
        np.add.at(counts, (final_ids[valid], live_ids[valid]), 1)
        rows, cols = linear_sum_assignment(-counts)
        mapping = {int(r): int(c) for r, c in zip(rows, cols) if counts[r, c] > 0}
    next_name = n_live
    for f in range(n_final):
        if f not in mapping:
            mapping[f] = next_name
            next_name += 1
    return np.array([mapping[int(f)] for f in final_ids], np.int64)


def final_segments(
    records: Sequence[StepRecord], embedding_live_labels: dict[int, int], config: DiarizationConfig, max_speakers: int
) -> list[tuple[int, int, int]]:
    """(start_sample, end_sample, speaker) of the final timeline."""
    with_emb = [r for r in records if r.embedding is not None]
    if not with_emb:
        return []
    embeddings = np.stack([r.embedding for r in with_emb])
    ids = recluster(embeddings, config.final_distance_threshold, max_speakers, config.final_min_cluster_steps)
    live = np.array([embedding_live_labels.get(r.step_index, -1) for r in with_emb])
    names = match_to_live(ids, live)
    # centre (in samples) of each embedding's window: it ends where its step ends
    centres = np.array(
        [r.start_sample + config.step_samples - config.embedding_window_samples / 2 for r in with_emb]
    )
    frame = config.frame_samples
    segments: list[tuple[int, int, int]] = []
    current: list[int] | None = None  # [start, end, speaker]
    max_gap = config.hangover_frames * frame
    for r in records:
        end_of_valid = r.start_sample + r.valid_samples
        for i in np.flatnonzero(r.speech):
            start = r.start_sample + int(i) * frame
            end = min(start + frame, end_of_valid)
            if end <= start:
                continue
            k = int(np.argmin(np.abs(centres - (start + frame / 2))))
            speaker = int(names[k])
            if current is not None and current[2] == speaker and start - current[1] <= max_gap:
                current[1] = end
            else:
                if current is not None:
                    segments.append((current[0], current[1], current[2]))
                current = [start, end, speaker]
    if current is not None:
        segments.append((current[0], current[1], current[2]))
    return segments
