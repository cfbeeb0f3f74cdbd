"""`[overlap] enabled` in the session pipeline: `rtsep process` runs the overlap detector once on the whole
recording and the final timeline gets a second speaker inside its regions (a scripted detector behind the
runtime's interface: the plumbing is tested here, the shipped detector in tests/unit/runtime, its quality in
bench/RESULTS.md); a failing detector leaves the timeline as it was, logged."""

import logging

import numpy as np
import pytest

from rtsep.compose import process_file
from rtsep.config import load_config
from rtsep.runtime.diarization import DiarizationRuntime

pytestmark = pytest.mark.slow

OVERLAP_S = (5.0, 8.0)  # the sample's talkers alternate here (sample.rttm: 6.69, 7.55, 8.32 s)


class ScriptedDetector:
    frame_s = 0.02

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[tuple[int, int]] = []

    def overlap_probability(self, audio: np.ndarray, rate_hz: int) -> np.ndarray:
        self.calls.append((audio.size, rate_hz))
        if self.fail:
            raise RuntimeError("scripted failure")
        p = np.zeros(int(audio.size / rate_hz / self.frame_s), np.float32)
        p[int(OVERLAP_S[0] / self.frame_s) : int(OVERLAP_S[1] / self.frame_s)] = 0.9
        return p


def _overlapped_s(timeline: dict) -> float:
    """Seconds during which two different speakers of the timeline speak."""
    segments = timeline["segments"]
    total = 0.0
    for i, a in enumerate(segments):
        for b in segments[i + 1 :]:
            if a["speaker"] != b["speaker"]:
                total += max(0.0, min(a["end_s"], b["end_s"]) - max(a["start_s"], b["start_s"]))
    return total


async def _process(meeting_wav, tmp_path, detector, enabled: bool = True):
    config = load_config(env={}, overrides={"separator": {"name": "none"}, "overlap": {"enabled": enabled}}).pipeline
    runtime = DiarizationRuntime(config.runtime, config.diarization, overlap_detector=detector)
    try:
        return await process_file(meeting_wav, tmp_path, config, runtime)
    finally:
        runtime.close()


def _outside(timeline: dict) -> dict:
    return {**timeline, "segments": [s for s in timeline["segments"]
                                     if s["start_s"] >= OVERLAP_S[1] or s["end_s"] <= OVERLAP_S[0]]}


async def test_process_adds_second_speakers_inside_the_detected_regions_only(meeting_wav, tmp_path):
    # without the detector the final timeline may already hold short overlaps (a speaker's filled gap,
    # [diarization] final_min_gap_s, can reach over another's turn): the detector adds to them inside its regions only
    baseline = await _process(meeting_wav, tmp_path / "off", None, enabled=False)
    detector = ScriptedDetector()
    result = await _process(meeting_wav, tmp_path / "on", detector)
    assert detector.calls == [(round(result.duration_s * 16000), 16000)]  # once, the whole recording
    assert len(result.final["speakers"]) >= 2
    inside = {**result.final, "segments": [s for s in result.final["segments"]
                                           if s["end_s"] > OVERLAP_S[0] and s["start_s"] < OVERLAP_S[1]]}
    base_inside = {**baseline.final, "segments": [s for s in baseline.final["segments"]
                                                  if s["end_s"] > OVERLAP_S[0] and s["start_s"] < OVERLAP_S[1]]}
    assert _overlapped_s(inside) > _overlapped_s(base_inside) + 0.3
    assert _overlapped_s(_outside(result.final)) == pytest.approx(_overlapped_s(_outside(baseline.final)))
    assert _overlapped_s(result.live) == 0.0  # live labels stay one at a time


async def test_a_failing_detector_leaves_one_speaker_at_a_time_and_says_so(meeting_wav, tmp_path, caplog):
    baseline = await _process(meeting_wav, tmp_path / "off", None, enabled=False)
    detector = ScriptedDetector(fail=True)
    with caplog.at_level(logging.ERROR, logger="rtsep.driver"):
        result = await _process(meeting_wav, tmp_path / "on", detector)
    assert detector.calls and result.final["segments"]
    assert result.final["segments"] == baseline.final["segments"]  # as if no detector were configured
    assert any("overlap detector failed" in r.getMessage() and r.exc_info for r in caplog.records)
