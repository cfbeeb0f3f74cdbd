"""What a session's online diarizer consumes and produces (plain data, numpy only).

The diarizer itself (rtsep.diarize.online) sits above this layer; the session core (rtsep.stream.core)
takes a diarizer through the :class:`~rtsep.stream.core.Diarizer` interface and reads these types.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def speaker_name(index: int) -> str:
    return f"SPEAKER_{index:02d}"


SOURCE_TRACK_BASE = 0x8000  # audio frames of separated source k carry track index 0x8000 + k


def source_name(index: int) -> str:
    return f"source_{index}"


def track_name(index: int) -> str:
    """The name of the track a frame's index stands for (a speaker, or a separated source)."""
    return source_name(index - SOURCE_TRACK_BASE) if index >= SOURCE_TRACK_BASE else speaker_name(index)


@dataclass(frozen=True)
class StepAnalysis:
    """What the runtime computed for one step of a session."""

    step_index: int
    start_sample: int
    valid_samples: int
    speech_probs: np.ndarray  # (frames_per_step,)
    embedding: np.ndarray | None  # (256,) or None when the step held too little speech
    embedding_speech_s: float = -1.0  # seconds of speech in the embedding's window (< 0: unknown)
    # a buffered diarizer (rtsep.diarize.pyannote_stream): the activity of each local speaker over the buffer that
    # ends with the step, on this frame grid, (buffer_frames, local_speakers), and one embedding per local speaker
    # (local_speakers, dimension), NaN where it is not active; None on other backends and on gaps (local_activity
    # None), and on steps the runtime computed no embeddings for (local_embeddings None)
    local_activity: np.ndarray | None = None
    local_embeddings: np.ndarray | None = None


@dataclass(frozen=True)
class SpeakerStarted:
    speaker: int
    sample: int


@dataclass(frozen=True)
class SpeakerStopped:
    speaker: int
    sample: int


@dataclass(frozen=True)
class SegmentClosed:
    speaker: int
    start_sample: int
    end_sample: int


@dataclass(frozen=True)
class NewSpeaker:
    speaker: int


@dataclass(frozen=True)
class FrameLabels:
    """Speaker of each frame of a decided step (-1: no speech); used to route audio."""

    step_index: int
    start_sample: int
    valid_samples: int
    labels: np.ndarray  # (frames_per_step,) int


DiarizationEvent = SpeakerStarted | SpeakerStopped | SegmentClosed | NewSpeaker | FrameLabels
