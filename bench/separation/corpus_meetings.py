"""Two-talker "meetings" built from the real-voice corpus (training/corpus.py, split by actor in
training/splits.json): alternating single-talker turns of two actors of one split, with overlaps inserted between
turns, each a remix of speech the turns never use (so an adaptation on the meeting's turns never trains on it).

Used by bench.separation.process_meetings (quality through `rtsep process` per split) and bench.process_speed
(a 10-minute meeting for the real-time factor). Deterministic for a seed. At the corpus rate (8 kHz).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.separation.eval import remix

CORPUS_RATE_HZ = 8000
DEFAULT_CORPUS = Path("/work/runs/real/corpus")
# two-talker pairs of each split's actors (corpus speaker names); the validation pairs choose, the test pairs
# report. Every actor of a split appears at least once.
PAIRS = {
    "valid": [("fillets-nl-m", "fillets-nl-v"), ("fillets-cs-rand", "klettres-hu"),
              ("fillets-cs-c", "klettres-de"), ("fillets-nl-v", "fillets-cs-rand")],
    "test": [("fillets-cs-r", "klettres-fr"), ("fillets-cs-l", "klettres-he"), ("klettres-it", "klettres-lt"),
             ("fillets-cs-r", "fillets-cs-l")],
}


@dataclass
class Meeting:
    name: str
    audio: np.ndarray  # mono float32 at CORPUS_RATE_HZ
    tests: list[dict]  # the overlaps: {"start", "end" (samples), "snr_db", "sources" (2, n)}
    speakers: tuple[str, str]

    @property
    def duration_s(self) -> float:
        return len(self.audio) / CORPUS_RATE_HZ


def utterances(corpus: Path, speaker: str, split: str | None = None) -> list[np.ndarray]:
    """A corpus speaker's utterances (float32, 8 kHz), checking it belongs to ``split`` when given."""
    index = json.loads((corpus / "index.json").read_text())
    if speaker not in index:
        raise KeyError(f"{speaker} is not in {corpus}/index.json")
    if split is not None and index[speaker]["split"] != split:
        raise ValueError(f"{speaker} is in the {index[speaker]['split']} split, not {split}")
    audio = np.load(corpus / f"{speaker}.npy").astype(np.float32) / 32768.0
    edges = [*index[speaker]["offsets"], len(audio)]
    return [audio[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def _take(pool: list[np.ndarray], min_s: float) -> np.ndarray:
    """Utterances from the front of ``pool`` (removed) joined until at least ``min_s`` long (or the pool ends)."""
    parts: list[np.ndarray] = []
    while pool and sum(len(p) for p in parts) < min_s * CORPUS_RATE_HZ:
        parts.append(pool.pop(0))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def build_meeting(name: str, a: list[np.ndarray], b: list[np.ndarray], turns_s: float, overlaps: int,
                  snrs_db: tuple[float, ...] = (-5.0, 0.0, 5.0), overlap_s: float = 3.0, turn_s: float = 2.5,
                  gap_s: float = 0.3, seed: int = 0, speakers: tuple[str, str] = ("A", "B")) -> Meeting:
    """A meeting of about ``turns_s`` of single-talker turns (about ``turn_s`` each, alternating, in a random
    order of each talker's utterances) and ``overlaps`` overlaps of ``overlap_s`` (level ratios cycling through
    ``snrs_db``), spread evenly between the turns with ``gap_s`` around them. The overlaps' speech is taken first,
    so the turns never contain it; each talker's material is reused (in a new order) when the turns need more."""
    rng = np.random.default_rng(seed)
    pools = []
    for utts in (a, b):
        order = [utts[i] for i in rng.permutation(len(utts))]
        pools.append(order)
    held = [[_take(pool, overlap_s) for _ in range(overlaps)] for pool in pools]
    remaining = [list(pool) for pool in pools]
    if not all(remaining):
        raise ValueError(f"{name}: too little speech for {overlaps} overlaps of {overlap_s} s and turns")
    turns: list[np.ndarray] = []
    total = 0
    k = 0
    while total < turns_s * CORPUS_RATE_HZ:
        who = k % 2
        if not remaining[who]:
            remaining[who] = [pools[who][i] for i in rng.permutation(len(pools[who]))]
        turn = _take(remaining[who], turn_s)
        turns.append(turn)
        total += len(turn)
        k += 1
    slots = {round(len(turns) * (i + 1) / (overlaps + 1)) for i in range(overlaps)}
    slots_sorted = sorted(slots)
    gap = np.zeros(int(gap_s * CORPUS_RATE_HZ), np.float32)
    pieces: list[np.ndarray] = []
    tests: list[dict] = []
    position = 0
    test_index = 0
    for index, turn in enumerate([*turns, None]):  # None: after the last turn, whatever overlaps are left
        while test_index < overlaps and (turn is None or test_index >= len(slots_sorted)
                                         or slots_sorted[test_index] <= index):
            snr = snrs_db[test_index % len(snrs_db)]
            mix, sources = remix(held[0][test_index], held[1][test_index], snr)
            tests.append({"start": position + gap.size, "end": position + gap.size + len(mix), "snr_db": snr,
                          "sources": sources})
            pieces += [gap, mix, gap]
            position += 2 * gap.size + len(mix)
            test_index += 1
        if turn is not None:
            pieces += [turn, gap]
            position += len(turn) + gap.size
    return Meeting(name, np.concatenate(pieces).astype(np.float32), tests, speakers)


def split_meetings(split: str, corpus: Path = DEFAULT_CORPUS, turns_s: float = 40.0, overlaps: int = 3,
                   seed: int = 0, pairs: list[tuple[str, str]] | None = None) -> list[Meeting]:
    """One meeting per pair of ``pairs`` (default PAIRS[split]), each actor checked to be of ``split``."""
    meetings = []
    for k, (x, y) in enumerate(pairs or PAIRS[split]):
        meetings.append(build_meeting(f"{split}{k}_{x}+{y}", utterances(corpus, x, split),
                                      utterances(corpus, y, split), turns_s, overlaps, seed=seed + k,
                                      speakers=(x, y)))
    return meetings
