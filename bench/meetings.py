"""Synthetic meetings of REAL recorded voices: the many-voices evaluation set of the diarizer and the tracks.

    python -m bench.meetings build --split dev|test --out DIR [--meetings N] [--duration-s S]
    python -m bench.meetings recipe --split dev|test

The talkers are the actors of the real-voice corpus (training/corpus.py, training/splits.json): the **dev** split
from the *validation* actors, the **test** split from the *test* actors, so neither set ever holds a voice the
separator trained on, and a setting chosen on dev is reported on test. The clips are decoded from the Debian
packages at 16 kHz (the corpus keeps them at 8 kHz only), each cut to its speech (the activity rule below) with
50 ms either side.

Each meeting (the recipe is fixed: ``recipe(split)``; the test split's was committed before any figure was
taken) has 2..6 talkers, 60..120 s, turn taking with natural pauses (0.3..1.2 s, sometimes 1.5..3 s), 5..20 %
overlapped speech (share of the speech time with two or more talkers; a meeting outside the band is redrawn
with the next seed), one late joiner (first turn after 25..45 % of the meeting), talker levels drawn within
±6 dB, and one of five conditions: ``dry`` (no room, no noise), ``room`` (a simulated shoebox room, RT60
0.15..0.8 s, training/rooms.py), ``room-20db`` / ``room-10db`` / ``room-5db`` (the room plus pink noise at that
SNR against the speech). Per meeting, in ``DIR/<id>/``:

* ``mix.wav``: the microphone signal (16 kHz mono, 16-bit, -26 dBFS RMS or 0.9 peak at most);
* ``refs/<speaker>.wav``: each talker as they reach the microphone (reverberant image, the same gain as in the
  mix; float32), so that ``mix = sum(refs) + noise``;
* ``ref.rttm``: each talker's speech from their *dry* source's activity: 10 ms frames within 30 dB of the
  loudest frame of their utterance and 10 dB above the utterance's noise floor (each recorded clip is judged on
  its own: some klettres recordings have a breathy floor only 25..35 dB below their peak), pauses of 0.3 s or
  more are not speech, shorter ones are bridged, islands under 50 ms are dropped;
* ``meta.json``: the talkers (actor, recorded or TTS, gain, when they join, speech seconds, clips used and
  re-used), the condition, the measured overlap share, the seed and the recipe version.

``DIR/index.json`` lists the meetings. Deterministic: the same split and recipe version give the same files.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.meetings")

RATE_HZ = 16000
RECIPE_VERSION = 2  # 1: clips kept their recordings' floor (klettres turns were ~70 % silence)
SPLIT_SEEDS = {"dev": 1000, "test": 2000}
CORPUS_SPLIT = {"dev": "valid", "test": "test"}  # training/splits.json's name of each split's actors
MEETINGS_PER_SPLIT = 15
DURATION_S = (60.0, 120.0)
OVERLAP_BAND = (0.05, 0.20)
OVERLAP_TARGET = (0.09, 0.22)  # what the schedule aims at; the band above is what a meeting must meet
LEVEL_DB = 6.0
LATE_JOIN = (0.25, 0.45)
TURN_S = (1.5, 7.0)
PAUSE_S = (0.3, 1.2)
LONG_PAUSE_S = (1.5, 3.0)
LONG_PAUSE_SHARE = 0.15
INNER_GAP_S = (0.08, 0.25)  # between the utterances of one turn (shorter than the RTTM's 0.3 s pause)
OVERLAP_S = (0.4, 2.0)
MIN_PAUSE_S = 0.3  # RTTM: pauses this long or longer are not speech
ACTIVITY_DB = 30.0  # speech: frames within this of the utterance's loudest ...
FLOOR_MARGIN_DB = 10.0  # ... and this far above its noise floor ...
MIN_RANGE_DB = 20.0  # ... where that leaves at least this range below the loudest
FRAME_S = 0.01
MIN_SPEECH_S = 0.05
TRIM_MARGIN_S = 0.05
RIR_MAX_S = 0.8
MIX_RMS_DBFS = -26.0
MIX_PEAK = 0.9
REDRAWS = 20


@dataclass(frozen=True)
class Condition:
    name: str
    room: bool
    snr_db: float | None  # None: no noise


CONDITIONS = (
    Condition("dry", room=False, snr_db=None),
    Condition("room", room=True, snr_db=None),
    Condition("room-20db", room=True, snr_db=20.0),
    Condition("room-10db", room=True, snr_db=10.0),
    Condition("room-5db", room=True, snr_db=5.0),
)


@dataclass(frozen=True)
class MeetingSpec:
    id: str
    split: str
    seed: int
    talkers: int
    duration_s: float
    condition: Condition


def recipe(split: str, meetings: int = MEETINGS_PER_SPLIT, duration_s: float | None = None) -> list[MeetingSpec]:
    """The split's meetings: the conditions cycle, and each condition gets three different talker counts."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r} (dev or test)")
    base = SPLIT_SEEDS[split]
    rng = np.random.default_rng(base)
    specs = []
    for i in range(meetings):
        length = float(round(rng.uniform(*DURATION_S))) if duration_s is None else float(duration_s)
        condition = CONDITIONS[i % len(CONDITIONS)]
        talkers = 2 + (i + i // len(CONDITIONS)) % 5
        specs.append(MeetingSpec(f"{split}-{i:02d}", split, base + i, talkers, length, condition))
    return specs


# --------------------------------------------------------------------------- voices
class Voices:
    """A bank of talkers: names, and each talker's utterances (mono float32 at RATE_HZ), decoded on demand."""

    def speakers(self) -> list[str]:
        raise NotImplementedError

    def kind(self, speaker: str) -> str:
        """"recorded" or "tts"."""
        raise NotImplementedError

    def count(self, speaker: str) -> int:
        raise NotImplementedError

    def utterance(self, speaker: str, k: int) -> tuple[str, np.ndarray]:
        """(clip name, audio) of the speaker's k-th utterance; audio may be empty (an unusable clip)."""
        raise NotImplementedError


class CorpusVoices(Voices):
    """The real-voice corpus' actors of one split, decoded from the Debian packages at RATE_HZ."""

    def __init__(self, corpus_split: str) -> None:
        from training.corpus import load_splits, plan_speakers

        plan = plan_speakers(load_splits())
        self._clips = {name: info["clips"] for name, info in sorted(plan.items()) if info["split"] == corpus_split}
        if not self._clips:
            raise RuntimeError(f"no actors in split {corpus_split!r} of training/splits.json")
        self._cache: dict[tuple[str, int], np.ndarray] = {}

    def speakers(self) -> list[str]:
        return list(self._clips)

    def kind(self, speaker: str) -> str:
        return "recorded"

    def count(self, speaker: str) -> int:
        return len(self._clips[speaker])

    def utterance(self, speaker: str, k: int) -> tuple[str, np.ndarray]:
        from training.voices import decode, trim_silence

        path = self._clips[speaker][k]
        key = (speaker, k)
        if key not in self._cache:
            self._cache[key] = trim_silence(decode(path, RATE_HZ), RATE_HZ)
        return f"{path.parent.name}/{path.name}", self._cache[key]


# --------------------------------------------------------------------------- the meeting
@dataclass
class Talker:
    speaker: str
    kind: str
    gain_db: float
    joins_s: float | None = None  # the late joiner's join time
    speech_s: float = 0.0
    clips: list[str] = field(default_factory=list)
    reused_clips: int = 0


@dataclass
class Meeting:
    spec: MeetingSpec
    seed: int  # the seed actually used (the spec's, or a redraw's)
    talkers: list[Talker]
    dry: np.ndarray  # (talkers, samples) at unit level before the room
    refs: np.ndarray  # (talkers, samples): as they reach the microphone, at the mix's gain
    mix: np.ndarray
    segments: list[tuple[float, float, str]]  # (start_s, end_s, speaker), the reference turns
    overlap_share: float
    target_overlap_share: float
    rt60_s: float | None

    def meta(self) -> dict:
        return {
            "id": self.spec.id, "split": self.spec.split, "recipe_version": RECIPE_VERSION, "seed": self.seed,
            "spec_seed": self.spec.seed, "rate_hz": RATE_HZ, "duration_s": round(self.mix.size / RATE_HZ, 3),
            "condition": {**asdict(self.spec.condition), "rt60_s": self.rt60_s,
                          "noise": "pink" if self.spec.condition.snr_db is not None else None},
            "talkers": [asdict(t) for t in self.talkers],
            "tts_talkers": [t.speaker for t in self.talkers if t.kind == "tts"],
            "overlap_share": round(self.overlap_share, 4), "target_overlap_share": round(self.target_overlap_share, 4),
            "speech_s": round(speech_seconds(self.segments), 3),
            "reference": f"RTTM from each dry source's activity: {FRAME_S * 1000:.0f} ms frames within "
                         f"{ACTIVITY_DB:.0f} dB of the loudest frame of their utterance and {FLOOR_MARGIN_DB:.0f} dB "
                         f"above its noise floor, pauses >= {MIN_PAUSE_S} s are not speech",
        }


def frame_activity(utterance: np.ndarray, rate_hz: int = RATE_HZ) -> np.ndarray:
    """Per-sample activity (bool) of one clean utterance: its 10 ms frames within ACTIVITY_DB of its loudest and
    FLOOR_MARGIN_DB above its noise floor (the 10th percentile of the 50 ms-smoothed frame energy), the floor
    rule never cutting into the top MIN_RANGE_DB."""
    frame = int(FRAME_S * rate_hz)
    n = len(utterance) // frame
    active = np.zeros(len(utterance), bool)
    if n == 0:
        return active
    energy_db = 10 * np.log10((utterance[: n * frame].reshape(n, frame).astype(np.float64) ** 2).mean(1) + 1e-20)
    if energy_db.max() < -150:
        return active
    peak = energy_db.max()
    # the recording's own noise floor: the 10th percentile of the 50 ms-smoothed frame energy
    smooth = np.convolve(energy_db, np.ones(5) / 5, mode="same") if n >= 5 else energy_db
    floor = float(np.percentile(smooth, 10))
    threshold = max(peak - ACTIVITY_DB, min(floor + FLOOR_MARGIN_DB, peak - MIN_RANGE_DB))
    active[: n * frame] = np.repeat(energy_db > threshold, frame)
    return active


def trim_to_speech(utterance: np.ndarray, rate_hz: int = RATE_HZ) -> tuple[np.ndarray, np.ndarray]:
    """The utterance cut to its speech (``frame_activity``, judged on the whole clip) plus TRIM_MARGIN_S either
    side, and that activity: a klettres clip is one letter in about a second of its recording's floor, and
    letters strung into a turn should follow each other as a speller's do."""
    active = frame_activity(utterance, rate_hz)
    on = np.flatnonzero(active)
    if on.size == 0:
        return utterance, active
    margin = int(TRIM_MARGIN_S * rate_hz)
    a, b = max(0, int(on[0]) - margin), min(utterance.size, int(on[-1]) + 1 + margin)
    return utterance[a:b], active[a:b]


def bridge(active: np.ndarray, rate_hz: int = RATE_HZ) -> np.ndarray:
    """Pauses shorter than MIN_PAUSE_S filled, then islands shorter than MIN_SPEECH_S dropped."""
    out = np.zeros_like(active)
    merged: list[list[int]] = []
    for start, end in _runs(active):
        if merged and start - merged[-1][1] < MIN_PAUSE_S * rate_hz:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    for start, end in merged:
        if end - start >= MIN_SPEECH_S * rate_hz:
            out[start:end] = True
    return out


def activity(source: np.ndarray, rate_hz: int = RATE_HZ) -> np.ndarray:
    """The reference activity of one clean single-utterance source (``frame_activity`` then ``bridge``)."""
    return bridge(frame_activity(source, rate_hz), rate_hz)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a bool array."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def segments_of(active: np.ndarray, speakers: Sequence[str], rate_hz: int = RATE_HZ) -> list[tuple[float, float, str]]:
    out = []
    for row, speaker in zip(active, speakers, strict=True):
        out += [(a / rate_hz, b / rate_hz, speaker) for a, b in _runs(row)]
    return sorted(out)


def speech_seconds(segments: Sequence[tuple[float, float, str]]) -> float:
    return _union_s([(a, b) for a, b, _ in segments])


def _union_s(intervals: Sequence[tuple[float, float]]) -> float:
    total, end = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def overlap_share_of(active: np.ndarray) -> float:
    """Share of the speech time (any talker) during which two or more talkers speak."""
    count = active.sum(0)
    speech = int((count >= 1).sum())
    return float((count >= 2).sum()) / speech if speech else 0.0


def pink_noise(rng: np.random.Generator, samples: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples, 1 / RATE_HZ)
    shape = np.zeros_like(freqs)
    shape[1:] = 1 / np.sqrt(np.maximum(freqs[1:], 20.0))
    noise = np.fft.irfft(spectrum * shape, samples)
    return (noise / (noise.std() + 1e-12)).astype(np.float32)


class _Cursor:
    """One talker's clips in a seeded order; wraps round (and counts the re-use) when they run out."""

    def __init__(self, voices: Voices, speaker: str, rng: np.random.Generator) -> None:
        self.voices, self.speaker = voices, speaker
        self.order = rng.permutation(voices.count(speaker)).tolist()
        self.pos = 0
        self.used: set[int] = set()
        self.reused = 0

    def next(self) -> tuple[str, np.ndarray]:
        for _ in range(len(self.order)):
            k = self.order[self.pos % len(self.order)]
            self.pos += 1
            name, audio = self.voices.utterance(self.speaker, k)
            if len(audio) >= int(0.3 * RATE_HZ):
                if k in self.used:
                    self.reused += 1
                self.used.add(k)
                return name, audio
        raise RuntimeError(f"{self.speaker}: no usable clip")


def _schedule(spec: MeetingSpec, voices: Voices, rng: np.random.Generator,
              names: list[str]) -> tuple[list[tuple[int, int, np.ndarray, np.ndarray]], list[Talker], float]:
    """Turns (talker index, start sample, unit-level audio, its frame activity), the talkers, and the target
    overlap share."""
    total = int(spec.duration_s * RATE_HZ)
    n = len(names)
    gains = rng.uniform(-LEVEL_DB, LEVEL_DB, n)
    talkers = [Talker(name, voices.kind(name), round(float(g), 2)) for name, g in zip(names, gains, strict=True)]
    late = n - 1  # the choice of names is random, so is the late joiner
    join_s = float(rng.uniform(*LATE_JOIN) * spec.duration_s)
    talkers[late].joins_s = round(join_s, 3)
    target = float(rng.uniform(*OVERLAP_TARGET))
    cursors = [_Cursor(voices, name, rng) for name in names]
    turns: list[tuple[int, int, np.ndarray, np.ndarray]] = []
    spoken = np.zeros(n)
    intervals: list[tuple[float, float]] = []
    overlap_s = 0.0
    pos = int(rng.uniform(0.3, 1.0) * RATE_HZ)
    prev = -1
    prev_start = prev_end = 0
    while True:
        joined = pos / RATE_HZ >= join_s
        if joined and spoken[late] == 0 and prev != late:
            who = late
        else:
            choices = [t for t in range(n) if t != prev and (t != late or joined)]
            if not choices:
                choices = [t for t in range(n) if t != late or joined]
            weights = 1.0 / (1.0 + spoken[choices])
            who = int(rng.choice(choices, p=weights / weights.sum()))
        want = rng.uniform(*TURN_S)
        pieces, masks, length = [], [], 0
        while length < want * RATE_HZ:
            name, audio = cursors[who].next()
            if pieces:
                gap = np.zeros(int(rng.uniform(*INNER_GAP_S) * RATE_HZ), np.float32)
                pieces.append(gap)
                masks.append(np.zeros(len(gap), bool))
                length += len(gap)
            audio, active = trim_to_speech(audio)
            audio = audio / (np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-9) * 0.1
            pieces.append(audio.astype(np.float32))
            masks.append(active)
            talkers[who].clips.append(name)
            length += len(audio)
        audio, mask = np.concatenate(pieces), np.concatenate(masks)
        speech_so_far = _union_s(intervals)
        if turns and who != prev and speech_so_far > 0 and overlap_s / speech_so_far < target:
            ov = rng.uniform(*OVERLAP_S)
            ov = min(ov, 0.6 * (prev_end - prev_start) / RATE_HZ, 0.6 * len(audio) / RATE_HZ)
            start = prev_end - int(ov * RATE_HZ)
        else:
            pause = rng.uniform(*LONG_PAUSE_S) if rng.random() < LONG_PAUSE_SHARE else rng.uniform(*PAUSE_S)
            start = (prev_end if turns else pos) + int(pause * RATE_HZ) * bool(turns)
        if start + len(audio) > total - int(0.3 * RATE_HZ):
            break
        if turns:
            overlap_s += max(0, prev_end - start) / RATE_HZ
        turns.append((who, start, audio, mask))
        intervals.append((start / RATE_HZ, (start + len(audio)) / RATE_HZ))
        spoken[who] += len(audio) / RATE_HZ
        prev, prev_start, prev_end = who, start, start + len(audio)
        pos = prev_end
    for t, cursor in zip(talkers, cursors, strict=True):
        t.reused_clips = cursor.reused
    return turns, talkers, target


def synthesize(spec: MeetingSpec, voices: Voices) -> Meeting:
    """One meeting of ``spec``; redrawn with seed + 100000·k (k = 1, 2, ...) until its overlap share is in the
    band and every talker speaks."""
    speakers = sorted(voices.speakers())
    if spec.talkers > len(speakers):
        raise RuntimeError(f"{spec.id}: {spec.talkers} talkers asked, the voices hold {len(speakers)}")
    for attempt in range(REDRAWS):
        seed = spec.seed + 100_000 * attempt
        meeting = _draw(spec, voices, speakers, seed)
        if meeting is not None:
            return meeting
        log.info("%s: seed %d outside the overlap band or a talker silent; redrawing", spec.id, seed)
    raise RuntimeError(f"{spec.id}: no draw in {REDRAWS} met the overlap band {OVERLAP_BAND}")


def _draw(spec: MeetingSpec, voices: Voices, speakers: list[str], seed: int) -> Meeting | None:
    rng = np.random.default_rng(seed)
    names = [speakers[i] for i in rng.choice(len(speakers), spec.talkers, replace=False)]
    turns, talkers, target = _schedule(spec, voices, rng, names)
    total = int(spec.duration_s * RATE_HZ)
    dry = np.zeros((len(names), total), np.float32)
    frames = np.zeros((len(names), total), bool)
    for who, start, audio, mask in turns:
        dry[who, start : start + len(audio)] += audio
        frames[who, start : start + len(audio)] |= mask
    active = np.stack([bridge(row) for row in frames])
    share = overlap_share_of(active)
    if not OVERLAP_BAND[0] <= share <= OVERLAP_BAND[1] or not active.any(1).all():
        return None
    for t, row in zip(talkers, active, strict=True):
        t.speech_s = round(float(row.sum()) / RATE_HZ, 3)
    gains = 10 ** (np.array([t.gain_db for t in talkers]) / 20)
    images = dry * gains[:, None].astype(np.float32)
    rt60 = None
    if spec.condition.room:
        from scipy.signal import fftconvolve

        from training.rooms import shoebox_talkers

        responses, rt60 = shoebox_talkers(rng, RATE_HZ, int(RIR_MAX_S * RATE_HZ), from_onset=True,
                                          talkers=len(names))
        images = np.stack([fftconvolve(row, h)[:total] for row, h in zip(images, responses, strict=True)])
        images = images.astype(np.float32)
        rt60 = round(float(rt60), 3)
    speech = images.sum(0)
    mix = speech.copy()
    if spec.condition.snr_db is not None:
        noise = pink_noise(rng, total)
        speaking = active.any(0)
        power = float(np.mean(speech[speaking].astype(np.float64) ** 2))
        noise *= np.sqrt(power / 10 ** (spec.condition.snr_db / 10))
        mix = mix + noise
    scale = min(10 ** (MIX_RMS_DBFS / 20) / (np.sqrt(np.mean(mix.astype(np.float64) ** 2)) + 1e-12),
                MIX_PEAK / (np.abs(mix).max() + 1e-12))
    segments = segments_of(active, names)
    return Meeting(spec, seed, talkers, dry, (images * scale).astype(np.float32), (mix * scale).astype(np.float32),
                   segments, share, target, rt60)


def rttm_text(uri: str, segments: Sequence[tuple[float, float, str]]) -> str:
    """RTTM in DIHARD's 10-field convention (channel 1, <NA> fields)."""
    return "".join(f"SPEAKER {uri} 1 {a:.3f} {b - a:.3f} <NA> <NA> {spk} <NA> <NA>\n" for a, b, spk in segments)


def write(meeting: Meeting, folder: Path) -> None:
    import soundfile as sf

    (folder / "refs").mkdir(parents=True, exist_ok=True)
    sf.write(str(folder / "mix.wav"), meeting.mix, RATE_HZ, subtype="PCM_16")
    for t, ref in zip(meeting.talkers, meeting.refs, strict=True):
        sf.write(str(folder / "refs" / f"{t.speaker}.wav"), ref, RATE_HZ, subtype="FLOAT")
    (folder / "ref.rttm").write_text(rttm_text(meeting.spec.id, meeting.segments))
    (folder / "meta.json").write_text(json.dumps(meeting.meta(), indent=1))


def build(split: str, out: Path, voices: Voices | None = None, meetings: int = MEETINGS_PER_SPLIT,
          duration_s: float | None = None) -> list[dict]:
    voices = voices if voices is not None else CorpusVoices(CORPUS_SPLIT[split])
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for spec in recipe(split, meetings, duration_s):
        t0 = time.perf_counter()
        meeting = synthesize(spec, voices)
        write(meeting, out / spec.id)
        meta = meeting.meta()
        index.append({"id": spec.id, "condition": spec.condition.name, "talkers": spec.talkers,
                      "duration_s": meta["duration_s"], "overlap_share": meta["overlap_share"],
                      "seed": meeting.seed})
        log.info("%s %-9s %d talkers %5.1f s overlap %4.1f %% (%.1f s)", spec.id, spec.condition.name,
                 spec.talkers, meta["duration_s"], 100 * meta["overlap_share"], time.perf_counter() - t0)
    (out / "index.json").write_text(json.dumps({"split": split, "recipe_version": RECIPE_VERSION,
                                                "actors": CORPUS_SPLIT[split], "meetings": index}, indent=1))
    return index


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.meetings", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="write a split's meetings")
    p.add_argument("--split", required=True, choices=sorted(SPLIT_SEEDS))
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--meetings", type=int, default=MEETINGS_PER_SPLIT, help="the first N of the recipe")
    p.add_argument("--duration-s", type=float, help="every meeting this long (smoke tests; not the recipe)")
    p = sub.add_parser("recipe", help="print a split's meetings without building them")
    p.add_argument("--split", required=True, choices=sorted(SPLIT_SEEDS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "recipe":
        for spec in recipe(args.split):
            print(json.dumps({**asdict(spec), "condition": spec.condition.name}))
        return 0
    t0 = time.perf_counter()
    index = build(args.split, args.out, meetings=args.meetings, duration_s=args.duration_s)
    print(f"{len(index)} meetings in {args.out} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
