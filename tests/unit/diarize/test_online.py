import numpy as np
import pytest

from rtsep.diarize.online import (
    DiarizationConfig,
    FrameLabels,
    NewSpeaker,
    OnlineDiarizer,
    SpeakerStarted,
    StepAnalysis,
)
from rtsep.errors import ConfigError


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(256)
    return (v / np.linalg.norm(v)).astype(np.float32)


def _step(i: int, cfg: DiarizationConfig, emb=None, speech_s: float = 1.0) -> StepAnalysis:
    probs = np.full(cfg.frames_per_step, 0.9 if emb is not None else 0.0, np.float32)
    return StepAnalysis(i, i * cfg.step_samples, cfg.step_samples, probs, emb, speech_s if emb is not None else -1.0)


def test_defaults_keep_label_latency_within_half_a_second():
    cfg = DiarizationConfig()
    assert (1 + cfg.lookahead_steps) * cfg.step_s <= 0.52
    assert cfg.embedding_source == "speech"


def test_first_speaker_labelled_with_one_step_lookahead():
    cfg = DiarizationConfig(lookahead_steps=1)
    d = OnlineDiarizer(cfg)
    first = d.push(_step(0, cfg, _unit(0), speech_s=0.3))  # weak window: still a label at once
    assert NewSpeaker(0) in first and not any(isinstance(e, FrameLabels) for e in first)
    events = d.push(_step(1, cfg, _unit(0)))
    labels = [e for e in events if isinstance(e, FrameLabels)]
    assert labels and labels[0].step_index == 0 and (labels[0].labels == 0).all()
    assert SpeakerStarted(0, 0) in events


def test_runtime_speech_ratio_is_used():
    cfg = DiarizationConfig()
    d = OnlineDiarizer(cfg)
    a, b = _unit(1), _unit(2)
    for i in range(4):
        d.push(_step(i, cfg, a))
    for i in range(4, 10):  # far embeddings, but from windows with little speech: no new speaker
        d.push(_step(i, cfg, b, speech_s=0.2))
    assert d.clustering.num_speakers == 1
    for i in range(10, 14):
        d.push(_step(i, cfg, b, speech_s=1.0))
    assert d.clustering.num_speakers == 2


def test_config_validation():
    with pytest.raises(ConfigError):
        DiarizationConfig(embedding_source="nope")


def _speech_step(i: int, cfg: DiarizationConfig, emb, speech_frames) -> StepAnalysis:
    """A step whose frames are speech (0.9) where ``speech_frames`` is true, silence (0.0) elsewhere."""
    probs = np.where(np.asarray(speech_frames, bool), 0.9, 0.0).astype(np.float32)
    return StepAnalysis(i, i * cfg.step_samples, cfg.step_samples, probs, emb, 1.0 if emb is not None else -1.0)


def _live_turns(cfg: DiarizationConfig, steps: list[StepAnalysis]) -> list[tuple[int, int, int]]:
    from rtsep.diarize.online import SegmentClosed

    d = OnlineDiarizer(cfg)
    events = [e for s in steps for e in d.push(s)] + d.finish()
    return [(e.start_sample, e.end_sample, e.speaker) for e in events if isinstance(e, SegmentClosed)]


def _turn_with_hole(cfg: DiarizationConfig, hole_frames: int) -> list[StepAnalysis]:
    """One talker for 4 steps, silent for ``hole_frames`` frames in the middle of step 2 (frames 1..)."""
    a = _unit(7)
    frames = np.ones((4, cfg.frames_per_step), bool)
    flat = frames.reshape(-1)
    flat[2 * cfg.frames_per_step + 1 : 2 * cfg.frames_per_step + 1 + hole_frames] = False
    return [_speech_step(i, cfg, a, frames[i]) for i in range(4)]


def test_a_hole_shorter_than_the_live_hangover_stays_inside_the_turn():
    cfg = DiarizationConfig(live_hangover_frames=7)
    frame = cfg.frame_samples
    end = 4 * cfg.step_samples
    assert _live_turns(cfg, _turn_with_hole(cfg, 7)) == [(0, end, 0)]  # 7 silent frames: one turn
    hole_start = (2 * cfg.frames_per_step + 1) * frame
    split = _live_turns(cfg, _turn_with_hole(cfg, 8))  # 8 silent frames: the turn closed at its last speech
    assert split == [(0, hole_start, 0), (hole_start + 8 * frame, end, 0)]


def test_the_final_hangover_does_not_change_the_live_turns():
    steps = _turn_with_hole(DiarizationConfig(), 6)
    short = _live_turns(DiarizationConfig(hangover_frames=2, live_hangover_frames=7), steps)
    long = _live_turns(DiarizationConfig(hangover_frames=20, live_hangover_frames=7), steps)
    assert short == long and len(short) == 1
    assert len(_live_turns(DiarizationConfig(hangover_frames=20, live_hangover_frames=3), steps)) == 2


def test_the_turn_end_is_reported_after_the_live_hangover():
    """`stopped` comes in the step where the silence outlasts the hangover, at the last speech frame's end."""
    from rtsep.diarize.online import SpeakerStopped

    cfg = DiarizationConfig(live_hangover_frames=7)
    a = _unit(7)
    d = OnlineDiarizer(cfg)
    d.push(_speech_step(0, cfg, a, np.ones(cfg.frames_per_step, bool)))
    talk_then_pause = np.zeros(cfg.frames_per_step, bool)
    talk_then_pause[:2] = True  # speech ends after frame 1; 6 silent frames follow in this step
    assert not any(isinstance(e, SpeakerStopped) for e in d.push(_speech_step(1, cfg, a, talk_then_pause)))
    stopped = [e for e in d.push(_speech_step(2, cfg, None, np.zeros(cfg.frames_per_step, bool)))
               if isinstance(e, SpeakerStopped)]
    assert stopped == [SpeakerStopped(0, cfg.step_samples + 2 * cfg.frame_samples)]


def test_defaults_keep_the_turn_end_within_half_a_second():
    """The worst case: the last speech frame ends a step's first frame; the close comes in the frame after the
    hangover, and is reported with the end of that frame's step."""
    cfg = DiarizationConfig()
    frames = cfg.live_hangover_frames + 1 + cfg.frames_per_step - 1 + cfg.lookahead_steps * cfg.frames_per_step
    worst_ms = frames * cfg.frame_samples * 1000 // cfg.sample_rate_hz
    assert worst_ms <= 500 - 20  # 20 ms: the server's processing of a step (bench/RESULTS.md)
