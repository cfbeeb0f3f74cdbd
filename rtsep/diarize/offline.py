"""The final timeline: re-clustering of all a session's embeddings once the whole session is known.

:func:`final_segments` makes it, in this order (each a function of its own, tested alone):

0. sessions shorter than ``final_short_session_s`` are clustered as before these settings (ahc on the
   unaveraged embeddings): the settings were chosen on meetings of 71-119 s;
1. the step embeddings, each optionally averaged with its neighbours in time (:func:`average_neighbours`: the
   live path's 1 s windows are noisy; the session end knows the steps on both sides);
2. clustering of all of them at once (:func:`recluster`): agglomerative (average linkage, cosine distance, a
   distance threshold) or spectral with the speaker count from the eigengap (:func:`spectral_cluster`);
   clusters with too little speech fold into the nearest large one;
3. a speaker for every speech frame (:func:`frame_speakers`): the cluster of the embedding whose window is
   centred nearest to it, or, with ``final_switch_penalty``, the best path through the frames' similarities to
   the clusters' centroids with a penalty per speaker change (Viterbi, :func:`viterbi_labels`);
4. turns from the frames (:func:`turns_from_frames`), then per speaker the gaps shorter than ``final_min_gap_s``
   filled (:func:`fill_gaps`: silero leaves holes inside turns that a listener hears as one turn) and turns
   shorter than ``final_min_duration_on_s`` dropped (:func:`drop_short`);
5. the clusters named after the live speakers they speak with, by time (:func:`name_by_live`): live and final
   labels agree wherever the final clustering keeps a live speaker, and a speaker no live one covers gets a
   name no live speaker had.

Step 4 is where a second label inside overlaps belongs (it works on cluster ids, before the naming).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment
from scipy.sparse.linalg import ArpackNoConvergence, eigsh

from rtsep.diarize.online import DiarizationConfig, StepRecord
from rtsep.diarize.overlap import add_second_speakers

log = logging.getLogger(__name__)

CLUSTERING_METHODS = ("ahc", "spectral")
KMEANS_STARTS = 10  # spectral: k-means runs from this many seeded starts


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    return embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-8)


def average_neighbours(embeddings: np.ndarray, step_indices: np.ndarray, radius_steps: int) -> np.ndarray:
    """Each (unit) embedding averaged with those whose step lies within ``radius_steps`` of its own (and
    re-normalised); 0 returns them unchanged. Steps without an embedding leave a hole: nothing is averaged
    across more than ``radius_steps`` steps of time."""
    unit = unit_rows(np.asarray(embeddings, np.float64))
    if radius_steps <= 0 or len(unit) < 2:
        return unit
    steps = np.asarray(step_indices)
    lo = np.searchsorted(steps, steps - radius_steps, side="left")
    hi = np.searchsorted(steps, steps + radius_steps, side="right")
    cumulative = np.vstack([np.zeros((1, unit.shape[1])), np.cumsum(unit, axis=0)])
    return unit_rows(cumulative[hi] - cumulative[lo])


def fold_small(unit: np.ndarray, ids: np.ndarray, min_size: int) -> np.ndarray:
    """Clusters with fewer than ``min_size`` members join the large cluster whose centroid each member is
    nearest to; ids renumbered 0..K-1. Nothing folds when no cluster is large."""
    ids = ids.copy()
    sizes = np.bincount(ids)
    large = np.flatnonzero(sizes >= min_size)
    if large.size and large.size < sizes.size:
        centroids = np.stack([unit[ids == c].mean(axis=0) for c in large])
        for c in np.flatnonzero(sizes < min_size):
            members = ids == c
            ids[members] = large[np.argmax(unit[members] @ centroids.T, axis=1)]
    _, ids = np.unique(ids, return_inverse=True)
    return ids.astype(np.int64)


def spectral_cluster(unit: np.ndarray, max_speakers: int, pruning: float, min_neighbours: int = 0,
                     seed: int = 0) -> np.ndarray:
    """Spectral clustering of unit embeddings, the speaker count from the largest eigengap.

    Affinity: cosine similarity, each row keeping only its ``pruning`` share of largest entries, and at least
    ``min_neighbours`` of them (the rest 0), symmetrised; count: the k (1..max_speakers) with the largest gap
    between the k-th and (k+1)-th smallest eigenvalues of the normalised Laplacian; ids from k-means on the rows
    of the first k eigenvectors."""
    from scipy.cluster.vq import kmeans2

    n = len(unit)
    if n < 3 or max_speakers < 2:
        return np.zeros(n, np.int64)
    affinity = np.clip(unit @ unit.T, 0.0, None)
    keep = min(n, max(1, int(np.ceil(pruning * n)), min_neighbours))
    cut = np.partition(affinity, n - keep, axis=1)[:, n - keep][:, None]
    affinity = np.where(affinity >= cut, affinity, 0.0)
    affinity = (affinity + affinity.T) / 2
    degree = affinity.sum(axis=1)
    inv_sqrt = 1.0 / np.sqrt(np.maximum(degree, 1e-12))
    normalised = inv_sqrt[:, None] * affinity * inv_sqrt[None, :]
    top = min(max_speakers + 1, n)
    # the smallest eigenvalues of the normalised Laplacian I - normalised are 1 - its largest: Lanczos on those
    # few costs a 10-min session (~2300 embeddings) under a second where a full decomposition takes ~15 s
    largest = vectors = None
    if top < n - 1 and n > 64:
        try:
            largest, vectors = eigsh(normalised, k=top, which="LA", v0=np.full(n, 1 / np.sqrt(n)))
        except ArpackNoConvergence as exc:
            log.warning("spectral clustering: Lanczos did not converge (%s); full decomposition instead", exc)
    if largest is None or vectors is None:
        largest, vectors = np.linalg.eigh(normalised)
        largest, vectors = largest[-top:], vectors[:, -top:]
    order = np.argsort(-largest)
    values, vectors = 1.0 - largest[order], vectors[:, order]
    k = int(np.argmax(np.diff(values))) + 1
    if k == 1:
        return np.zeros(n, np.int64)
    features = vectors[:, :k]
    features = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    best_ids, best_distortion = None, np.inf
    for attempt in range(KMEANS_STARTS):  # k-means from several seeded starts, the tightest kept
        centres, ids = kmeans2(features, k, minit="++", seed=seed + attempt)
        distortion = float(np.sum((features - centres[ids]) ** 2))
        if distortion < best_distortion:
            best_ids, best_distortion = ids, distortion
    _, ids = np.unique(best_ids, return_inverse=True)
    return ids.astype(np.int64)


def recluster(embeddings: np.ndarray, distance_threshold: float, max_speakers: int, min_size: int,
              method: str = "ahc", pruning: float = 0.2, min_neighbours: int = 0) -> np.ndarray:
    """Cluster ids 0..K-1 for each embedding (K <= max_speakers): ``method`` "ahc" (average linkage cut at
    ``distance_threshold`` cosine distance) or "spectral" (:func:`spectral_cluster`); then :func:`fold_small`."""
    n = len(embeddings)
    if n <= 1:
        return np.zeros(n, np.int64)
    unit = unit_rows(embeddings)
    if method == "spectral":
        ids = spectral_cluster(unit, max_speakers, pruning, min_neighbours)
    elif method == "ahc":
        tree = linkage(unit, method="average", metric="cosine")
        ids = fcluster(tree, t=distance_threshold, criterion="distance") - 1
        if ids.max() + 1 > max_speakers:
            ids = fcluster(tree, t=max_speakers, criterion="maxclust") - 1
    else:
        raise ValueError(f"clustering method must be one of {CLUSTERING_METHODS}, got {method!r}")
    return fold_small(unit, ids, min_size)


def viterbi_labels(scores: np.ndarray, switch_penalty: float) -> np.ndarray:
    """The label path through (frames, K) scores that maximises the sum of its scores minus
    ``switch_penalty`` per change of label."""
    frames, k = scores.shape
    if frames == 0:
        return np.zeros(0, np.int64)
    total = scores[0].astype(np.float64).copy()
    back = np.zeros((frames, k), np.int64)
    for t in range(1, frames):
        best_prev = int(np.argmax(total))
        switch = total[best_prev] - switch_penalty
        stay = total >= switch
        back[t] = np.where(stay, np.arange(k), best_prev)
        total = np.where(stay, total, switch) + scores[t]
    path = np.zeros(frames, np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(frames - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def frame_speakers(frame_centres: np.ndarray, embedding_centres: np.ndarray, unit: np.ndarray, ids: np.ndarray,
                   switch_penalty: float | None) -> np.ndarray:
    """A cluster for each speech frame (centres in samples, ascending). ``switch_penalty`` None: the cluster
    of the embedding centred nearest the frame; else :func:`viterbi_labels` on the cosine similarity of that
    embedding to each cluster's centroid."""
    order = np.searchsorted(embedding_centres, frame_centres)
    left = np.clip(order - 1, 0, len(embedding_centres) - 1)
    right = np.clip(order, 0, len(embedding_centres) - 1)
    nearest = np.where(np.abs(embedding_centres[left] - frame_centres) <= np.abs(embedding_centres[right]
                                                                               - frame_centres), left, right)
    if switch_penalty is None:
        return ids[nearest]
    centroids = unit_rows(np.stack([unit[ids == c].mean(axis=0) for c in range(int(ids.max()) + 1)]))
    similarity = unit @ centroids.T
    return viterbi_labels(similarity[nearest], switch_penalty)


def turns_from_frames(frame_starts: np.ndarray, frame_ends: np.ndarray, labels: np.ndarray,
                      max_gap_samples: int) -> list[tuple[int, int, int]]:
    """(start, end, label) turns from labelled frames (in time order): a frame continues the current turn when
    it has its label and starts at most ``max_gap_samples`` after it ends."""
    segments: list[tuple[int, int, int]] = []
    current: list[int] | None = None
    for start, end, label in zip(frame_starts.tolist(), frame_ends.tolist(), labels.tolist()):
        if current is not None and current[2] == label and start - current[1] <= max_gap_samples:
            current[1] = end
        else:
            if current is not None:
                segments.append((current[0], current[1], current[2]))
            current = [start, end, label]
    if current is not None:
        segments.append((current[0], current[1], current[2]))
    return segments


def fill_gaps(segments: Iterable[tuple[int, int, int]], max_gap_samples: int) -> list[tuple[int, int, int]]:
    """Per speaker, turns less than ``max_gap_samples`` apart joined into one (pyannote's ``min_duration_off``;
    the filled gap may overlap another speaker's turn). Sorted by start."""
    by_speaker: dict[int, list[list[int]]] = {}
    for start, end, speaker in sorted(segments):
        turns = by_speaker.setdefault(speaker, [])
        if turns and start - turns[-1][1] < max_gap_samples:
            turns[-1][1] = max(turns[-1][1], end)
        else:
            turns.append([start, end])
    return sorted((s, e, k) for k, turns in by_speaker.items() for s, e in turns)


def drop_short(segments: Iterable[tuple[int, int, int]], min_samples: int) -> list[tuple[int, int, int]]:
    """The turns at least ``min_samples`` long (pyannote's ``min_duration_on``)."""
    return [(s, e, k) for s, e, k in segments if e - s >= min_samples]


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


def speech_frames(records: Sequence[StepRecord], frame_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) in samples of every speech frame of the records, in time order (ends clipped to each
    step's valid audio; frames past it are left out)."""
    starts: list[int] = []
    ends: list[int] = []
    for r in records:
        end_of_valid = r.start_sample + r.valid_samples
        for i in np.flatnonzero(r.speech):
            start = r.start_sample + int(i) * frame_samples
            end = min(start + frame_samples, end_of_valid)
            if end > start:
                starts.append(start)
                ends.append(end)
    return np.array(starts, np.int64), np.array(ends, np.int64)


def session_samples(records: Sequence[StepRecord]) -> int:
    """The session's length in samples: where its last step's valid audio ends."""
    return max((r.start_sample + r.valid_samples for r in records), default=0)


def final_segments(
    records: Sequence[StepRecord], embedding_live_labels: dict[int, int], config: DiarizationConfig,
    max_speakers: int, live_segments: Sequence[tuple[int, int, int]] = (),
    overlaps: Sequence[tuple[int, int]] = (),
) -> list[tuple[int, int, int]]:
    """(start_sample, end_sample, speaker) of the final timeline, its speakers named after the live ones
    (``live_segments``: the live timeline's closed turns, (start_sample, end_sample, speaker); see
    :func:`name_by_live`). The steps in the module's docstring, with the ``final_*`` settings of ``config``. With
    ``[overlap] enabled``, ``overlaps`` (the detector's (start_sample, end_sample) regions) get a second speaker
    (rtsep.diarize.overlap.add_second_speakers)."""
    with_emb = [r for r in records if r.embedding is not None]
    if not with_emb:
        return []
    method, radius = config.final_clustering, config.final_average_radius_steps
    if session_samples(records) < config.final_short_session_s * config.sample_rate_hz:
        method, radius = "ahc", 0  # shorter than any session the settings were chosen on: clustered as before
    unit = average_neighbours(np.stack([r.embedding for r in with_emb]),
                              np.array([r.step_index for r in with_emb]), radius)
    ids = recluster(unit, config.final_distance_threshold, max_speakers, config.final_min_cluster_steps,
                    method, config.final_spectral_pruning, config.final_spectral_min_neighbours)
    # centre (in samples) of each embedding's window: it ends where its step ends
    centres = np.array(
        [r.start_sample + config.step_samples - config.embedding_window_samples / 2 for r in with_emb]
    )
    starts, ends = speech_frames(records, config.frame_samples)
    if starts.size == 0:
        return []
    labels = frame_speakers((starts + ends) / 2, centres, unit, ids, config.final_switch_penalty)
    rate = config.sample_rate_hz
    segments = turns_from_frames(starts, ends, labels, config.hangover_frames * config.frame_samples)
    segments = fill_gaps(segments, round(config.final_min_gap_s * rate))
    segments = drop_short(segments, round(config.final_min_duration_on_s * rate))
    names = name_by_live(segments, live_segments, embedding_live_labels.values(), rate)
    named = [(start, end, names[cluster]) for start, end, cluster in segments]
    if config.overlap.enabled and overlaps:
        named = add_second_speakers(named, overlaps, unit, centres, [names.get(int(c)) for c in ids],
                                    config.overlap.method, round(config.overlap.max_gap_s * rate))
    return named
