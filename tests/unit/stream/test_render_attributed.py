"""Final speaker tracks with separated sources: the attributed source inside its blocks, crossfaded with the gated
input at the edges (no clicks), the gated input elsewhere, every track the session's length."""

import numpy as np
import pytest

from rtsep.stream.attribution import Assignment, Attribution, Block, BlockDecision
from rtsep.stream.render import TracksConfig, final_tracks, iter_attributed, iter_speakers

SR = 4000
TOTAL = 4 * SR
t = np.arange(TOTAL) / SR
A = (0.3 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
B = (0.3 * np.sin(2 * np.pi * 80 * t + 1.0)).astype(np.float32)
MIX = A + B
SOURCES = np.stack([A, B])
SEGMENTS = [{"speaker": "A", "start_s": 0.0, "end_s": 3.0}, {"speaker": "B", "start_s": 1.0, "end_s": 4.0}]


def attribution(choices, gains=None):
    """Decisions of blocks (start_s, end_s, {speaker: source or None})."""
    decisions = []
    for start_s, end_s, chosen in choices:
        block = Block(round(start_s * SR), round(end_s * SR), tuple(chosen))
        assignments = {spk: Assignment(spk, k, 0.9, 0.5, "attributed" if k is not None else "solo")
                       for spk, k in chosen.items()}
        decisions.append(BlockDecision(block, assignments, {k: (gains or {}).get(k, 1.0)
                                                             for k in chosen.values() if k is not None}))
    return Attribution(decisions, {})


OVERLAP = attribution([(0, 1, {"A": None}), (1, 2, {"A": 0, "B": 1}), (2, 3, {"A": 0, "B": 1}),
                       (3, 4, {"B": None})])


def test_inside_attributed_blocks_a_track_carries_its_source_and_elsewhere_the_gated_input():
    tracks = dict(iter_attributed(MIX, SOURCES, SR, SEGMENTS, OVERLAP, crossfade_s=0.01, source_fade_s=0.02))
    assert set(tracks) == {"A", "B"} and all(x.size == TOTAL and x.dtype == np.float32 for x in tracks.values())
    inside = slice(round(1.05 * SR), round(2.95 * SR))
    np.testing.assert_allclose(tracks["A"][inside], A[inside], atol=1e-6)
    np.testing.assert_allclose(tracks["B"][inside], B[inside], atol=1e-6)
    before = slice(0, round(0.95 * SR))
    np.testing.assert_allclose(tracks["A"][before], MIX[before], atol=1e-6)  # A alone: the input
    assert np.all(tracks["B"][before] == 0)  # B silent before their turn
    np.testing.assert_allclose(tracks["B"][round(3.05 * SR):], MIX[round(3.05 * SR):], atol=1e-6)


def test_a_block_gain_matches_the_source_level():
    half = np.stack([A / 2, B / 2])
    gained = attribution([(1, 3, {"A": 0, "B": 1})], gains={0: 2.0, 1: 2.0})
    tracks = dict(iter_attributed(MIX, half, SR, SEGMENTS, gained, source_fade_s=0.02))
    inside = slice(round(1.05 * SR), round(2.95 * SR))
    np.testing.assert_allclose(tracks["A"][inside], A[inside], atol=1e-6)


def test_sources_equal_to_the_input_give_the_gated_input_exactly():
    same = np.stack([MIX, MIX])
    attributed = dict(iter_attributed(MIX, same, SR, SEGMENTS, OVERLAP, crossfade_s=0.01, source_fade_s=0.02))
    gated = dict(iter_speakers(MIX, SR, SEGMENTS, 0.01))
    for speaker in gated:
        np.testing.assert_allclose(attributed[speaker], gated[speaker], atol=1e-6)


def steepest(x):
    return float(np.max(np.abs(np.diff(x))))


def test_the_switch_between_input_and_source_is_a_crossfade_not_a_click():
    limit = 1.1 * max(steepest(MIX), steepest(A), steepest(B))
    smooth = dict(iter_attributed(MIX, SOURCES, SR, SEGMENTS, OVERLAP, crossfade_s=0.01, source_fade_s=0.02))
    assert steepest(smooth["A"]) <= limit and steepest(smooth["B"]) <= limit
    # the same switch without a fade jumps by the other talker's whole amplitude: what the fade avoids
    hard = dict(iter_attributed(MIX, SOURCES, SR, SEGMENTS, OVERLAP, crossfade_s=0.01, source_fade_s=0.0))
    assert steepest(hard["A"]) > limit


def test_final_tracks_with_sources_are_normalised_and_span_the_session():
    config = TracksConfig(normalize_loudness=False)
    tracks = list(final_tracks(MIX[: TOTAL - 100], SR, SEGMENTS, config, TOTAL, sources=SOURCES[:, : TOTAL - 50],
                               attribution=OVERLAP, source_fade_s=0.02))
    assert [tr.name for tr in tracks] == ["final-A", "final-B"]
    assert all(tr.samples.size == TOTAL and tr.loudness is None for tr in tracks)
    inside = slice(round(1.05 * SR), round(2.95 * SR))
    assert tracks[0].samples[inside] == pytest.approx(A[inside], abs=1e-6)
    plain = list(final_tracks(MIX, SR, SEGMENTS, config, TOTAL))  # no attribution: the gated input
    assert plain[0].samples[inside] == pytest.approx(MIX[inside], abs=1e-6)
