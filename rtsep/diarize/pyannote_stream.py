"""Streaming diarization on a segmentation model's rolling buffer, in the manner of diart (sans-I/O, numpy only).

Every step the runtime (rtsep.runtime.pyannote) runs the segmentation model over the buffer that ends with the
step (the model's own duration, e.g. 5 s or 10 s) and gives, per buffer, the activity of each *local* speaker on
the session's frame grid (powerset outputs converted to multilabel, so two local speakers active at once are both
active) and one embedding per active local speaker (the embedding model weighted by that speaker's activity).
This module turns those into *global* speakers and a timeline:

1. **Incremental clustering** (:class:`CentroidClustering`): each active local speaker is matched to a global
   centroid by cosine distance, one local speaker per centroid per buffer (Hungarian assignment). A match farther
   than ``new_speaker_distance`` makes a new speaker while there are fewer than the cap; at the cap it goes to the
   nearest centroid still free in this buffer. A centroid is updated only by local speakers active enough
   (mean activity >= ``update_min_activity``): short or faint local speakers are labelled but teach nothing.
2. **Aggregation**: each buffer's activity, mapped to global speakers, is added onto the session's frames; a frame
   is decided once ``latency_steps`` more buffers have covered it (``0``: the label latency is one step; the buffer's
   length in steps minus one: every buffer that will ever cover the frame has been seen), as the mean over those
   buffers.
3. **Binarisation** per global speaker (onset/offset hysteresis): speakers are independent, so an overlap is
   labelled with both. Audio is routed to the frame's most active speaker (one track per frame).

The final timeline without a final pipeline is the same aggregation once every buffer is in (each frame the mean
of all the buffers that covered it), under the same global names as the live labels.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from rtsep.errors import ConfigError
from rtsep.stream.turns import (
    DiarizationEvent,
    FrameLabels,
    NewSpeaker,
    SegmentClosed,
    SpeakerStarted,
    SpeakerStopped,
    StepAnalysis,
)


@dataclass(frozen=True)
class PyannoteStreamConfig:
    """Section ``[pyannote]``: the streaming diarizer of ``--diarizer pyannote`` (docs/models.md)."""

    # No pyannote weights exist on this machine, so nothing here was tuned: the clustering thresholds and the
    # overlap penalty are the defaults diart publishes for the same algorithm (tau_active, rho_update, delta_new,
    # gamma, beta); a user with the weights tunes them on a development set of their own (docs/models.md).
    step_frames: int = 16  # the step in [diarization] frames (16 x 32 ms = 0.512 s): one buffer per step
    # buffers that must cover a frame after the one that ends with it before it is decided: label latency is
    # (1 + latency_steps) steps; at most the buffer's length in steps minus one (latency = the buffer)
    latency_steps: int = 0
    active_threshold: float = 0.6  # a local speaker with a frame this active is clustered (diart's tau_active)
    update_min_activity: float = 0.3  # its mean activity over the buffer must reach this to update its centroid
    new_speaker_distance: float = 1.0  # cosine distance beyond which a local speaker starts a new global one
    # embedding weights: a local speaker's activity times softmax(beta x activities)^gamma across the buffer's
    # speakers, so frames where others speak too count less (diart's overlapped-speech penalty); gamma 0: activity
    overlap_penalty_gamma: float = 3.0
    overlap_penalty_beta: float = 10.0
    onset: float = 0.5  # aggregated activity that opens a speaker's turn
    offset: float = 0.4  # ... and below which it closes
    min_off_frames: int = 3  # a turn survives pauses this short (frames), so one turn is not split by a breath
    batch_size: int = 32  # local speakers per embedding-model call in the runtime
    # embeddings every this many steps only (the embedding model is most of the cost: bench/RESULTS.md); in between,
    # a buffer's local speakers follow the previous buffer's by their activity on the frames both hold, and a
    # local speaker that follows none waits for the next embeddings. 1: every step, as diart does
    embedding_interval_steps: int = 1

    def __post_init__(self) -> None:
        if self.step_frames < 1:
            raise ConfigError(f"[pyannote] step_frames must be >= 1, got {self.step_frames}")
        if self.latency_steps < 0:
            raise ConfigError(f"[pyannote] latency_steps must be >= 0, got {self.latency_steps}")
        if not 0.0 <= self.offset <= self.onset <= 1.0:
            raise ConfigError(f"[pyannote] needs 0 <= offset <= onset <= 1, got offset {self.offset}, "
                              f"onset {self.onset}")
        if not 0.0 < self.new_speaker_distance <= 2.0:
            raise ConfigError(f"[pyannote] new_speaker_distance must be within (0, 2], got "
                              f"{self.new_speaker_distance}")
        if self.min_off_frames < 0 or self.batch_size < 1:
            raise ConfigError("[pyannote] min_off_frames must be >= 0 and batch_size >= 1")
        if not 0.0 < self.active_threshold <= 1.0 or not 0.0 <= self.update_min_activity <= 1.0:
            raise ConfigError("[pyannote] active_threshold must be within (0, 1] and update_min_activity [0, 1]")
        if self.embedding_interval_steps < 1:
            raise ConfigError(f"[pyannote] embedding_interval_steps must be >= 1, got {self.embedding_interval_steps}")
        if self.overlap_penalty_gamma < 0 or self.overlap_penalty_beta < 0:
            raise ConfigError("[pyannote] overlap_penalty_gamma and overlap_penalty_beta must be >= 0")


def embedding_weights(activity: np.ndarray, gamma: float, beta: float) -> np.ndarray:
    """Frame weights of each local speaker's embedding, (..., frames, speakers) -> same shape: its activity, less
    where other speakers are active too (softmax over the speakers of ``beta`` x activity, to the power ``gamma``).
    """
    activity = np.asarray(activity, np.float64)
    if gamma == 0 or activity.shape[-1] < 2:
        return activity
    scaled = beta * activity
    scaled -= scaled.max(axis=-1, keepdims=True)
    share = np.exp(scaled)
    share /= share.sum(axis=-1, keepdims=True)
    return activity * share ** gamma


@dataclass(frozen=True)
class BufferLayout:
    """Where a session's buffers lie: ``window_frames`` frames of ``frame_samples``, the last ``step_frames`` of
    which are the newest step."""

    frame_samples: int
    step_frames: int
    window_frames: int

    def __post_init__(self) -> None:
        if self.window_frames < self.step_frames:
            raise ConfigError(f"the segmentation model's buffer ({self.window_frames} frames) is shorter than the "
                              f"step ({self.step_frames} frames)")

    @property
    def buffer_steps(self) -> int:
        """Buffers that cover one step (a buffer is at least one step long)."""
        return self.window_frames // self.step_frames


class CentroidClustering:
    """Local speakers of successive buffers to global speakers: centroids (running means of unit embeddings)."""

    def __init__(self, new_speaker_distance: float, update_min_activity: float, max_speakers: int) -> None:
        self.new_speaker_distance = new_speaker_distance
        self.update_min_activity = update_min_activity
        self.max_speakers = max_speakers
        self._sums: list[np.ndarray] = []  # per global speaker: sum of the unit embeddings that updated it

    @property
    def num_speakers(self) -> int:
        return len(self._sums)

    def centroids(self) -> np.ndarray:
        return np.stack([_unit(s) for s in self._sums]) if self._sums else np.zeros((0, 0))

    def assign(self, embeddings: np.ndarray, mean_activity: np.ndarray) -> np.ndarray:
        """Global speaker of each local speaker (rows of ``embeddings``; a NaN row: not active, -1)."""
        n_local = len(embeddings)
        mapping = np.full(n_local, -1, np.int64)
        active = [k for k in range(n_local) if np.all(np.isfinite(embeddings[k])) and np.any(embeddings[k])]
        if not active:
            return mapping
        unit = np.stack([_unit(embeddings[k]) for k in active])
        taken: set[int] = set()
        unmatched = list(range(len(active)))
        if self._sums:
            distance = 1.0 - unit @ self.centroids().T  # (active, global)
            rows, cols = linear_sum_assignment(distance)
            unmatched = [i for i in range(len(active)) if i not in set(rows.tolist())]
            for i, g in zip(rows.tolist(), cols.tolist()):
                if distance[i, g] <= self.new_speaker_distance:
                    mapping[active[i]] = g
                    taken.add(g)
                else:
                    unmatched.append(i)
        for i in sorted(unmatched):
            if self.num_speakers < self.max_speakers:
                self._sums.append(np.zeros_like(unit[i]))
                g = self.num_speakers - 1
            else:  # at the cap: the nearest centroid still free in this buffer, else the nearest
                distance = 1.0 - self.centroids() @ unit[i]
                free = [g for g in np.argsort(distance).tolist() if g not in taken]
                g = free[0] if free else int(np.argmin(distance))
            mapping[active[i]] = g
            taken.add(g)
        for i, k in enumerate(active):
            g = int(mapping[k])
            if mean_activity[k] >= self.update_min_activity or not np.any(self._sums[g]):
                self._sums[g] = self._sums[g] + unit[i]
        return mapping


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-8)


@dataclass
class ActivitySnapshot:
    """The aggregation as of now: per frame, the sum of global activities over the buffers that covered it and
    their count (what the final timeline is decided from)."""

    frame_samples: int
    end_sample: int  # valid input ends here
    sums: np.ndarray  # (frames, speakers)
    counts: np.ndarray  # (frames,)


@dataclass
class _Step:
    step_index: int
    start_sample: int
    valid_samples: int


@dataclass
class _Turn:
    start_sample: int
    last_active_end: int
    off_frames: int = 0


@dataclass
class _Accumulator:
    """Sums and counts over the session's frames, grown as buffers arrive."""

    sums: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))

    def grow(self, frames: int, speakers: int) -> None:
        f, s = self.sums.shape
        if frames > f or speakers > s:
            sums = np.zeros((max(frames, f), max(speakers, s)))
            sums[:f, :s] = self.sums
            counts = np.zeros(max(frames, f))
            counts[:f] = self.counts
            self.sums, self.counts = sums, counts


class PyannoteStreamDiarizer:
    """One session's streaming diarizer (rtsep.stream.core's ``Diarizer``)."""

    def __init__(self, config: PyannoteStreamConfig, layout: BufferLayout, max_speakers: int) -> None:
        if config.latency_steps > layout.buffer_steps - 1:
            raise ConfigError(f"[pyannote] latency_steps {config.latency_steps} exceeds the buffer: at most "
                              f"{layout.buffer_steps - 1} with a buffer of {layout.buffer_steps} steps")
        self.config = config
        self.layout = layout
        self.clustering = CentroidClustering(config.new_speaker_distance, config.update_min_activity, max_speakers)
        self._acc = _Accumulator()
        self._pending: deque[_Step] = deque()
        self._turns: dict[int, _Turn] = {}
        self._known_speakers = 0
        self._end_sample = 0
        self.mappings: dict[int, np.ndarray] = {}  # step index -> global speaker of each local speaker
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the previous buffer's activity and mapping

    # --- the Diarizer interface ---

    @property
    def records(self) -> list[ActivitySnapshot]:
        acc = self._acc
        return [ActivitySnapshot(self.layout.frame_samples, self._end_sample, acc.sums.copy(), acc.counts.copy())]

    @property
    def embedding_labels(self) -> dict[int, int]:
        return {}

    @property
    def num_speakers(self) -> int:
        return self._known_speakers

    def push(self, step: StepAnalysis) -> list[DiarizationEvent]:
        lay = self.layout
        events: list[DiarizationEvent] = []
        self._end_sample = max(self._end_sample, step.start_sample + step.valid_samples)
        end_frame = (step.start_sample + lay.step_frames * lay.frame_samples) // lay.frame_samples
        activity = step.local_activity
        if activity is not None:
            activity = np.asarray(activity, np.float64)
            if activity.shape[0] != lay.window_frames:
                raise ValueError(f"local activity of {activity.shape[0]} frames, the buffer has {lay.window_frames}")
            valid_end = (step.start_sample + step.valid_samples + lay.frame_samples - 1) // lay.frame_samples
            activity = activity.copy()
            activity[max(0, lay.window_frames - (end_frame - valid_end)):] = 0.0  # padding after the input's end
            if step.local_embeddings is not None:
                mapping = self.clustering.assign(np.asarray(step.local_embeddings, np.float64),
                                                 activity.mean(axis=0))
            else:  # a step without embeddings (embedding_interval_steps > 1): follow the previous buffer's speakers
                mapping = self._follow(activity)
            self.mappings[step.step_index] = mapping
            self._last = (activity, mapping)
            while self._known_speakers < self.clustering.num_speakers:
                events.append(NewSpeaker(self._known_speakers))
                self._known_speakers += 1
            self._add(activity, mapping, end_frame)
        else:  # a gap: the buffer counts, with no activity, and the next buffer cannot follow this one
            self._last = None
            self._add(np.zeros((lay.window_frames, 0)), np.zeros(0, np.int64), end_frame)
        self._pending.append(_Step(step.step_index, step.start_sample, step.valid_samples))
        while len(self._pending) > self.config.latency_steps:
            events += self._decide(self._pending.popleft())
        return events

    def finish(self) -> list[DiarizationEvent]:
        events: list[DiarizationEvent] = []
        while self._pending:
            events += self._decide(self._pending.popleft())
        for speaker in sorted(self._turns):
            events += self._close(speaker)
        return events

    # --- internals ---

    def _follow(self, activity: np.ndarray) -> np.ndarray:
        """Global speaker of each local speaker of a buffer without embeddings: the previous buffer's local speaker
        it overlaps most on the frames both buffers hold (one to one), or -1 (none: it waits for embeddings)."""
        mapping = np.full(activity.shape[1], -1, np.int64)
        if self._last is None:
            return mapping
        previous, previous_mapping = self._last
        shift = self.layout.step_frames
        now, before = activity[:-shift], previous[shift:]  # the shared frames, in each buffer's own order
        if not now.size or now.shape[1] != before.shape[1]:
            return mapping
        overlap = np.minimum(now[:, :, None], before[:, None, :]).sum(axis=0)  # (now's speaker, previous speaker)
        rows, cols = linear_sum_assignment(-overlap)
        for k, j in zip(rows.tolist(), cols.tolist()):
            # the same talker: most of its activity on the shared frames is the previous speaker's
            if overlap[k, j] > 0 and overlap[k, j] >= 0.5 * now[:, k].sum():
                mapping[k] = previous_mapping[j]
        return mapping

    def _add(self, activity: np.ndarray, mapping: np.ndarray, end_frame: int) -> None:
        start_frame = end_frame - self.layout.window_frames
        lo = max(0, -start_frame)  # frames before the session began are not the session's
        self._acc.grow(end_frame, max(self._known_speakers, 1))
        frames = slice(start_frame + lo, end_frame)
        self._acc.counts[frames] += 1.0
        mapped = np.zeros((end_frame - start_frame - lo, self._acc.sums.shape[1]))
        for k, g in enumerate(mapping.tolist()):
            if g >= 0:  # two local speakers on one global one (at the cap): the more active counts
                mapped[:, g] = np.maximum(mapped[:, g], activity[lo:, k])
        self._acc.sums[frames] += mapped

    def _decide(self, step: _Step) -> list[DiarizationEvent]:
        lay = self.layout
        cfg = self.config
        first = step.start_sample // lay.frame_samples
        frames = lay.step_frames
        self._acc.grow(first + frames, max(self._known_speakers, 1))
        counts = np.maximum(self._acc.counts[first:first + frames], 1.0)
        activity = self._acc.sums[first:first + frames, : self._known_speakers] / counts[:, None]
        valid_frames = -(-step.valid_samples // lay.frame_samples)
        activity[valid_frames:] = 0.0
        events: list[DiarizationEvent] = []
        labels = np.full(frames, -1, np.int64)
        step_end = step.start_sample + step.valid_samples
        for i in range(frames):
            frame_start = (first + i) * lay.frame_samples
            frame_end = min(frame_start + lay.frame_samples, step_end)
            row = activity[i] if activity.shape[1] else np.zeros(0)
            for g in range(row.size):
                turn = self._turns.get(g)
                if turn is None:
                    if row[g] >= cfg.onset and frame_end > frame_start:
                        self._turns[g] = _Turn(frame_start, frame_end)
                        events.append(SpeakerStarted(g, frame_start))
                elif row[g] >= cfg.offset and frame_end > frame_start:
                    turn.last_active_end, turn.off_frames = frame_end, 0
                else:
                    turn.off_frames += 1
                    if turn.off_frames > cfg.min_off_frames:
                        events += self._close(g)
            on = [g for g in self._turns if self._turns[g].off_frames == 0 and row.size > g]
            if on and frame_end > frame_start:
                labels[i] = max(on, key=lambda g: row[g])
        events.append(FrameLabels(step.step_index, step.start_sample, step.valid_samples, labels))
        return events

    def _close(self, speaker: int) -> list[DiarizationEvent]:
        turn = self._turns.pop(speaker)
        events: list[DiarizationEvent] = [SpeakerStopped(speaker, turn.last_active_end)]
        if turn.last_active_end > turn.start_sample:
            events.append(SegmentClosed(speaker, turn.start_sample, turn.last_active_end))
        return events


def final_segments(snapshot: ActivitySnapshot, config: PyannoteStreamConfig) -> list[tuple[int, int, int]]:
    """(start_sample, end_sample, speaker) of the timeline decided from every buffer (overlaps included)."""
    counts = np.maximum(snapshot.counts, 1.0)
    activity = snapshot.sums / counts[:, None] if snapshot.sums.size else snapshot.sums
    frame = snapshot.frame_samples
    segments: list[tuple[int, int, int]] = []
    for g in range(activity.shape[1] if activity.ndim == 2 else 0):
        start: int | None = None
        last_end = 0
        off = 0
        for i, value in enumerate(activity[:, g]):
            frame_start = i * frame
            frame_end = min(frame_start + frame, snapshot.end_sample)
            if frame_end <= frame_start:
                break
            if start is None:
                if value >= config.onset:
                    start, last_end, off = frame_start, frame_end, 0
            elif value >= config.offset:
                last_end, off = frame_end, 0
            else:
                off += 1
                if off > config.min_off_frames:
                    segments.append((start, last_end, g))
                    start = None
        if start is not None:
            segments.append((start, last_end, g))
    return sorted(segments)


def name_after_live(final: list[tuple[int, int, str]], live: list[tuple[int, int, int]], rate_hz: int = 16000
                    ) -> list[tuple[int, int, int]]:
    """A final pipeline's labels as live speaker indices, by the rule of rtsep's own final timeline
    (rtsep.diarize.offline.name_by_live: one to one on the time spoken together, fresh indices after the live ones,
    in order of first appearance). So tracks, live and final timelines share names where they agree."""
    from rtsep.diarize.offline import name_by_live  # offline -> online -> this module: imported when used

    labels = list(dict.fromkeys(label for _, _, label in sorted(final)))
    index = {label: i for i, label in enumerate(labels)}
    as_indices = [(a, b, index[label]) for a, b, label in final]
    mapping = name_by_live(as_indices, live, rate_hz=rate_hz)
    return sorted((a, b, mapping[f]) for a, b, f in as_indices)
