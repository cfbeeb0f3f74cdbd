"""Named voices on a server whose diarizer is the pyannote backend: refused with a clear error, per request."""

from dataclasses import replace
from types import SimpleNamespace

import pytest

from rtsep.diarize.online import DiarizationConfig
from rtsep.errors import BadEnrollment, UnknownVoice
from rtsep.pipeline import PipelineConfig
from rtsep.sessions import SessionManager


def pyannote_manager() -> SimpleNamespace:
    config = replace(PipelineConfig(), diarization=DiarizationConfig(backend="pyannote", segmentation="s.bin",
                                                                     embedding="e.bin"))
    # no store and no runtime: the refusal comes before either is touched
    return SimpleNamespace(config=config, voice_store=None, runtime=None)


async def test_a_session_asking_for_voices_is_refused_with_the_pyannote_backend():
    with pytest.raises(UnknownVoice, match="need the embedded diarizer"):
        await SessionManager.session_voices(pyannote_manager(), ["alice"])


async def test_enrollment_is_refused_with_the_pyannote_backend():
    with pytest.raises(BadEnrollment, match="need the embedded diarizer"):
        await SessionManager.enroll(pyannote_manager(), "alice", b"RIFF")
