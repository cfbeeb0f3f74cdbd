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
