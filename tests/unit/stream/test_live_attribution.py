"""Live attribution: a live speaker's frames wait for the separated sources of the same samples, then carry the
source attributed to them (by the sources' latest embeddings), or the gated input where that is unsure."""

import numpy as np

from rtsep.stream.attribution import AttributionConfig
from rtsep.stream.core import AudioOut, DiarizeDue, SeparateDue, SeparatorLayout, SourcesEmbedDue
from rtsep.stream.live_attribution import LiveAttribution
from rtsep.stream.routing import RoutedRun
from tests.unit.stream.test_core import STEP, ScriptedDiarizer, analysis, core, of, push, step

RATE = 16000
rng = np.random.default_rng(1)
A, B, C = (v / np.linalg.norm(v) for v in rng.standard_normal((3, 32)))
CENTROIDS = {0: A, 1: B, 2: C}


def live(**overrides):
    config = AttributionConfig(**{"solo": "source", "window_s": 0.1, "block_s": 0.1, **overrides})
    return LiveAttribution(config, 2, RATE)


def run(speaker, start, n, value=0.5):
    return RoutedRun(speaker, start, np.full(n, value, np.float32))


def test_a_run_waits_for_both_sources_then_carries_the_attributed_one():
    la = live()
    assert la.push_run(run(0, 0, 1000), lambda: CENTROIDS) == []  # no source yet
    assert la.push_source(0, np.full(1000, 0.25, np.float32), lambda: CENTROIDS) == []  # one of two
    assert la.embed_due() is None  # a window needs 1600 samples of every source
    (out,) = la.push_source(1, np.full(1000, 0.1, np.float32), lambda: CENTROIDS)
    # no embedding back yet: unsure, the gated input
    assert out.source is None and np.all(out.samples == 0.5) and out.start_sample == 0
    for k in range(2):
        la.push_source(k, np.full(1000, 0.25 if k == 0 else 0.1, np.float32), lambda: CENTROIDS)
    windows = la.embed_due()
    assert windows.shape == (2, 1600) and la.embed_due() is None  # one request at a time
    la.embedded(np.stack([B, A]))  # source 1 sounds like speaker 0
    (out,) = la.push_run(run(0, 1000, 500, 0.35), lambda: CENTROIDS)  # the sources cover it already
    assert out.source == 1 and out.start_sample == 1000 and out.samples.size == 500
    assert np.allclose(out.samples[-100:], 0.35, atol=1e-5)  # source 1 (0.1) matched to the input's level


def test_a_change_from_the_input_to_a_source_is_crossfaded():
    la = live(crossfade_s=0.01)  # 160 samples
    for k in range(2):
        la.push_source(k, np.full(2000, 0.1, np.float32), lambda: CENTROIDS)
    (before,) = la.push_run(run(0, 0, 1000), lambda: CENTROIDS)  # no embeddings yet: the input, 0.5
    la.embedded(np.stack([A, B]))
    (after,) = la.push_run(run(0, 1000, 1000), lambda: CENTROIDS)
    assert before.source is None and after.source == 0
    # the source matched by at most max_gain (4: 0.1 -> 0.4 under an input of 0.5), reached over the fade
    assert np.allclose(after.samples[160:], 0.4) and 0.49 < after.samples[0] <= 0.5
    assert np.all(np.abs(np.diff(after.samples[:161])) < 0.002)  # no step: a ramp of 0.1 over 160 samples


def test_after_a_pause_a_talker_who_moved_source_is_followed_and_unsure_runs_keep_the_input():
    la = live(pause_s=0.01)
    for k in range(2):
        la.push_source(k, np.zeros(8000, np.float32) + 0.1, lambda: CENTROIDS)
    la.embedded(np.stack([A, B]))
    (first,) = la.push_run(run(0, 0, 1000), lambda: CENTROIDS)
    assert first.source == 0
    la.embedded(np.stack([B, A]))  # after the pause the talker is in source 1
    (later,) = la.push_run(run(0, 4000, 1000), lambda: CENTROIDS)
    assert later.source == 1
    la.embedded(np.stack([C, C]))  # neither source sounds like speaker 0
    (unsure,) = la.push_run(run(0, 6000, 1000), lambda: CENTROIDS)
    assert unsure.source is None and np.allclose(unsure.samples[-500:], 0.5)
    assert la.decisions == {"attributed": 2, "unsure": 1}


def test_runs_the_sources_never_reach_go_out_as_the_input_at_the_end():
    la = live()
    la.push_run(run(1, 0, 300), lambda: CENTROIDS)
    la.push_source(0, np.ones(100, np.float32), lambda: CENTROIDS)
    (out,) = la.flush(lambda: CENTROIDS)
    assert out.speaker == 1 and out.source is None and out.samples.size == 300


class CentroidDiarizer(ScriptedDiarizer):
    def centroids(self):
        return np.stack([A, B])


def test_the_core_sends_a_speaker_s_frames_once_the_sources_cover_them():
    layout = SeparatorLayout(sample_rate_hz=16000, step_samples=STEP, num_outputs=2, lookahead_samples=0)
    c, _ = core(separator=layout, diarizer=CentroidDiarizer(),
                attribution=AttributionConfig(solo="source", window_s=0.2, block_s=0.2))
    events = push(c, step(0, 0.2), 0.0)
    (due,) = of(events, DiarizeDue)
    (sep,) = of(events, SeparateDue)
    out = c.diarization_result(analysis(due), 0.1)
    assert not [a for a in of(out, AudioOut) if a.track == "SPEAKER_00"]  # waits for the separator
    sources = np.stack([np.full(STEP, 0.3, np.float32), np.full(STEP, 0.1, np.float32)])
    out = c.separation_result(sep.step_index, sep.start_sample, sources)
    speaker = [a for a in of(out, AudioOut) if a.track == "SPEAKER_00"]
    assert [(a.start_sample, a.samples.size) for a in speaker] == [(0, STEP)]
    assert np.allclose(speaker[0].samples, 0.2, atol=1e-3)  # no embedding yet: the input
    (embed,) = of(out, SourcesEmbedDue)
    assert embed.windows.shape == (2, 3200)
    assert c.sources_embedded(np.stack([B, A])) == []
    events = push(c, step(1, 0.2), 0.2)
    out = c.diarization_result(analysis(of(events, DiarizeDue)[0]), 0.3)
    sep = of(events, SeparateDue)[0]
    out += c.separation_result(sep.step_index, sep.start_sample, sources)
    (audio,) = [a for a in of(out, AudioOut) if a.track == "SPEAKER_00"]
    assert audio.start_sample == STEP and np.allclose(audio.samples[-100:], 0.2, atol=1e-3)  # source 1, matched
    assert c.live_attribution.decisions == {"no_source": 1, "attributed": 1}  # first without embeddings
