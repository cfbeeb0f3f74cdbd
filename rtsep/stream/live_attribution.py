"""Attribution of separated sources to the live speaker tracks (sans-I/O): the routed runs of a live speaker wait
for the separated sources of the same samples, then go out as the attributed source or as the gated input.

The live labels give one speaker per frame, so every run is decided as one active speaker
(:class:`~rtsep.stream.attribution.Attributor`, ``solo`` policy): the source that sounds most like that speaker
against the other speakers' centroids, taken where the attribution is sure (and, with ``solo = "overlap"``, where
the other source carries a second talker). The sources' embeddings are of their *recent* audio: every
``block_s`` of separated audio, :meth:`LiveAttribution.embed_due` hands out the last ``window_s`` of each source
for the runtime to embed; a run is decided with the latest embeddings that came back (never waiting for them),
so a speaker's frames leave as soon as the separator's output covers them: no latency beyond the separator's.
A change between the input and a source within a speaker's track is crossfaded over ``crossfade_s``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import numpy as np

from rtsep.stream.attribution import MIN_GAIN, AttributionConfig, Attributor, SourceView, level_gain
from rtsep.stream.routing import RoutedRun


@dataclass(frozen=True)
class SpeakerAudio:
    """Audio of one live speaker's track from ``start_sample`` (the source ``source``; None: the gated input)."""

    speaker: int
    start_sample: int
    samples: np.ndarray
    source: int | None


class LiveAttribution:
    def __init__(self, config: AttributionConfig, num_sources: int, rate_hz: int) -> None:
        self.config = config
        self.num_sources = num_sources
        self.attributor = Attributor(config, num_sources, rate_hz)
        self.window_samples = max(1, round(config.window_s * rate_hz))
        self.block_samples = max(1, round(config.block_s * rate_hz))
        self.fade_samples = round(config.crossfade_s * rate_hz)
        self._buffers = [np.zeros(0, np.float32) for _ in range(num_sources)]
        self._base = 0  # the sample the buffers start at
        self._written = [0] * num_sources
        self._pending: deque[RoutedRun] = deque()
        self._labelled = 0  # the labels (hence the runs) are known up to here: the sources before it can go
        self._embeddings: list[np.ndarray | None] = [None] * num_sources
        self._embedding_in_flight = False
        self._next_embed_sample = self.window_samples
        self._last: dict[int, tuple[int, int | None, float]] = {}  # speaker -> (end sample, source, gain)
        self.decisions: dict[str, int] = {}  # reason -> runs decided so

    @property
    def available_samples(self) -> int:
        """Every source is known up to here."""
        return min(self._written)

    def push_run(self, run: RoutedRun, centroids: Callable[[], Mapping[Hashable, np.ndarray]]) -> list[SpeakerAudio]:
        """A run of one speaker's frames (in time order)."""
        self._pending.append(run)
        self.labelled(run.start_sample + run.samples.size)
        return self._resolve(centroids)

    def labelled(self, end_sample: int) -> None:
        """Every run before ``end_sample`` has been pushed (the labels got there, speech or not)."""
        self._labelled = max(self._labelled, end_sample)

    def push_source(self, k: int, samples: np.ndarray,
                    centroids: Callable[[], Mapping[Hashable, np.ndarray]]) -> list[SpeakerAudio]:
        """``samples`` of source ``k`` (at the session's rate, following the ones before; a gap as zeros)."""
        self._buffers[k] = np.concatenate([self._buffers[k], np.asarray(samples, np.float32)])
        self._written[k] += samples.size
        return self._resolve(centroids)

    def embed_due(self) -> np.ndarray | None:
        """(num_sources, window_samples): the sources' latest audio to embed now (then :meth:`embedded`), or None."""
        end = self.available_samples
        if self._embedding_in_flight or end < self._next_embed_sample:
            return None
        lo = end - self.window_samples
        if lo < self._base:
            return None
        self._embedding_in_flight = True
        self._next_embed_sample = end + self.block_samples
        return np.stack([b[lo - self._base:end - self._base] for b in self._buffers])

    def embedded(self, embeddings: np.ndarray | None) -> None:
        """The embeddings of the last :meth:`embed_due` windows (None: they could not be computed)."""
        self._embedding_in_flight = False
        if embeddings is not None:
            self._embeddings = [np.asarray(e) for e in embeddings]

    def flush(self, centroids: Callable[[], Mapping[Hashable, np.ndarray]]) -> list[SpeakerAudio]:
        """The end: runs the sources never reached go out as the gated input."""
        out = self._resolve(centroids)
        while self._pending:
            run = self._pending.popleft()
            out.append(SpeakerAudio(run.speaker, run.start_sample, run.samples, None))
        return out

    def _resolve(self, centroids: Callable[[], Mapping[Hashable, np.ndarray]]) -> list[SpeakerAudio]:
        out: list[SpeakerAudio] = []
        known: Mapping[Hashable, np.ndarray] | None = None
        while self._pending and self._pending[0].start_sample + self._pending[0].samples.size <= self.available_samples:
            run = self._pending.popleft()
            if known is None:
                known = centroids()
            out.append(self._decide(run, known))
        self._trim()
        return out

    def _decide(self, run: RoutedRun, centroids: Mapping[Hashable, np.ndarray]) -> SpeakerAudio:
        lo, hi = run.start_sample, run.start_sample + run.samples.size
        pieces = [b[max(0, lo - self._base):hi - self._base] for b in self._buffers]
        views = [SourceView(self._embeddings[k], float(np.mean(np.square(p, dtype=np.float64))) if p.size else 0.0)
                 for k, p in enumerate(pieces)]
        choice = self.attributor.decide(lo, hi, [run.speaker], views, centroids)[run.speaker]
        source, gain = choice.source, 1.0
        if source is not None and pieces[source].size == run.samples.size:
            gain = level_gain(run.samples, pieces[source], self.config.max_gain)
            if gain < MIN_GAIN:
                source = None
        else:
            source = None
        reason = choice.reason if source is not None or choice.reason != "attributed" else "unsure"
        self.decisions[reason] = self.decisions.get(reason, 0) + 1
        samples = run.samples if source is None else (gain * pieces[source]).astype(np.float32)
        last = self._last.get(run.speaker)
        if last is not None and last[0] == lo and last[1] != source and self.fade_samples:
            # the track changes between the input and a source (or two sources) here: crossfade from the old
            before = run.samples if last[1] is None else last[2] * pieces[last[1]]
            n = min(self.fade_samples, samples.size)
            w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
            samples = samples.copy()
            samples[:n] = w * samples[:n] + (1 - w) * before[:n]
        self._last[run.speaker] = (hi, source, gain)
        return SpeakerAudio(run.speaker, lo, np.asarray(samples, np.float32), source)

    def _trim(self) -> None:
        """Keep what pending runs and the next embedding window still need."""
        keep = min(self.available_samples - self.window_samples, self._labelled)
        if self._pending:
            keep = min(keep, self._pending[0].start_sample)
        drop = keep - self._base
        if drop > 0:
            self._buffers = [b[drop:] for b in self._buffers]
            self._base += drop
