"""The purity filter keeps the parts of a talker's turns that sound like the talker (fake encoder: band energies)."""

import numpy as np
import pytest
import torch

from rtsep.separate.adapt import AdaptConfig, AdaptiveSeparator
from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig
from rtsep.separate.purity import PurityConfig, PurityFilter, merge_spans

RATE = 16000


class BandEncoder(torch.nn.Module):
    """A stand-in speaker encoder: the unit vector of a window's energy in three bands (talker A lives in the
    first band, talker B in the third), so a mixture of A and B points between them."""

    edges_hz = ((100, 400), (400, 1000), (1000, 3000))

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        spec = torch.fft.rfft(samples, dim=1).abs() ** 2
        freqs = torch.fft.rfftfreq(samples.shape[1], 1 / RATE)
        bands = torch.stack([spec[:, (freqs >= lo) & (freqs < hi)].sum(1) for lo, hi in self.edges_hz], 1)
        return bands / bands.norm(dim=1, keepdim=True).clamp_min(1e-8)


def tone(hz: float, seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6))).astype(np.float32)


def test_windows_cover_each_span_and_their_judged_parts_tile_it():
    f = PurityFilter(PurityConfig(window_s=1.0, hop_s=0.25, min_window_s=0.5), encoder=BandEncoder())
    pairs = f.windows([(0.0, 2.1), (3.0, 3.7), (5.0, 5.3)])
    first = [(w, part) for w, part in pairs if w[1] <= 2.1]
    assert [w for w, _ in first] == [(0.0, 1.0), (0.25, 1.25), (0.5, 1.5), (0.75, 1.75), (1.0, 2.0), (1.1, 2.1)]
    parts = [part for _, part in first]
    assert parts[0][0] == 0.0 and parts[-1][1] == 2.1  # the judged parts tile the span
    assert all(p[1] == pytest.approx(q[0]) for p, q in zip(parts, parts[1:]))
    assert parts[2] == pytest.approx((0.875, 1.125))  # hop_s around the window's centre
    assert ((3.0, 3.7), (3.0, 3.7)) in pairs  # shorter than a window: itself
    assert not any(w[0] >= 5.0 for w, _ in pairs)  # shorter than min_window_s: dropped


def test_overlapped_part_of_a_turn_is_left_out():
    a1, overlap, a2 = tone(200, 4, 1), tone(200, 2, 2) + tone(1500, 2, 3), tone(200, 4, 4)
    b = tone(1500, 5, 5)
    audio = np.concatenate([a1, overlap, a2, b])
    # the diarizer gave talker A the whole of 0..10 s, the overlap included
    spans = {"A": [(0.0, 10.0)], "B": [(10.0, 15.0)]}
    kept = PurityFilter(PurityConfig(min_similarity=0.9), encoder=BandEncoder()).filter(audio, RATE, spans)
    assert kept["B"] == [(10.0, 15.0)]
    kept_a = np.zeros(1000, bool)  # 10 ms grid over 0..10 s
    for start, end in kept["A"]:
        kept_a[int(round(start * 100)) : int(round(end * 100))] = True
    assert not kept_a[410:590].any(), "the overlapped 4..6 s must be left out (but for its first/last 0.1 s)"
    assert kept_a[:300].all() and kept_a[700:].all()  # clean speech away from it stays
    assert kept_a.sum() >= 700


def test_filter_resamples_other_rates_and_keeps_clean_turns_whole():
    import soxr

    a, b = tone(200, 3, 1), tone(1500, 3, 2)
    audio8 = soxr.resample(np.concatenate([a, b]), RATE, 8000).astype(np.float32)
    kept = PurityFilter(encoder=BandEncoder()).filter(audio8, 8000, {"A": [(0.0, 3.0)], "B": [(3.0, 6.0)]})
    assert kept == {"A": [(0.0, 3.0)], "B": [(3.0, 6.0)]}


def test_merge_spans():
    assert merge_spans([(2.0, 3.0), (0.0, 1.0), (0.5, 1.5), (1.5, 2.0)]) == [(0.0, 3.0)]
    assert merge_spans([(0.0, 1.0), (2.0, 3.0)]) == [(0.0, 1.0), (2.0, 3.0)]
    assert merge_spans([]) == []


def test_adaptive_separator_adapts_only_on_what_the_filter_keeps():
    torch.manual_seed(0)
    model = ConvTasNet(ConvTasNetConfig(encoder_filters=16, window_samples=16, bottleneck_channels=8,
                                        hidden_channels=16, blocks_per_repeat=2, repeats=1, sample_rate_hz=8000)).eval()
    a1, overlap, a2, b = tone(200, 3, 1), tone(200, 2, 2) + tone(1500, 2, 3), tone(200, 3, 4), tone(1500, 4, 5)
    audio = np.concatenate([a1, overlap, a2, b])
    segments = [{"speaker": "A", "start_s": 0.0, "end_s": 8.0}, {"speaker": "B", "start_s": 8.0, "end_s": 12.0}]
    config = AdaptConfig(compile=False, steps=2, segment_s=0.5, edge_trim_s=0.0)
    plain = AdaptiveSeparator(model, config).run(audio, RATE, segments)
    purity = PurityFilter(PurityConfig(min_similarity=0.9), encoder=BandEncoder())
    filtered = AdaptiveSeparator(model, config, purity).run(audio, RATE, segments)
    assert plain.report.speech_s == {"A": 8.0, "B": 4.0}
    assert 5.5 <= filtered.report.speech_s["A"] <= 6.5 and filtered.report.speech_s["B"] == 4.0
