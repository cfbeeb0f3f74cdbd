"""Final speaker tracks rendered from the input and the final timeline (rtsep.stream.render)."""

import numpy as np
import pytest

from rtsep.errors import ConfigError
from rtsep.stream.render import (
    TracksConfig,
    final_track_name,
    final_tracks,
    ramp,
    render_speakers,
    speaker_gains,
    speaker_of,
    track_kind,
)

RATE = 16000


def seg(speaker: str, start_s: float, end_s: float) -> dict:
    return {"speaker": speaker, "start_s": start_s, "end_s": end_s}


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * 0.1).astype(np.float32)


def test_the_ramp_is_complementary_and_bounded():
    x = np.linspace(-200, 200, 4001)
    r = ramp(x, 160)
    np.testing.assert_allclose(r + ramp(-x, 160), 1.0, atol=1e-12)
    assert r[0] == 0 and r[-1] == 1 and np.all(np.diff(r) >= 0)


def test_each_speaker_gets_the_input_inside_its_turns_and_silence_outside():
    audio = noise(3.0)
    tracks = render_speakers(audio, RATE, [seg("A", 0.0, 1.0), seg("B", 1.0, 2.0), seg("A", 2.5, 3.0)],
                             crossfade_s=0.01)
    assert list(tracks) == ["A", "B"]
    a, b = tracks["A"], tracks["B"]
    assert a.dtype == np.float32 and a.size == b.size == audio.size
    inside_a = slice(100, 15900)
    np.testing.assert_array_equal(a[inside_a], audio[inside_a])
    assert not b[inside_a].any()
    np.testing.assert_array_equal(b[16100:31900], audio[16100:31900])
    assert not a[16100:31900].any() and not a[32100:39900].any() and not b[32100:].any()  # the pause, B's rest


def test_crossfades_at_a_turn_change_sum_to_the_input_and_have_no_step():
    audio = np.full(2 * RATE, 0.5, np.float32)
    tracks = render_speakers(audio, RATE, [seg("A", 0.0, 1.0), seg("B", 1.0, 2.0)], crossfade_s=0.01)
    np.testing.assert_allclose(tracks["A"] + tracks["B"], audio, atol=1e-6)
    # around the edge, each track moves by at most one ramp step per sample (160 samples over 0..0.5)
    edge = slice(RATE - 100, RATE + 100)
    for track in tracks.values():
        assert np.max(np.abs(np.diff(track[edge]))) < 0.5 * np.pi / 160 + 1e-6
    assert tracks["A"][RATE - 81] == pytest.approx(0.5) and tracks["A"][RATE + 80] == 0.0


def test_a_turn_at_the_session_s_edges_and_overlapping_turns():
    audio = np.ones(RATE, np.float32)
    gains = speaker_gains([(0, 8000), (6000, 16000)], RATE, 160)
    assert gains[0] == 1.0 and gains[-1] == 1.0  # no fade at the session's start and end
    assert speaker_gains([(8000, 16000)], RATE, 160)[8000 - 81] == 0.0  # a fade centred on an inner edge ...
    assert 0.5 < speaker_gains([(8000, 16000)], RATE, 160)[8000] < 0.51  # ... half-way there at the edge
    np.testing.assert_array_equal(gains[100:15900], 1.0)  # overlapping spans of one speaker: no dip
    both = render_speakers(audio, RATE, [seg("A", 0.0, 0.6), seg("B", 0.4, 1.0)], crossfade_s=0.01)
    np.testing.assert_array_equal(both["A"][6500:9500], 1.0)  # an overlap: both carry the input
    np.testing.assert_array_equal(both["B"][6500:9500], 1.0)


def test_the_tracks_span_the_session_even_when_the_input_is_short():
    tracks = render_speakers(np.ones(100, np.float32), RATE, [seg("A", 0.0, 0.5)], 0.0, total_samples=RATE)
    assert tracks["A"].size == RATE and tracks["A"][:100].all() and not tracks["A"][100:].any()
    with pytest.raises(ValueError, match="mono"):
        render_speakers(np.ones((2, 100), np.float32), RATE, [], 0.0)


def test_final_tracks_normalise_loudness_when_configured():
    audio = noise(4.0)
    segments = [seg("A", 0.0, 2.0), seg("B", 2.0, 4.0)]
    plain = final_tracks(audio, RATE, segments, TracksConfig(normalize_loudness=False))
    assert [(t.speaker, t.name, t.loudness) for t in plain] == [("A", "final-A", None), ("B", "final-B", None)]
    loud = final_tracks(audio, RATE, segments, TracksConfig(loudness_lufs=-20.0))
    for track in loud:
        assert track.loudness.measured_lufs is not None
        assert abs(track.loudness.measured_lufs + track.loudness.gain_db - -20.0) < 0.01 or track.loudness.limited


def test_track_names_and_kinds():
    assert final_track_name("SPEAKER_01") == "final-SPEAKER_01" and speaker_of("final-SPEAKER_01") == "SPEAKER_01"
    assert [track_kind(n) for n in ("final-SPEAKER_01", "input", "source_0", "SPEAKER_01")] == [
        "final", "input", "source", "live"]
    assert speaker_of("SPEAKER_01") == "SPEAKER_01"


def test_tracks_config_is_validated():
    for bad in ({"crossfade_s": -0.1}, {"loudness_lufs": 3.0}, {"peak_dbtp": 1.0}):
        with pytest.raises(ConfigError):
            TracksConfig(**bad)
