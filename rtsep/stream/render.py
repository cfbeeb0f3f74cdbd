"""Final speaker tracks (sans-I/O): a session's input and its final timeline in, one array per final speaker out.

At the end of a session the final timeline (rtsep.diarize.offline) has the session's speakers; their tracks are
rendered here from the stored input (the ``input`` track): each speaker's track is the input gated by that
speaker's segments, with short raised-cosine crossfades at every turn edge (no clicks). The fades are
complementary: where one speaker's turn ends as the next one's starts, the two gains sum to one, so the tracks
still add up to the input. Where the timeline has two speakers at once (an overlap-aware timeline), both tracks
carry the input there, unless the session was separated: then each block where the attribution
(rtsep.stream.attribution) is sure which source carries a speaker, that speaker's track carries the source,
crossfaded with the input at the block's edges (:func:`iter_attributed`).

Track names in the store (one namespace per session):

=====================  ==============================================================
``SPEAKER_00`` ...     live speaker tracks, as sent (gated by the live labels)
``source_0`` ...       separated sources, as sent
``input``              the session's input at the session's rate (never sent)
``final-SPEAKER_00``   final speaker tracks, rendered here at the session's end
=====================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtsep.errors import ConfigError

INPUT_TRACK = "input"
FINAL_PREFIX = "final-"


def final_track_name(speaker: str) -> str:
    """The store's name of a final speaker's track."""
    return FINAL_PREFIX + speaker


def track_kind(name: str) -> str:
    """``final``, ``input``, ``source`` or ``live`` (a live speaker's track)."""
    if name.startswith(FINAL_PREFIX):
        return "final"
    if name == INPUT_TRACK:
        return "input"
    if name.startswith("source_"):
        return "source"
    return "live"


def speaker_of(name: str) -> str:
    """The speaker a final track's store name belongs to (other names are their own)."""
    return name.removeprefix(FINAL_PREFIX)


@dataclass(frozen=True)
class TracksConfig:
    """Section ``[tracks]``: the final speaker tracks written at the end of a session."""

    crossfade_s: float = 0.01  # raised-cosine fade at each turn edge, centred on it
    normalize_loudness: bool = True  # EBU R128 loudness normalisation of each final track
    loudness_lufs: float = -23.0  # target integrated loudness (EBU R128: -23 LUFS)
    peak_dbtp: float = -1.0  # true-peak ceiling after normalisation: a track that would pass it is turned down

    def __post_init__(self) -> None:
        if not 0 <= self.crossfade_s <= 1:
            raise ConfigError(f"[tracks] crossfade_s must be within 0..1 s, got {self.crossfade_s!r}")
        if not -70 <= self.loudness_lufs <= 0:
            raise ConfigError(f"[tracks] loudness_lufs must be within -70..0 LUFS, got {self.loudness_lufs!r}")
        if not -30 <= self.peak_dbtp <= 0:
            raise ConfigError(f"[tracks] peak_dbtp must be within -30..0 dBTP, got {self.peak_dbtp!r}")


def ramp(x: np.ndarray, fade_samples: float) -> np.ndarray:
    """Raised-cosine step: 0 for x <= -fade/2, 1 for x >= fade/2, and ramp(x) + ramp(-x) == 1 everywhere."""
    if fade_samples <= 0:
        return (x >= 0).astype(np.float64)
    return 0.5 + 0.5 * np.sin(np.pi * np.clip(x / fade_samples, -0.5, 0.5))


def speaker_gains(spans: Iterable[tuple[int, int]], total_samples: int, fade_samples: int) -> np.ndarray:
    """(total_samples,) gain of one speaker: 1 inside its spans (start, end samples), fading over
    ``fade_samples`` centred on each edge (none at the session's start and end). Spans may touch or overlap."""
    gain = np.zeros(total_samples, np.float32)
    half = (fade_samples + 1) // 2
    for start, end in spans:
        start, end = max(0, int(start)), min(total_samples, int(end))
        if end <= start:
            continue
        lo, hi = max(0, start - half), min(total_samples, end + half)
        centres = np.arange(lo, hi, dtype=np.float64) + 0.5
        # no fade at the session's own start and end: the audio begins and ends there at full level
        shape = ((ramp(centres - start, fade_samples) if start > 0 else 1.0)
                 * (ramp(end - centres, fade_samples) if end < total_samples else 1.0))
        np.maximum(gain[lo:hi], np.asarray(shape, np.float32), out=gain[lo:hi])
    return gain


def segment_spans(segments: Iterable[Mapping[str, Any]], rate_hz: int) -> dict[str, list[tuple[int, int]]]:
    """A timeline's segments (``speaker``, ``start_s``, ``end_s``, as in its JSON) as sample spans per speaker,
    in order of each speaker's first turn."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for segment in sorted(segments, key=lambda s: (s["start_s"], s["end_s"])):
        start, end = round(segment["start_s"] * rate_hz), round(segment["end_s"] * rate_hz)
        spans.setdefault(str(segment["speaker"]), []).append((start, end))
    return spans


def render_speakers(audio: np.ndarray, rate_hz: int, segments: Iterable[Mapping[str, Any]],
                    crossfade_s: float = 0.01, total_samples: int | None = None) -> dict[str, np.ndarray]:
    """One float32 track per speaker of ``segments`` (the final timeline's), each ``total_samples`` long (default:
    the input's length; input missing at the end reads as silence): the input gated by the speaker's turns."""
    return dict(iter_speakers(audio, rate_hz, segments, crossfade_s, total_samples))


def iter_speakers(audio: np.ndarray, rate_hz: int, segments: Iterable[Mapping[str, Any]],
                  crossfade_s: float = 0.01, total_samples: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`render_speakers` one speaker at a time (a long session holds one rendered track at once)."""
    if audio.ndim != 1:
        raise ValueError(f"the input must be mono (one dimension), got shape {audio.shape}")
    total = audio.size if total_samples is None else int(total_samples)
    source = audio[:total]
    if source.size < total:
        source = np.concatenate([source, np.zeros(total - source.size, audio.dtype)])
    source = source.astype(np.float32, copy=False)
    fade = round(crossfade_s * rate_hz)
    for speaker, spans in segment_spans(segments, rate_hz).items():
        yield speaker, source * speaker_gains(spans, total, fade)


def block_weight(lo: int, hi: int, start: int, end: int, total_samples: int, fade_samples: int) -> np.ndarray:
    """The weight of block ``[start, end)`` over samples ``[lo, hi)``: 1 inside, a raised-cosine fade centred on
    each edge (none at the session's start and end). Adjacent blocks' weights sum to one."""
    centres = np.arange(lo, hi, dtype=np.float64) + 0.5
    shape = ((ramp(centres - start, fade_samples) if start > 0 else 1.0)
             * (ramp(end - centres, fade_samples) if end < total_samples else 1.0))
    return np.broadcast_to(np.asarray(shape, np.float32), (hi - lo,))


def iter_attributed(audio: np.ndarray, sources: np.ndarray, rate_hz: int, segments: Iterable[Mapping[str, Any]],
                    attribution: Any, crossfade_s: float = 0.01, source_fade_s: float = 0.02,
                    total_samples: int | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """:func:`iter_speakers` with separated sources: in each block that ``attribution``
    (rtsep.stream.attribution.Attribution) gives a speaker a source, that speaker's track carries the source
    (times the block's level-matching gain) instead of the input, crossfaded with the input over ``source_fade_s``
    at the block's edges; everywhere else it is the gated input. ``sources``: (K, T) on the input's timeline."""
    total = audio.size if total_samples is None else int(total_samples)
    source = _fit(audio, total)
    separated = np.stack([_fit(s, total) for s in sources]) if len(sources) else np.zeros((0, total), np.float32)
    fade = round(crossfade_s * rate_hz)
    source_fade = round(source_fade_s * rate_hz)
    half = (source_fade + 1) // 2
    by_speaker: dict[str, list[tuple[int, int, int, float]]] = {}
    for decision in attribution.decisions:
        for speaker, a in decision.assignments.items():
            if a.source is not None:
                by_speaker.setdefault(speaker, []).append((decision.block.start_sample, decision.block.end_sample,
                                                           a.source, decision.gains.get(a.source, 1.0)))
    for speaker, spans in segment_spans(segments, rate_hz).items():
        track = source.copy()
        for start, end, k, gain in by_speaker.get(speaker, []):
            start, end = max(0, start), min(total, end)
            if end <= start:
                continue
            lo, hi = max(0, start - half), min(total, end + half)
            weight = block_weight(lo, hi, start, end, total, source_fade)
            track[lo:hi] += weight * (gain * separated[k, lo:hi] - source[lo:hi])
        yield speaker, track * speaker_gains(spans, total, fade)


def _fit(samples: np.ndarray, total: int) -> np.ndarray:
    """float32, exactly ``total`` long (cut, or padded with silence)."""
    if samples.ndim != 1:
        raise ValueError(f"a track must be mono (one dimension), got shape {samples.shape}")
    out = np.zeros(total, np.float32)
    n = min(total, samples.size)
    out[:n] = samples[:n]
    return out


@dataclass(frozen=True)
class FinalTrack:
    speaker: str  # as in the final timeline
    name: str  # the store's track name (final_track_name)
    samples: np.ndarray  # float32, the whole session
    loudness: Any  # rtsep.stream.loudness.LoudnessResult, or None when normalisation is off


def final_tracks(audio: np.ndarray, rate_hz: int, segments: Iterable[Mapping[str, Any]], config: TracksConfig,
                 total_samples: int | None = None, sources: np.ndarray | None = None, attribution: Any = None,
                 source_fade_s: float = 0.02) -> Iterator[FinalTrack]:
    """The final speaker tracks of a session, one at a time: rendered (:func:`iter_speakers`, or with ``sources``
    and their ``attribution`` :func:`iter_attributed`), then loudness-normalised as ``config`` says
    (rtsep.stream.loudness: one gain per track; a silent track stays as it is)."""
    from rtsep.stream.loudness import normalize

    segments = list(segments)
    if sources is not None and attribution is not None:
        rendered = iter_attributed(audio, sources, rate_hz, segments, attribution, config.crossfade_s, source_fade_s,
                                   total_samples)
    else:
        rendered = iter_speakers(audio, rate_hz, segments, config.crossfade_s, total_samples)
    for speaker, samples in rendered:
        result = None
        if config.normalize_loudness:
            samples, result = normalize(samples, rate_hz, config.loudness_lufs, config.peak_dbtp)
        yield FinalTrack(speaker, final_track_name(speaker), samples, result)
