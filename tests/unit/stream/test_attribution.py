"""The attribution core: which separated source carries which active speaker, with a continuity prior and a
fallback to the gated input (synthetic embeddings: what a speaker encoder would say, as vectors)."""

import numpy as np
import pytest

from rtsep.errors import ConfigError
from rtsep.stream.attribution import (
    AttributionConfig,
    Attributor,
    Block,
    SourceView,
    attribute,
    level_gain,
    plan_blocks,
    window_around,
)

RATE = 1000  # samples per second: block positions read as milliseconds


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


rng = np.random.default_rng(0)
BASIS = {name: unit(rng.standard_normal(64)) for name in ("A", "B", "C")}


def like(*weights):
    """An embedding between the speakers, e.g. like(A=0.9, B=0.1) (keyword pairs as tuples)."""
    return unit(sum(w * BASIS[name] for name, w in weights))


def views(*embeddings, energies=None):
    energies = energies or [1.0] * len(embeddings)
    return [SourceView(e, en) for e, en in zip(embeddings, energies, strict=True)]


def attributor(**overrides):
    return Attributor(AttributionConfig(**overrides), 2, RATE)


def test_an_overlap_gets_each_speaker_their_own_source():
    a = attributor()
    out = a.decide(0, 1000, ["A", "B"], views(BASIS["B"], BASIS["A"]), BASIS)
    assert out["A"].source == 1 and out["B"].source == 0
    assert out["A"].confident and out["A"].similarity == pytest.approx(1.0) and out["A"].margin > 0.5


def test_a_swap_after_a_pause_is_followed():
    a = attributor(pause_s=0.5)
    assert a.decide(0, 1000, ["A", "B"], views(BASIS["A"], BASIS["B"]), BASIS)["A"].source == 0
    # both stop; after 2 s of silence they come back in each other's source
    out = a.decide(3000, 4000, ["A", "B"], views(BASIS["B"], BASIS["A"]), BASIS)
    assert out["A"].source == 1 and out["B"].source == 0 and out["A"].confident


def test_the_prior_keeps_a_talker_in_their_source_through_ambiguous_blocks_but_not_after_a_pause():
    ambiguous = views(like(("A", 0.51), ("B", 0.49)), like(("A", 0.49), ("B", 0.51)))  # slightly favours a swap
    a = attributor(continuity=0.1, min_margin=0.02, pause_s=0.5, min_similarity=0.3, min_contrast=-0.1)
    a.decide(0, 1000, ["A", "B"], views(BASIS["B"], BASIS["A"]), BASIS)  # A in source 1
    out = a.decide(1000, 2000, ["A", "B"], ambiguous, BASIS)  # continuous speech: the prior outweighs
    assert out["A"].source == 1 and out["B"].source == 0
    later = a.decide(5000, 6000, ["A", "B"], ambiguous, BASIS)  # after a pause: the evidence alone decides
    assert later["A"].source == 0 and later["B"].source == 1


def test_an_unsure_block_falls_back_to_the_gated_input():
    a = attributor(min_margin=0.05)
    both = like(("A", 1.0), ("B", 1.0))
    out = a.decide(0, 1000, ["A", "B"], views(both, both), BASIS)  # the sources cannot be told apart
    assert out["A"].source is None and out["A"].reason == "unsure"
    assert out["B"].source is None and out["B"].reason == "unsure"
    a = attributor(min_similarity=0.6)
    out = a.decide(0, 1000, ["A", "B"], views(BASIS["C"], like(("C", 1.0), ("B", 0.3))), BASIS)
    assert out["A"].source is None and out["A"].reason == "unsure"  # neither source sounds like A


def test_three_talkers_share_two_sources_and_the_third_keeps_the_gated_input():
    a = Attributor(AttributionConfig(), 2, RATE)
    out = a.decide(0, 1000, ["A", "B", "C"], views(BASIS["C"], like(("A", 1.0), ("B", 0.1))), BASIS)
    assert out["C"].source == 0 and out["A"].source == 1
    assert out["B"].source is None and out["B"].reason == "no_source"


def test_one_active_speaker_by_the_solo_policy():
    alone = views(BASIS["A"], like(("B", 1.0)), energies=[1.0, 0.01])  # the second source near-silent
    hidden = views(BASIS["A"], BASIS["B"], energies=[1.0, 0.6])  # a second talker the timeline missed
    assert attributor(solo="input").decide(0, 1000, ["A"], hidden, BASIS)["A"].reason == "solo"
    assert attributor(solo="source").decide(0, 1000, ["A"], alone, BASIS)["A"].source == 0
    overlap = AttributionConfig(solo="overlap", solo_other_share=0.2)
    assert Attributor(overlap, 2, RATE).decide(0, 1000, ["A"], alone, BASIS)["A"].source is None
    assert Attributor(overlap, 2, RATE).decide(0, 1000, ["A"], hidden, BASIS)["A"].source == 0


def test_a_silent_source_carries_nobody_and_an_unknown_speaker_keeps_the_input():
    a = attributor(solo="source")
    out = a.decide(0, 1000, ["A", "B"], views(BASIS["A"], BASIS["B"], energies=[1.0, 0.0]), BASIS)
    assert out["A"].source == 0 and out["B"].source is None and out["B"].reason == "no_source"
    out = a.decide(1000, 2000, ["A", "D"], views(BASIS["A"], BASIS["B"]), BASIS)
    assert out["D"].reason == "no_centroid" and out["A"].source == 0
    out = a.decide(2000, 3000, ["A"], [SourceView(None, 1.0), SourceView(None, 1.0)], BASIS)
    assert out["A"].reason == "no_source"
    with pytest.raises(ValueError, match="2 source views"):
        a.decide(0, 1, ["A"], views(BASIS["A"]), BASIS)


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="solo"):
        AttributionConfig(solo="maybe")
    with pytest.raises(ConfigError, match="min_similarity"):
        AttributionConfig(min_similarity=1.5)
    with pytest.raises(ConfigError, match="block_s"):
        AttributionConfig(block_s=0)


def test_blocks_follow_the_set_of_active_speakers_and_a_late_joiner():
    spans = {"A": [(0, 3000), (5000, 6000)], "B": [(2000, 4000)], "C": [(5500, 7000)]}
    blocks = plan_blocks(spans, 8000, 1000)
    assert [(b.start_sample, b.end_sample, b.speakers) for b in blocks] == [
        (0, 1000, ("A",)), (1000, 2000, ("A",)), (2000, 3000, ("A", "B")), (3000, 4000, ("B",)),
        (5000, 5500, ("A",)), (5500, 6000, ("A", "C")), (6000, 7000, ("C",))]
    long = plan_blocks({"A": [(0, 2500)]}, 2500, 1000)  # cut into equal pieces of at most a block
    assert [(b.start_sample, b.end_sample) for b in long] == [(0, 833), (833, 1667), (1667, 2500)]
    assert plan_blocks({}, 1000, 100) == []
    assert window_around(Block(0, 200, ("A",)), 10000, 1500) == (0, 1500)
    assert window_around(Block(5000, 6000, ("A",)), 10000, 1500) == (4750, 6250)
    assert window_around(Block(9800, 10000, ("A",)), 10000, 1500) == (8500, 10000)


def test_level_gain_matches_the_source_to_the_mixture():
    s = np.sin(np.arange(1000) / 7.0)
    other = np.cos(np.arange(1000) / 3.1)
    assert level_gain(2 * s + other, s, 4.0) == pytest.approx(2.0, abs=0.05)
    assert level_gain(s, -s, 4.0) == 0.0 and level_gain(s, np.zeros(1000), 4.0) == 0.0
    assert level_gain(100 * s, s, 4.0) == 4.0


# --- a whole session with a stand-in encoder: tones as talkers, their band energies as embeddings -------------


FREQS = {"A": 110.0, "B": 230.0, "C": 370.0}
SR = 4000


def tone_embed(windows):
    """A speaker encoder for tones: the energy in each talker's band, as a unit vector."""
    spectrum = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    freqs = np.fft.rfftfreq(windows.shape[1], 1 / SR)
    bands = np.stack([spectrum[:, np.abs(freqs - f) < 20].sum(axis=1) for f in FREQS.values()], axis=1) + 1e-9
    return bands / np.linalg.norm(bands, axis=1, keepdims=True)


def talker(name, spans, total):
    t = np.arange(total) / SR
    gate = np.zeros(total)
    for a, b in spans:
        gate[round(a * SR):round(b * SR)] = 1.0
    return (0.3 * np.sin(2 * np.pi * FREQS[name] * t) * gate).astype(np.float32)


def test_a_session_of_three_talkers_with_a_late_joiner_and_a_swap_is_attributed():
    total = 14 * SR
    spans = {"A": [(0, 4), (8, 11)], "B": [(2, 6), (9, 12)], "C": [(6, 7), (10.5, 14)]}  # C joins late
    talkers = {name: talker(name, s, total) for name, s in spans.items()}
    mix = sum(talkers.values())
    # a separator that carries A in source 0 and B in source 1, then, after the pause at 6-8 s, the other way
    # round; C is in whichever source is free
    first = np.arange(total) < 7 * SR
    s0 = np.where(first, talkers["A"] + talkers["C"], talkers["B"])
    s1 = np.where(first, talkers["B"], talkers["A"] + talkers["C"])
    sources = np.stack([s0, s1]).astype(np.float32)
    sample_spans = {k: [(round(a * SR), round(b * SR)) for a, b in v] for k, v in spans.items()}
    result = attribute(mix, sources, SR, sample_spans, AttributionConfig(window_s=0.5, block_s=0.5), tone_embed)
    assert set(result.centroids) == {"A", "B", "C"}
    for d in result.decisions:
        t = (d.block.start_sample + d.block.end_sample) / 2 / SR
        if d.block.speakers == ("A", "B"):
            want = {"A": 0, "B": 1} if t < 7 else {"A": 1, "B": 0}
            assert {s: a.source for s, a in d.assignments.items()} == want, t
            assert all(d.gains[k] == pytest.approx(1.0, abs=0.05) for k in d.gains)
        if len(d.block.speakers) == 1 and t < 6:
            assert next(iter(d.assignments.values())).reason == "solo"  # alone: the other source is silent
    three = [d for d in result.decisions if len(d.block.speakers) == 3]  # 10.5-11 s: A, B and C at once
    assert three and all(sorted(a.reason for a in d.assignments.values()).count("attributed") == 2 for d in three)
    summary = result.summary()
    assert summary["attributed"] > 0 and summary["solo"] > 0
