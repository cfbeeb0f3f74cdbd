"""When a live session adapts its separator, and on what (numpy + soxr only: no torch, no I/O).

The schedule keeps the session's recent input and, from the diarizer's closed turns, says when two talkers
have enough single-talker speech to fine-tune on (rtsep.separate.adapt does the fine-tuning).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Span = tuple[float, float]


class SpanFilter(Protocol):
    """Keeps the spans that hold one talker only (rtsep.separate.purity.PurityFilter)."""

    def filter(self, audio: np.ndarray, rate_hz: int, spans: Mapping[str, Sequence[Span]]) -> dict[str, list[Span]]:
        ...


class TurnLimits(Protocol):
    """What the schedule reads of the adaptation's settings (rtsep.separate.adapt.AdaptConfig)."""

    min_turn_s: float
    edge_trim_s: float


def single_talker_spans(segments: Iterable[Mapping], min_turn_s: float = 0.5, edge_trim_s: float = 0.05,
                        resolution_s: float = 0.01) -> dict[str, list[Span]]:
    """Spans (start_s, end_s) where exactly one speaker is active, per speaker, from timeline segments
    (``{"speaker", "start_s", "end_s"}``). Each span is trimmed by ``edge_trim_s`` at both ends and kept only
    if at least ``min_turn_s`` long."""
    segs = [(str(s["speaker"]), float(s["start_s"]), float(s["end_s"])) for s in segments]
    if not segs:
        return {}
    speakers = sorted({s for s, _, _ in segs})
    origin = int(min(a for _, a, _ in segs) / resolution_s)  # the grid covers the segments' span only
    frames = int(np.ceil(max(e for _, _, e in segs) / resolution_s)) + 1 - origin
    active = np.zeros((len(speakers), frames), bool)
    for spk, start, end in segs:
        first, last = int(round(start / resolution_s)) - origin, int(round(end / resolution_s)) - origin
        active[speakers.index(spk), first:last] = True
    alone = active & (active.sum(0) == 1)
    spans: dict[str, list[Span]] = {}
    for i, spk in enumerate(speakers):
        edges = np.flatnonzero(np.diff(np.r_[0, alone[i].astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            start, end = (a + origin) * resolution_s + edge_trim_s, (b + origin) * resolution_s - edge_trim_s
            if end - start >= min_turn_s:
                spans.setdefault(spk, []).append((start, end))
    return spans


def gather_speech(audio: np.ndarray, rate_hz: int, spans: Mapping[str, Sequence[Span]]) -> dict[str, np.ndarray]:
    """Each speaker's spans of ``audio`` (mono, at ``rate_hz``), concatenated."""
    out = {}
    for spk, items in spans.items():
        pieces = [audio[int(a * rate_hz) : int(b * rate_hz)] for a, b in items]
        pieces = [p for p in pieces if p.size]
        if pieces:
            out[spk] = np.concatenate(pieces).astype(np.float32)
    return out




@dataclass
class AdaptationMaterial:
    """What a live adaptation round trains on: the schedule's recent input (mono, at ``rate_hz``) and each
    talker's single-talker spans in it (seconds from its first sample)."""

    audio: np.ndarray
    rate_hz: int
    spans: dict[str, list[Span]]

    def speech(self, model_rate_hz: int, purity: SpanFilter | None = None) -> dict[str, np.ndarray]:
        """Each talker's speech at the model rate (only what ``purity`` keeps, with a filter): the input of
        :func:`adapt_convtasnet`. Embeds and resamples: call it off the event loop."""
        spans = purity.filter(self.audio, self.rate_hz, self.spans) if purity is not None else self.spans
        audio = self.audio
        if self.rate_hz != model_rate_hz:
            import soxr

            audio = soxr.resample(audio, self.rate_hz, model_rate_hz).astype(np.float32)
        return gather_speech(audio, model_rate_hz, spans)



class AdaptationSchedule:
    """When a live session adapts its separator, and on what: keeps the session's last ``window_s`` of input (at
    ``rate_hz``) and, given the diarizer's closed segments, says when at least two talkers have ``min_speech_s``
    of single-talker speech each in that window — first time, then again each time their single-talker speech
    has grown ``growth`` times, up to ``max_rounds`` rounds, one at a time."""

    def __init__(self, rate_hz: int, config: TurnLimits, min_speech_s: float = 4.0, growth: float = 2.0,
                 max_rounds: int = 3, window_s: float = 180.0) -> None:
        self.rate_hz = rate_hz
        self.config = config
        self.min_speech_s, self.growth, self.max_rounds = min_speech_s, growth, max_rounds
        self.window_samples = int(window_s * rate_hz)
        self._pieces: list[np.ndarray] = []
        self._kept = 0
        self.start_sample = 0  # absolute index of the first kept sample
        self.rounds = 0
        self.busy = False
        self._last_total_s = 0.0

    def push(self, samples: np.ndarray) -> None:
        if not samples.size:
            return
        self._pieces.append(np.asarray(samples, np.float32))
        self._kept += samples.size
        while self._pieces and self._kept - self._pieces[0].size >= self.window_samples:
            dropped = self._pieces.pop(0)
            self._kept -= dropped.size
            self.start_sample += dropped.size

    @property
    def open(self) -> bool:
        """Whether a round could start now (none running, rounds left)."""
        return not self.busy and self.rounds < self.max_rounds

    def due(self, segments: Iterable[Mapping]) -> AdaptationMaterial | None:
        """What to adapt on now (the talkers with enough speech), or None. Marks the schedule busy until
        :meth:`done`."""
        if not self.open or not self._pieces:
            return None
        material, total = self._material(segments)
        if material is None or total < self.growth * self._last_total_s:
            return None
        self.busy = True
        self._last_total_s = total
        return material

    def latest(self, segments: Iterable[Mapping]) -> AdaptationMaterial | None:
        """The round that is due, as of now: when a round waited in the server's queue, what it should train on once
        it starts (the newer material replaces the queued one), or None when there is no more than it had."""
        if not self.busy or not self._pieces:
            return None
        material, total = self._material(segments)
        if material is None or total <= self._last_total_s:
            return None
        self._last_total_s = total
        return material

    def _material(self, segments: Iterable[Mapping]) -> tuple[AdaptationMaterial | None, float]:
        """The talkers with at least ``min_speech_s`` of single-talker speech in the window (two or more), and
        their seconds in all."""
        offset_s = self.start_sample / self.rate_hz
        recent = [s for s in segments if float(s["end_s"]) > offset_s]  # the work stays bounded by the window
        spans = single_talker_spans(recent, self.config.min_turn_s, self.config.edge_trim_s)
        kept = {spk: [(a - offset_s, b - offset_s) for a, b in items if a >= offset_s] for spk, items in spans.items()}
        seconds = {spk: sum(b - a for a, b in items) for spk, items in kept.items()}
        enough = [spk for spk, s in seconds.items() if s >= self.min_speech_s]
        if len(enough) < 2:
            return None, 0.0
        total = sum(seconds[spk] for spk in enough)
        return AdaptationMaterial(np.concatenate(self._pieces), self.rate_hz, {spk: kept[spk] for spk in enough}), total

    def done(self) -> None:
        self.busy = False
        self.rounds += 1
