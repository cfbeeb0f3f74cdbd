"""The final timeline: re-clustering of all a session's embeddings once the whole session is known.

Agglomerative clustering (average linkage, cosine distance) over every step embedding; each speech frame
takes the cluster of the embedding whose window is centred nearest to it (the live path can only use windows
that end at the frame; here later windows are available). The clusters are then named after the live
speakers they speak with, by time (:func:`name_by_live`): live and final labels agree wherever the final
clustering keeps a live speaker, and a speaker no live one covers gets a name no live speaker had.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from rtsep.diarize.online import DiarizationConfig, StepRecord
from rtsep.diarize.overlap import add_second_speakers


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


# a final speaker keeps a live speaker's name only when they share at least this much speech ...
MIN_SHARED_S = 1.0
# ... and at least this share of the final speaker's own speech (else it is a new speaker, with a fresh name)
MIN_SHARED_FRACTION = 0.2


def shared_samples(final: Sequence[tuple[int, int, int]], live: Sequence[tuple[int, int, int]],
                   n_final: int, n_live: int) -> np.ndarray:
    """(n_final, n_live): samples during which final speaker f and live speaker l both speak, from
    (start_sample, end_sample, speaker) segments of each timeline."""
    shared = np.zeros((n_final, n_live))
    if not final or not live:
        return shared
    live_sorted = sorted(live)
    starts = np.array([s for s, _, _ in live_sorted])
    longest = max(e - s for s, e, _ in live_sorted)
    for f_start, f_end, f in final:
        # live segments that may overlap [f_start, f_end): those starting before f_end and after f_start - longest
        lo = int(np.searchsorted(starts, f_start - longest, side="left"))
        hi = int(np.searchsorted(starts, f_end, side="left"))
        for l_start, l_end, k in live_sorted[lo:hi]:
            overlap = min(f_end, l_end) - max(f_start, l_start)
            if overlap > 0:
                shared[f, k] += overlap
    return shared


def name_by_live(final: Sequence[tuple[int, int, int]], live: Sequence[tuple[int, int, int]],
                 live_names: Iterable[int] = (), rate_hz: int = 16000, min_shared_s: float = MIN_SHARED_S,
                 min_shared_fraction: float = MIN_SHARED_FRACTION) -> dict[int, int]:
    """Names (speaker indices) for the final clusters of ``final`` after the live speakers of ``live``.

    An optimal one-to-one assignment (Hungarian) on the seconds each pair speaks at the same time; a pair is
    kept when they share ``min_shared_s`` and ``min_shared_fraction`` of the final speaker's speech. Every
    other final speaker gets a fresh index, above every live speaker's (those of ``live`` and ``live_names``),
    in order of first appearance. So wherever the final clustering keeps a live speaker, the names agree; a
    merge of two live speakers keeps the name of the one it shares most with; a split keeps the name on the
    larger share."""
    finals = sorted({f for _, _, f in final})
    if not finals:
        return {}
    used = {k for _, _, k in live} | set(live_names)
    n_final = max(finals) + 1
    n_live = max(used) + 1 if used else 0
    mapping: dict[int, int] = {}
    if n_live and live:
        shared = shared_samples(final, live, n_final, n_live)
        own = np.zeros(n_final)
        for start, end, f in final:
            own[f] += end - start
        rows, cols = linear_sum_assignment(-shared)
        for r, c in zip(rows, cols):
            if shared[r, c] >= min_shared_s * rate_hz and shared[r, c] >= min_shared_fraction * own[r]:
                mapping[int(r)] = int(c)
    fresh = n_live
    for _, _, f in sorted(final):
        if f not in mapping:
            mapping[f] = fresh
            fresh += 1
    return mapping


def final_segments(
    records: Sequence[StepRecord], embedding_live_labels: dict[int, int], config: DiarizationConfig,
    max_speakers: int, live_segments: Sequence[tuple[int, int, int]] = (),
    overlaps: Sequence[tuple[int, int]] = (),
) -> list[tuple[int, int, int]]:
    """(start_sample, end_sample, speaker) of the final timeline, its speakers named after the live ones
    (``live_segments``: the live timeline's closed turns, (start_sample, end_sample, speaker); see
    :func:`name_by_live`). With ``[overlap] enabled``, ``overlaps`` (the detector's (start_sample, end_sample)
    regions) get a second speaker (rtsep.diarize.overlap.add_second_speakers)."""
    with_emb = [r for r in records if r.embedding is not None]
    if not with_emb:
        return []
    embeddings = np.stack([r.embedding for r in with_emb])
    ids = recluster(embeddings, config.final_distance_threshold, max_speakers, config.final_min_cluster_steps)
    # centre (in samples) of each embedding's window: it ends where its step ends
    centres = np.array(
        [r.start_sample + config.step_samples - config.embedding_window_samples / 2 for r in with_emb]
    )
    frame = config.frame_samples
    segments: list[tuple[int, int, int]] = []
    current: list[int] | None = None  # [start, end, cluster]
    max_gap = config.hangover_frames * frame
    for r in records:
        end_of_valid = r.start_sample + r.valid_samples
        for i in np.flatnonzero(r.speech):
            start = r.start_sample + int(i) * frame
            end = min(start + frame, end_of_valid)
            if end <= start:
                continue
            k = int(np.argmin(np.abs(centres - (start + frame / 2))))
            cluster = int(ids[k])
            if current is not None and current[2] == cluster and start - current[1] <= max_gap:
                current[1] = end
            else:
                if current is not None:
                    segments.append((current[0], current[1], current[2]))
                current = [start, end, cluster]
    if current is not None:
        segments.append((current[0], current[1], current[2]))
    names = name_by_live(segments, live_segments, embedding_live_labels.values(), config.sample_rate_hz)
    named = [(start, end, names[cluster]) for start, end, cluster in segments]
    if config.overlap.enabled and overlaps:
        named = add_second_speakers(named, overlaps, embeddings, centres, [names.get(int(c)) for c in ids],
                                    config.overlap.method, round(config.overlap.max_gap_s * config.sample_rate_hz))
    return named
