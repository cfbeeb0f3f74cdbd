"""In-session adaptation core (rtsep.separate.adapt): turns from a timeline, remixes, fine-tuning of a copy,
offline separation equal to streaming, and the source-to-speaker assignment."""

import numpy as np
import pytest
import torch

from rtsep.errors import ConfigError
from rtsep.separate.adapt import (
    AdaptationSchedule,
    AdaptConfig,
    AdaptiveSeparator,
    RemixSampler,
    adapt_convtasnet,
    gather_speech,
    match_sources_to_speakers,
    remix_pair,
    separate_offline,
    single_talker_spans,
)
from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig
from rtsep.separate.losses import pit_si_sdr_improvement
from rtsep.separate.postfilter import WienerConfig
from tests.signals import band_noise as talker

SMALL = ConvTasNetConfig(encoder_filters=16, window_samples=16, bottleneck_channels=8, hidden_channels=16,
                         blocks_per_repeat=2, repeats=1, sample_rate_hz=8000)
RATE = 8000


@pytest.fixture
def model():
    torch.manual_seed(0)
    return ConvTasNet(SMALL).eval()


def seg(speaker, start, end):
    return {"speaker": speaker, "start_s": start, "end_s": end}


def test_single_talker_spans_leave_out_overlap_and_short_turns():
    segments = [seg("A", 0.0, 3.0), seg("B", 2.0, 5.0), seg("A", 6.0, 6.3), seg("C", 7.0, 9.0)]
    spans = single_talker_spans(segments, min_turn_s=0.5, edge_trim_s=0.1)
    assert spans.keys() == {"A", "B", "C"}
    assert spans["A"] == [pytest.approx((0.1, 1.9))]  # 2..3 overlaps B; 6.0..6.3 is too short once trimmed
    assert spans["B"] == [pytest.approx((3.1, 4.9))]
    assert spans["C"] == [pytest.approx((7.1, 8.9))]
    assert single_talker_spans([]) == {}


def test_gather_speech_concatenates_each_speakers_spans():
    audio = np.arange(10 * RATE, dtype=np.float32)
    speech = gather_speech(audio, RATE, {"A": [(0.0, 1.0), (2.0, 2.5)], "B": [(9.5, 12.0)]})
    assert len(speech["A"]) == 1.5 * RATE and speech["A"][RATE] == 2 * RATE
    assert len(speech["B"]) == 0.5 * RATE  # clipped at the end of the audio


def test_remix_pair_levels_and_peak():
    a, b = talker(1, 1, 100, 900), talker(2, 1, 1500, 3000) * 0.1
    mix, sources = remix_pair(a, b, ratio_db=3.0, level=0.5)
    np.testing.assert_allclose(mix, sources.sum(0), atol=1e-6)
    assert np.abs(mix).max() == pytest.approx(0.5, rel=1e-4)
    ratio = 10 * np.log10(np.mean(sources[0] ** 2) / np.mean(sources[1] ** 2))
    assert ratio == pytest.approx(3.0, abs=1e-3)


def test_sampler_draws_pairs_of_different_talkers():
    speech = {"A": np.ones(RATE, np.float32), "B": 2 * np.ones(RATE, np.float32), "C": 3 * np.ones(RATE, np.float32)}
    sampler = RemixSampler(speech, 4000, 5.0, np.random.default_rng(0))
    mixes, sources = sampler.draw(20)
    assert mixes.shape == (20, 4000) and sources.shape == (20, 2, 4000)
    for src in sources:  # the two sources come from two different talkers: their shapes differ only by scale
        assert src[0, 0] > 0 and src[1, 0] > 0
    with pytest.raises(ValueError):
        RemixSampler({"A": np.ones(RATE, np.float32)}, 4000, 5.0, np.random.default_rng(0))


def test_speed_perturbation_resamples_pieces_to_the_segment_length():
    ramp = np.linspace(0, 1, 2 * RATE, dtype=np.float32)
    sampler = RemixSampler({"A": ramp, "B": ramp[::-1].copy()}, RATE, 0.0, np.random.default_rng(1), 0.1)
    slopes = []
    for _ in range(20):
        piece = sampler._piece("A")
        assert piece.shape == (RATE,)
        slopes.append(float(np.median(np.diff(piece))) * (2 * RATE - 1))  # 1.0 at the original speed
    assert 0.9 <= min(slopes) < 0.98 and 1.02 < max(slopes) <= 1.1


def test_adaptation_learns_the_sessions_talkers_and_leaves_the_base_model_alone(model):
    speech = {"A": talker(1, 6, 100, 900), "B": talker(2, 6, 1500, 3500)}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = AdaptConfig(compile=False, steps=60, learning_rate=3e-3, segment_s=0.5)
    adapted, report = adapt_convtasnet(model, speech, config)
    assert report.skipped is None and report.steps == 60 and report.speakers == ["A", "B"]
    assert report.loss_last_db > report.loss_first_db + 3  # it learnt to separate these two talkers
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not adapted.training
    # and it separates unseen audio of the same talkers better than the base model
    test = {"A": talker(11, 1, 100, 900), "B": talker(12, 1, 1500, 3500)}
    mix = test["A"] + test["B"]

    def improvement_db(m):
        return pit_si_sdr_improvement(mix, separate_offline(m, mix), np.stack([test["A"], test["B"]]))[1]

    assert improvement_db(adapted) > improvement_db(model) + 3


def test_adaptation_trains_with_plain_norms_and_returns_the_callers_norm_memory(model):
    from rtsep.separate.convtasnet import with_norm_memory

    speech = {"A": talker(1, 3, 100, 900), "B": talker(2, 3, 1500, 3500)}
    config = AdaptConfig(compile=False, steps=4, segment_s=0.5)
    plain, _ = adapt_convtasnet(model, speech, config)
    remembering, _ = adapt_convtasnet(with_norm_memory(model, 16.0), speech, config)
    assert plain.config.norm_memory_s == 0.0 and remembering.config.norm_memory_s == 16.0
    for (k, a), b in zip(plain.state_dict().items(), remembering.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k  # the same training: the memory is for separating long input


COMPILED_CHECK = """
import json, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[1])
from tests.unit.separate.test_adapt import SMALL, talker
from rtsep.separate.adapt import AdaptConfig, adapt_convtasnet
from rtsep.separate.convtasnet import ConvTasNet
torch.manual_seed(0)
model = ConvTasNet(SMALL).eval()
speech = {"A": talker(1, 3, 100, 900), "B": talker(2, 3, 1500, 3500)}
runs = [adapt_convtasnet(model, speech, AdaptConfig(steps=3, segment_s=0.5, compile=c)) for c in (False, True, True)]
weights = [[v for v in m.state_dict().values()] for m, _ in runs]
print(json.dumps({
    "compiled": [r.compiled for _, r in runs],
    "loss_diff_db": float(np.abs(np.subtract(runs[0][1].losses_db, runs[1][1].losses_db)).max()),
    "weight_diff": max(float((a - b).abs().max()) for a, b in zip(weights[0], weights[1])),
    "again_equal": all(torch.equal(a, b) for a, b in zip(weights[1], weights[2])),
}))
"""


def test_compiled_steps_train_as_the_plain_steps():
    # in a fresh interpreter: dynamo's tracing must not meet torch work of other tests' leftover threads
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[3])
    done = subprocess.run([sys.executable, "-c", COMPILED_CHECK, repo], capture_output=True, text=True, cwd=repo,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["compiled"] == [False, True, True]
    assert out["loss_diff_db"] < 1e-3 and out["weight_diff"] < 1e-4
    assert out["again_equal"]  # a second copy in the same process reuses the compiled graphs, same result


def test_adaptation_trains_uncompiled_when_compiling_fails(model, monkeypatch, caplog):
    from rtsep.separate import adapt

    def broken(*args):
        raise RuntimeError("InductorError: no C++ compiler\nmore lines")

    monkeypatch.setattr(adapt, "_compiled_training_loss", lambda: broken)
    speech = {"A": talker(1, 3, 100, 900), "B": talker(2, 3, 1500, 3500)}
    plain, _ = adapt_convtasnet(model, speech, AdaptConfig(steps=3, segment_s=0.5, compile=False))
    with caplog.at_level("WARNING", logger="rtsep.separate.adapt"):
        fallback, report = adapt_convtasnet(model, speech, AdaptConfig(steps=3, segment_s=0.5))
    assert report.skipped is None and report.steps == 3 and not report.compiled
    assert "torch.compile failed (RuntimeError: InductorError: no C++ compiler)" in caplog.text
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), fallback.state_dict().values()))


def test_adaptation_is_skipped_without_two_talkers(model):
    _, report = adapt_convtasnet(model, {"A": talker(1, 6, 100, 900), "B": talker(2, 1, 1500, 3500)},
                                 AdaptConfig(compile=False, steps=5, min_speech_s=2.0))
    assert report.skipped and report.steps == 0 and report.speakers == ["A"]
    _, report = adapt_convtasnet(model, {}, AdaptConfig(compile=False, steps=5))
    assert report.skipped


def test_adaptation_stops_when_asked(model):
    speech = {"A": talker(1, 3, 100, 900), "B": talker(2, 3, 1500, 3500)}
    calls = []
    adapted, report = adapt_convtasnet(model, speech, AdaptConfig(compile=False, steps=50, segment_s=0.5),
                                       stop=lambda: calls.append(1) or len(calls) > 3)
    assert report.skipped == "stopped" and report.steps == 3 and adapted is model


def test_adaptation_averages_the_weights_of_its_last_steps(model, monkeypatch):
    speech = {"A": talker(1, 3, 100, 900), "B": talker(2, 3, 1500, 3500)}
    after_step: list[list[torch.Tensor]] = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        after_step.append([p.detach().clone() for group in self.param_groups for p in group["params"]])
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    adapted, _ = adapt_convtasnet(model, speech, AdaptConfig(compile=False, steps=4, segment_s=0.5, average_last=0.5))
    expected = [(a + b) / 2 for a, b in zip(after_step[2], after_step[3], strict=True)]  # the last 2 of 4 steps
    got = list(adapted.parameters())
    assert len(got) == len(expected)
    assert all(torch.allclose(g, e, atol=1e-6) for g, e in zip(got, expected, strict=True))
    assert not all(torch.equal(g, last) for g, last in zip(got, after_step[3], strict=True))


def test_adapt_config_is_validated():
    with pytest.raises(ConfigError):
        AdaptConfig(steps=-1)
    with pytest.raises(ConfigError):
        AdaptConfig(learning_rate=0)
    with pytest.raises(ConfigError):
        AdaptConfig(average_last=1.5)


@pytest.mark.parametrize("chunk_s", [0.013, 0.5, 10.0])
def test_separate_offline_equals_one_forward(model, chunk_s):
    x = talker(3, 1.5, 100, 3000)
    expected = model(torch.from_numpy(x)[None])[0].detach().numpy()
    got = separate_offline(model, x, chunk_s=chunk_s)
    assert got.shape == (2, len(x))
    # the forward lacks the last look-ahead's overlap-add contribution; everything before it is equal
    np.testing.assert_allclose(got[:, : -SMALL.lookahead_samples], expected[:, : -SMALL.lookahead_samples], atol=1e-4)


def test_sources_are_matched_to_the_speakers_they_carry():
    sources = np.zeros((2, 10 * RATE), np.float32)
    sources[0, 5 * RATE : 8 * RATE] = 1.0  # source 0 is loud in B's turn
    sources[1, 0 : 3 * RATE] = 1.0  # source 1 in A's
    spans = {"A": [(0.0, 3.0)], "B": [(5.0, 8.0)], "C": [(9.0, 9.5)]}
    assert match_sources_to_speakers(sources, RATE, spans) == ["B", "A"]
    assert match_sources_to_speakers(sources, RATE, {"A": [(0.0, 3.0)]}) == [None, "A"]
    assert match_sources_to_speakers(sources, RATE, {}) == [None, None]


def test_adaptive_separator_runs_at_the_input_rate(model):
    a, b = talker(1, 4, 100, 900), talker(2, 4, 1500, 3500)
    audio8 = np.concatenate([a, b, a[:RATE] + b[:RATE]])
    import soxr

    audio16 = soxr.resample(audio8, RATE, 16000).astype(np.float32)
    segments = [seg("SPEAKER_00", 0, 4), seg("SPEAKER_01", 4, 8), seg("SPEAKER_00", 8, 9), seg("SPEAKER_01", 8, 9)]
    result = AdaptiveSeparator(model, AdaptConfig(compile=False, steps=3, segment_s=0.5)).run(audio16, 16000, segments)
    assert result.sources.shape == (2, len(audio16)) and result.rate_hz == 16000
    assert result.report.steps == 3 and result.report.speech_s == {"SPEAKER_00": 3.9, "SPEAKER_01": 3.9}
    assert sorted(s for s in result.speakers if s) == ["SPEAKER_00", "SPEAKER_01"]
    assert result.speeds == [1.0]


def test_adaptive_separator_averages_an_ensemble_of_speeds(model, monkeypatch):
    a, b = talker(1, 4, 100, 900), talker(2, 4, 1500, 3500)
    audio = np.concatenate([a, b, a[:RATE] + b[:RATE]])
    segments = [seg("SPEAKER_00", 0, 4), seg("SPEAKER_01", 4, 8)]
    lengths = []
    real = separate_offline

    def counted(m, x, *args, **kwargs):
        lengths.append(len(x))
        return real(m, x, *args, **kwargs)

    import rtsep.separate.adapt as adapt_module

    monkeypatch.setattr(adapt_module, "separate_offline", counted)
    config = AdaptConfig(compile=False, steps=2, segment_s=0.5, speed_perturb=0.1)
    result = AdaptiveSeparator(model, config, ensemble=3).run(audio, RATE, segments)
    assert result.speeds == [0.9, 1.0, 1.1] and result.sources.shape == (2, len(audio))
    assert lengths[0] == len(audio) and sorted(lengths[1:]) == [round(len(audio) / 1.1), round(len(audio) / 0.9)]
    assert result.postfilter is None and np.abs(result.sources.sum(0) - audio).max() > 1e-2  # raw model output


def test_adaptive_separator_wiener_filters_the_sources_from_the_recording(model):
    a, b = talker(1, 4, 100, 900), talker(2, 4, 1500, 3500)
    audio = np.concatenate([a, b, a[:RATE] + b[:RATE]])
    segments = [seg("SPEAKER_00", 0, 4), seg("SPEAKER_01", 4, 8)]
    config = AdaptConfig(compile=False, steps=2, segment_s=0.5)
    result = AdaptiveSeparator(model, config, ensemble=2, postfilter=WienerConfig()).run(audio, RATE, segments)
    assert result.postfilter == WienerConfig() and result.sources.shape == (2, len(audio))
    assert np.abs(result.sources.sum(0) - audio).max() <= 1e-4  # re-estimated from the recording: they add up
    one_talker = AdaptiveSeparator(model, config, postfilter=WienerConfig()).run(audio, RATE, segments[:1])
    assert one_talker.report.skipped and one_talker.postfilter is None  # not adapted: the base model's output as is
    np.testing.assert_allclose(one_talker.sources, separate_offline(model, audio), atol=1e-5)


def test_schedule_starts_when_two_talkers_have_enough_speech_then_as_it_doubles():
    schedule = AdaptationSchedule(RATE, AdaptConfig(edge_trim_s=0.0), min_speech_s=2.0, growth=2.0, max_rounds=2)
    schedule.push(np.arange(20 * RATE, dtype=np.float32))
    turns = [seg("A", 0, 3), seg("B", 3, 4.5)]
    assert schedule.due(turns) is None  # B has 1.5 s only
    turns.append(seg("B", 5, 6))
    material = schedule.due(turns)
    assert material is not None and material.spans == {"A": [(0.0, 3.0)], "B": [(3.0, 4.5), (5.0, 6.0)]}
    speech = material.speech(RATE)
    assert len(speech["A"]) == 3 * RATE and len(speech["B"]) == 2.5 * RATE and speech["B"][0] == 3 * RATE
    assert schedule.busy and not schedule.open and schedule.due(turns) is None  # one round at a time
    schedule.done()
    assert schedule.due(turns + [seg("A", 7, 9)]) is None  # 7.5 s is not twice the 5.5 s of round one
    material = schedule.due(turns + [seg("A", 7, 13)])
    assert material is not None and len(material.speech(RATE)["A"]) == 9 * RATE
    schedule.done()
    assert schedule.rounds == 2 and not schedule.open  # max_rounds reached
    assert schedule.due(turns + [seg("A", 7, 19)]) is None


def test_schedule_keeps_a_window_of_recent_input():
    schedule = AdaptationSchedule(RATE, AdaptConfig(edge_trim_s=0.0), min_speech_s=1.0, window_s=5.0)
    for k in range(10):  # 10 s in 1 s pieces: the first 5 s are dropped
        schedule.push(np.full(RATE, k, np.float32))
    assert schedule.start_sample == 5 * RATE
    assert schedule.due([seg("A", 0, 3), seg("B", 3, 5)]) is None  # all before the window
    speech = schedule.due([seg("A", 6, 7.5), seg("B", 8, 9.5)]).speech(RATE)
    assert speech["A"][0] == 6 and speech["B"][-1] == 9


class KeepFirstSecond:
    """A stand-in purity filter: keeps the first second of each talker's first span."""

    def filter(self, audio, rate_hz, spans):
        self.rate_hz = rate_hz
        return {spk: [(items[0][0], items[0][0] + 1.0)] for spk, items in spans.items()}


def test_material_is_resampled_to_the_model_rate_and_filtered():
    a, b = talker(1, 3, 100, 900), talker(2, 3, 1500, 3500)
    import soxr

    audio16 = soxr.resample(np.concatenate([a, b]), RATE, 16000).astype(np.float32)
    schedule = AdaptationSchedule(16000, AdaptConfig(edge_trim_s=0.0), min_speech_s=2.0)
    schedule.push(audio16)
    material = schedule.due([seg("A", 0, 3), seg("B", 3, 6)])
    assert material.rate_hz == 16000 and len(material.audio) == len(audio16)
    speech = material.speech(RATE)
    assert len(speech["A"]) == len(speech["B"]) == 3 * RATE
    assert np.corrcoef(speech["B"], b)[0, 1] > 0.99  # resampled to the model rate, aligned
    purity = KeepFirstSecond()
    filtered = material.speech(RATE, purity)
    assert purity.rate_hz == 16000 and len(filtered["A"]) == len(filtered["B"]) == RATE
