"""bench.meetings' invariants, on generated voices (tone syllables with a noise floor): the reference RTTM is
the sources' activity, the overlap share is in its band, the late joiner joins late, levels and SNR are what
the condition says, and the same spec builds the same meeting."""

from __future__ import annotations

import numpy as np
import pytest

from bench.meetings import (
    CONDITIONS,
    DURATION_S,
    LATE_JOIN,
    LEVEL_DB,
    MIN_PAUSE_S,
    MIN_RANGE_DB,
    OVERLAP_BAND,
    RATE_HZ,
    TRIM_MARGIN_S,
    MeetingSpec,
    Voices,
    frame_activity,
    recipe,
    rttm_text,
    synthesize,
    trim_to_speech,
)
from rtsep.evaluate import parse_rttm

CONDITION = {c.name: c for c in CONDITIONS}


class ToneVoices(Voices):
    """Six talkers, each a different pitch; an utterance is 2..5 harmonic syllables of 0.15..0.3 s with 0.05..0.1 s
    gaps, over a floor 60 dB down. Seeded by (speaker, utterance): the same utterance every time."""

    def __init__(self, talkers: int = 6, utterances: int = 12) -> None:
        self.names = [f"tone-{i}" for i in range(talkers)]
        self.utterances = utterances

    def speakers(self):
        return list(self.names)

    def kind(self, speaker):
        return "tts" if speaker == "tone-5" else "recorded"

    def count(self, speaker):
        return self.utterances

    def utterance(self, speaker, k):
        i = self.names.index(speaker)
        rng = np.random.default_rng(1000 * i + k)
        f0 = 110.0 + 40.0 * i
        pieces = []
        for j in range(int(rng.integers(2, 6))):
            n = int(rng.uniform(0.15, 0.3) * RATE_HZ)
            t = np.arange(n) / RATE_HZ
            syllable = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in (1, 2, 3)) * np.hanning(n) ** 0.3
            if j:
                pieces.append(np.zeros(int(rng.uniform(0.05, 0.1) * RATE_HZ)))
            pieces.append(syllable)
        return f"u{k}", np.concatenate(pieces).astype(np.float32)


def spec(condition="dry", talkers=4, seed=7, duration_s=40.0) -> MeetingSpec:
    return MeetingSpec(f"m-{seed}", "dev", seed, talkers, duration_s, CONDITION[condition])


@pytest.fixture(scope="module")
def voices():
    return ToneVoices()


@pytest.fixture(scope="module")
def dry_meeting(voices):
    return synthesize(spec(), voices)


def test_the_rttm_is_the_dry_sources_activity(dry_meeting):
    m = dry_meeting
    for row, talker in enumerate(m.talkers):
        segments = [(a, b) for a, b, spk in m.segments if spk == talker.speaker]
        covered = np.zeros(m.dry.shape[1], bool)
        for a, b in segments:
            covered[int(round(a * RATE_HZ)) : int(round(b * RATE_HZ))] = True
        # outside its segments the source holds at most syllable edges, quieter than the activity rule's top
        # range (MIN_RANGE_DB; 5 dB of slack: the rule judges each utterance's own 10 ms frames, the check the
        # meeting's): no speech unlabelled
        outside = np.where(covered, 0.0, m.dry[row].astype(np.float64))
        frame = int(0.01 * RATE_HZ)
        n = outside.size // frame
        energy = (outside[: n * frame].reshape(n, frame) ** 2).mean(1)
        peak = (m.dry[row][: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(1).max()
        assert 10 * np.log10(energy.max() / peak + 1e-30) < -(MIN_RANGE_DB - 5), talker.speaker
        # every segment holds speech, and pauses between a talker's segments are >= 0.3 s
        for a, b in segments:
            assert np.abs(m.dry[row][int(a * RATE_HZ) : int(b * RATE_HZ)]).max() > 0.01
        gaps = [a2 - b1 for (_, b1), (a2, _) in zip(segments, segments[1:], strict=False)]
        assert all(gap >= MIN_PAUSE_S - 1e-9 for gap in gaps)
        assert talker.speech_s == pytest.approx(sum(b - a for a, b in segments), abs=1e-3)


@pytest.mark.parametrize("floor_db", [-60.0, -40.0, -24.0])
def test_a_recordings_noise_floor_is_not_speech(voices, floor_db):
    """Half a second of the recording's floor either side of an utterance (klettres-hu's lies ~24 dB under its
    peak): the floor is not speech, the syllables are."""
    _, audio = voices.utterance("tone-0", 0)
    pad = int(0.5 * RATE_HZ)
    speech = np.concatenate([np.zeros(pad), audio, np.zeros(pad)]).astype(np.float32)
    rms = np.sqrt(np.mean(audio**2))
    floor = np.random.default_rng(0).standard_normal(speech.size).astype(np.float32) * rms * 10 ** (floor_db / 20)
    active = frame_activity(speech + floor)
    assert active[np.abs(speech) > 0.5 * np.abs(audio).max()].all()
    frame = int(0.01 * RATE_HZ)
    assert not active[: pad - frame].any() and not active[pad + audio.size + frame :].any()
    trimmed, kept = trim_to_speech(speech + floor)  # the floor cut away, 50 ms kept either side
    assert trimmed.size == kept.size
    assert abs(trimmed.size - audio.size - 2 * int(TRIM_MARGIN_S * RATE_HZ)) <= 2 * frame


def test_short_pauses_inside_a_turn_are_speech(voices):
    m = synthesize(spec(seed=3), voices)
    # the 0.05..0.1 s gaps between syllables and 0.08..0.25 s between utterances never split a segment
    assert all(b - a >= 0.15 for a, b, _ in m.segments)


@pytest.mark.parametrize("seed", [1, 2, 5, 11])
def test_overlap_share_is_in_its_band_and_the_late_joiner_joins_late(voices, seed):
    m = synthesize(spec(seed=seed, talkers=2 + seed % 5, duration_s=60.0), voices)
    assert OVERLAP_BAND[0] <= m.overlap_share <= OVERLAP_BAND[1]
    late = [t for t in m.talkers if t.joins_s is not None]
    assert len(late) == 1
    first = min(a for a, _, spk in m.segments if spk == late[0].speaker)
    assert first >= LATE_JOIN[0] * 60.0 - 1e-6
    assert {spk for _, _, spk in m.segments} == {t.speaker for t in m.talkers}  # everybody speaks
    assert all(abs(t.gain_db) <= LEVEL_DB for t in m.talkers)


def test_the_mix_is_the_sum_of_the_references_and_the_snr_is_the_conditions(voices):
    dry = synthesize(spec("dry"), voices)
    assert np.allclose(dry.mix, dry.refs.sum(0), atol=1e-6)
    noisy = synthesize(spec("room-10db", talkers=3), voices)
    assert noisy.rt60_s is not None
    noise = noisy.mix - noisy.refs.sum(0)
    speaking = np.zeros(noisy.mix.size, bool)
    for a, b, _ in noisy.segments:
        speaking[int(a * RATE_HZ) : int(b * RATE_HZ)] = True
    speech = noisy.refs.sum(0)[speaking]
    snr_db = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert snr_db == pytest.approx(10.0, abs=0.1)
    assert np.abs(noisy.mix).max() <= 0.9 + 1e-6


def test_the_same_spec_builds_the_same_meeting_and_another_seed_another(voices, dry_meeting):
    again = synthesize(spec(), ToneVoices())
    assert np.array_equal(again.mix, dry_meeting.mix)
    assert again.segments == dry_meeting.segments
    other = synthesize(spec(seed=8), voices)
    assert other.segments != dry_meeting.segments


def test_the_rttm_passes_the_dscore_checks_and_the_meta_says_who_is_tts(voices):
    m = synthesize(spec(talkers=6), voices)
    parsed = parse_rttm(rttm_text("m", m.segments))["m"]
    assert sorted(parsed.labels()) == sorted(t.speaker for t in m.talkers)
    assert m.meta()["tts_talkers"] == ["tone-5"]


def test_the_recipe_spreads_conditions_and_talker_counts():
    for split in ("dev", "test"):
        specs = recipe(split)
        assert 12 <= len(specs) <= 16
        assert len({s.seed for s in specs}) == len(specs)
        for condition in CONDITIONS:
            counts = [s.talkers for s in specs if s.condition == condition]
            assert len(counts) >= 2 and len(set(counts)) == len(counts)
        assert {s.talkers for s in specs} == {2, 3, 4, 5, 6}
        assert all(DURATION_S[0] <= s.duration_s <= DURATION_S[1] for s in specs)
    assert not {s.seed for s in recipe("dev")} & {s.seed for s in recipe("test")}


def test_too_few_voices_is_a_clear_error():
    with pytest.raises(RuntimeError, match="6 talkers asked, the voices hold 3"):
        synthesize(spec(talkers=6), ToneVoices(talkers=3))
