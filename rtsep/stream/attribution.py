"""Attribution of separated sources to speakers (sans-I/O): which source carries which active speaker, block by
block, or the gated input where that is unsure.

The separator's sources are not identities: a causal separator keeps a talker in one source while they speak, but
after a pause the talker may come back in the other one, and with three or more talkers each source carries
whoever is loudest of several. So the sources are attributed per *block* (a stretch of the timeline where the set
of active speakers does not change, at most ``block_s`` long), by comparing the speaker embedding of each source's
audio around the block with the centroids of the speakers the timeline says are active:

- each (speaker, source) pair has a *contrast*: the cosine similarity of the source's embedding with the
  speaker's centroid minus its best similarity with any other speaker of the session (the encoder finds every
  voice somewhat alike; what identifies a talker is being closer to them than to anyone else);
- every injective assignment of active speakers to the sources that carry audio in the block is scored by the
  sum of its contrasts, plus ``continuity`` for each speaker kept in the source it had in its previous block when
  no pause longer than ``pause_s`` came between (the prior lapses after a pause: the talker may move);
- a speaker gets the best assignment's source only when it is *confident*: the similarity is at least
  ``min_similarity``, the contrast at least ``min_contrast``, and the best assignment beats every assignment that
  gives the speaker another source by at least ``min_margin``; otherwise the speaker's block falls back to the
  gated input (``unsure``);
- with one active speaker the input is already that speaker alone wherever the timeline is right; by
  ``solo`` the block keeps the gated input (``input``), takes the confident source (``source``), or takes it only
  when the other sources carry at least ``solo_other_share`` of the block's separated energy, i.e. where the
  separator hears a second talker the timeline missed (``overlap``).

:class:`Attributor` holds the continuity prior and decides one block at a time, in time order: the same object
serves a whole file (:func:`attribute`) and a live session. Embeddings come in as data (the runtime computes
them with the diarizer's speaker encoder); nothing here touches a model.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rtsep.errors import ConfigError

SOLO_POLICIES = ("input", "overlap", "source")
MIN_GAIN = 0.05  # a source matched to the input by a smaller gain is not in it


@dataclass(frozen=True)
class AttributionConfig:
    """Section ``[attribution]``: separated sources in the speaker tracks (rtsep.stream.attribution)."""

    # with a separator: the final speaker tracks carry the attributed sources. Off by default, decided on the dev
    # meetings: with the shipped separator every setting tried made the tracks worse over the meeting than the gated
    # input (best row -0.80 dB; +0.22 dB inside overlaps), bench/RESULTS.md "Attribution"; on when a separator earns it
    enabled: bool = False
    # when enabled, with the embedded diarizer: the live speaker tracks too (their frames wait for the separator)
    live: bool = True
    block_s: float = 1.0  # the longest stretch decided at once
    window_s: float = 1.5  # the audio embedded per block and source (centred on the block; live: ending with it)
    min_similarity: float = 0.5  # below it a source is nobody's (cosine, speaker embedding vs centroid)
    # the best assignment must beat the next one giving the speaker another source by this (0: any margin; chosen on
    # the dev meetings, bench/RESULTS.md "Attribution", as were min_similarity, solo and solo_other_share)
    min_margin: float = 0.0
    # the source must sound more like the speaker than like any other speaker of the session by this (cosine)
    min_contrast: float = 0.0
    continuity: float = 0.05  # bonus for keeping a speaker in its previous source (no pause in between)
    pause_s: float = 0.5  # a silence this long lets a speaker move to another source
    min_source_share: float = 0.05  # a source with less of the block's separated energy carries nobody
    solo: str = "overlap"  # one active speaker: "input" (gated input), "source", or "overlap" (see module doc)
    solo_other_share: float = 0.1  # with solo = "overlap": the other sources' energy share that makes it one
    crossfade_s: float = 0.02  # raised-cosine fade between the input and a source at each block edge
    max_gain: float = 4.0  # a source's level is matched to the input's per block, at most this gain

    def __post_init__(self) -> None:
        if self.solo not in SOLO_POLICIES:
            raise ConfigError(f"[attribution] solo must be one of {SOLO_POLICIES}, got {self.solo!r}")
        for name in ("block_s", "window_s", "max_gain"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"[attribution] {name} must be > 0, got {getattr(self, name)!r}")
        if not -1 <= self.min_contrast <= 1:
            raise ConfigError(f"[attribution] min_contrast must be within -1..1, got {self.min_contrast!r}")
        for name in ("min_margin", "continuity", "pause_s", "crossfade_s"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"[attribution] {name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("min_similarity", "min_source_share", "solo_other_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"[attribution] {name} must be within 0..1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class SourceView:
    """What is known of one separated source over a block: its speaker embedding (unit vector; None when it could
    not be embedded) and its energy there (any unit, the same for every source)."""

    embedding: np.ndarray | None
    energy: float


@dataclass(frozen=True)
class Assignment:
    """A speaker's decision for one block: ``source`` (None: the gated input) and why."""

    speaker: Hashable
    source: int | None
    similarity: float  # cosine of the chosen (or best) source with the speaker's centroid; nan when none
    margin: float  # of the best assignment's score (sum of contrasts) over the next best giving the speaker another
    # source; nan when none
    reason: str  # attributed | solo | unsure | no_centroid | no_source

    @property
    def confident(self) -> bool:
        return self.reason == "attributed"


@dataclass
class _Prior:
    source: int
    end_sample: int


class Attributor:
    """Decides blocks in time order; holds each speaker's last source and when they last spoke (the prior)."""

    def __init__(self, config: AttributionConfig, num_sources: int, rate_hz: int) -> None:
        if num_sources < 1:
            raise ValueError(f"attribution needs at least one source, got {num_sources}")
        self.config = config
        self.num_sources = num_sources
        self.pause_samples = round(config.pause_s * rate_hz)
        self._prior: dict[Hashable, _Prior] = {}
        self._last_active: dict[Hashable, int] = {}

    def prior(self, speaker: Hashable, start_sample: int) -> int | None:
        """The source ``speaker`` is expected in at ``start_sample`` (None: no prior, or it lapsed in a pause)."""
        p = self._prior.get(speaker)
        last = self._last_active.get(speaker)
        if p is None or last is None or start_sample - last > self.pause_samples:
            return None
        return p.source

    def decide(self, start_sample: int, end_sample: int, active: Sequence[Hashable], sources: Sequence[SourceView],
               centroids: Mapping[Hashable, np.ndarray]) -> dict[Hashable, Assignment]:
        """The block ``[start_sample, end_sample)`` with speakers ``active`` (the timeline's) and one
        :class:`SourceView` per source: one :class:`Assignment` per active speaker."""
        if len(sources) != self.num_sources:
            raise ValueError(f"expected {self.num_sources} source views, got {len(sources)}")
        cfg = self.config
        energies = np.array([max(0.0, float(s.energy)) for s in sources])
        total = float(energies.sum())
        shares = energies / total if total > 0 else np.zeros_like(energies)
        present = [k for k, s in enumerate(sources)
                   if s.embedding is not None and total > 0 and shares[k] >= cfg.min_source_share]
        known = [a for a in active if a in centroids]
        every = {(b, k): _cosine(np.asarray(sources[k].embedding), np.asarray(centroids[b]))
                 for b in centroids for k in present}
        sim = {(a, k): every[(a, k)] for a in known for k in present}
        # how much more the source sounds like the speaker than like anybody else known: a source carrying another
        # talker is nobody's best match even when the encoder finds every voice somewhat alike
        contrast = {(a, k): sim[(a, k)] - max((every[(b, k)] for b in centroids if b != a), default=0.0)
                    for a in known for k in present}
        priors = {a: self.prior(a, start_sample) for a in known}
        out: dict[Hashable, Assignment] = {}
        for a in active:
            if a not in centroids:
                out[a] = Assignment(a, None, float("nan"), float("nan"), "no_centroid")
        if known and present:
            best, scores = _assignments(known, present, contrast, priors, cfg.continuity)
            for i, a in enumerate(known):
                k = best[i]
                if k is None:
                    out[a] = Assignment(a, None, float("nan"), float("nan"), "no_source")
                    continue
                others = [s for choice, s in scores if choice[i] != k]
                margin = scores[0][1] - max(others) if others else float("inf")
                similarity = sim[(a, k)]
                sure = (similarity >= cfg.min_similarity and margin >= cfg.min_margin
                        and contrast[(a, k)] >= cfg.min_contrast)
                if not sure:
                    out[a] = Assignment(a, None, similarity, margin, "unsure")
                elif len(active) == 1 and not self._solo_takes_source(k, shares):
                    out[a] = Assignment(a, None, similarity, margin, "solo")
                else:
                    out[a] = Assignment(a, k, similarity, margin, "attributed")
                if sure:
                    self._prior[a] = _Prior(k, end_sample)  # confident: the talker is in source k now
        else:
            for a in known:
                out[a] = Assignment(a, None, float("nan"), float("nan"), "no_source")
        for a in active:
            self._last_active[a] = end_sample
        return {a: out[a] for a in active}

    def _solo_takes_source(self, k: int, shares: np.ndarray) -> bool:
        policy = self.config.solo
        if policy == "source":
            return True
        if policy == "input":
            return False
        return float(1.0 - shares[k]) >= self.config.solo_other_share


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def _assignments(speakers: list[Hashable], sources: list[int], sim: Mapping[tuple[Hashable, int], float],
                 priors: Mapping[Hashable, int | None], continuity: float
                 ) -> tuple[tuple[int | None, ...], list[tuple[tuple[int | None, ...], float]]]:
    """Every injective assignment that gives as many speakers a source as there are sources (the rest None), with
    its score, best first."""
    slots: list[int | None] = [*sources, *([None] * max(0, len(speakers) - len(sources)))]
    seen: set[tuple[int | None, ...]] = set()
    scored: list[tuple[tuple[int | None, ...], float]] = []
    for choice in itertools.permutations(slots, len(speakers)):
        if choice in seen:
            continue
        seen.add(choice)
        score = 0.0
        for a, k in zip(speakers, choice, strict=True):
            if k is not None:
                score += sim[(a, k)] + (continuity if priors.get(a) == k else 0.0)
        scored.append((choice, score))
    scored.sort(key=lambda item: -item[1])
    return scored[0][0], scored


# --- a whole session: blocks, centroids, decisions ---------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """A stretch of the timeline with one set of active speakers."""

    start_sample: int
    end_sample: int
    speakers: tuple[str, ...]

    @property
    def samples(self) -> int:
        return self.end_sample - self.start_sample


def plan_blocks(spans: Mapping[str, Iterable[tuple[int, int]]], total_samples: int, block_samples: int
                ) -> list[Block]:
    """The blocks of a timeline (speaker -> sample spans): every stretch with one non-empty set of active speakers,
    cut into equal pieces of at most ``block_samples``. In time order; the silence between them has none."""
    if block_samples < 1:
        raise ValueError(f"block_samples must be >= 1, got {block_samples}")
    clipped = {spk: [(max(0, int(a)), min(total_samples, int(b))) for a, b in ss] for spk, ss in spans.items()}
    edges = sorted({0, total_samples, *(e for ss in clipped.values() for span in ss for e in span)})
    raw: list[Block] = []
    for lo, hi in itertools.pairwise(edges):
        if hi <= lo:
            continue
        active = tuple(spk for spk, ss in clipped.items() if any(a <= lo and hi <= b for a, b in ss))
        if not active:
            continue
        if raw and raw[-1].speakers == active and raw[-1].end_sample == lo:
            raw[-1] = Block(raw[-1].start_sample, hi, active)
        else:
            raw.append(Block(lo, hi, active))
    blocks: list[Block] = []
    for b in raw:
        pieces = -(-b.samples // block_samples)
        cuts = [b.start_sample + round(i * b.samples / pieces) for i in range(pieces + 1)]
        blocks += [Block(lo, hi, b.speakers) for lo, hi in itertools.pairwise(cuts)]
    return blocks


def window_around(block: Block, total_samples: int, window_samples: int) -> tuple[int, int]:
    """The embedding window of a block: ``window_samples`` centred on it, shifted to fit inside the session."""
    centre = (block.start_sample + block.end_sample) // 2
    lo = max(0, min(centre - window_samples // 2, total_samples - window_samples))
    return lo, min(total_samples, lo + window_samples)


def cut_windows(audio: np.ndarray, windows: Sequence[tuple[int, int]], window_samples: int) -> np.ndarray:
    """(n, window_samples) float32: each window of ``audio``, zero-padded where the session is shorter."""
    out = np.zeros((len(windows), window_samples), np.float32)
    for i, (lo, hi) in enumerate(windows):
        piece = audio[lo:hi]
        out[i, : piece.size] = piece
    return out


Embed = Callable[[np.ndarray], np.ndarray]  # (n, window_samples) float32 -> (n, dim) unit embeddings
EMBED_BATCH = 128  # windows cut and embedded at once (a long session's windows do not all sit in memory)


def embed_all(audio: np.ndarray, windows: Sequence[tuple[int, int]], window_samples: int, embed: Embed) -> np.ndarray:
    """The embeddings of ``windows`` of ``audio``, ``EMBED_BATCH`` at a time."""
    parts = [embed(cut_windows(audio, windows[i:i + EMBED_BATCH], window_samples))
             for i in range(0, len(windows), EMBED_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


@dataclass(frozen=True)
class BlockDecision:
    block: Block
    assignments: dict[str, Assignment]
    gains: dict[int, float] = field(default_factory=dict)  # source -> level-matching gain in this block


@dataclass(frozen=True)
class Attribution:
    decisions: list[BlockDecision]
    centroids: dict[str, np.ndarray]

    def summary(self) -> dict[str, int]:
        """How many blocks' speaker decisions ended each way (``attributed``, ``solo``, ``unsure``, ...)."""
        counts: dict[str, int] = {}
        for d in self.decisions:
            for a in d.assignments.values():
                counts[a.reason] = counts.get(a.reason, 0) + 1
        return counts


def speaker_centroids(audio: np.ndarray, blocks: Sequence[Block], embed: Embed, window_samples: int,
                      min_block_samples: int) -> dict[str, np.ndarray]:
    """Each speaker's centroid: the mean embedding of the input over the blocks where they speak alone (at least
    ``min_block_samples`` long), weighted by the blocks' lengths; a speaker who never speaks alone has none."""
    solo = [b for b in blocks if len(b.speakers) == 1 and b.samples >= min_block_samples]
    if not solo:
        return {}
    total = audio.size
    embeddings = embed_all(audio, [window_around(b, total, window_samples) for b in solo], window_samples, embed)
    sums: dict[str, np.ndarray] = {}
    for b, e in zip(solo, embeddings, strict=True):
        sums[b.speakers[0]] = sums.get(b.speakers[0], 0) + b.samples * np.asarray(e, np.float64)
    return {spk: (v / np.linalg.norm(v)).astype(np.float32) for spk, v in sums.items() if np.linalg.norm(v) > 0}


def level_gain(mixture: np.ndarray, source: np.ndarray, max_gain: float) -> float:
    """The gain that matches ``source`` to its part of ``mixture`` (least squares, within 0..max_gain)."""
    power = float(np.dot(source, source))
    if power <= 0:
        return 0.0
    return float(np.clip(np.dot(mixture, source) / power, 0.0, max_gain))


def attribute(audio: np.ndarray, sources: np.ndarray, rate_hz: int, spans: Mapping[str, Iterable[tuple[int, int]]],
              config: AttributionConfig, embed: Embed) -> Attribution:
    """A whole session's attribution: ``audio`` (T,) the input, ``sources`` (K, T) the separated sources on the
    same timeline, ``spans`` the final timeline's speaker spans in samples; ``embed`` the speaker encoder."""
    if sources.ndim != 2 or sources.shape[1] != audio.size:
        raise ValueError(f"sources must be (num_sources, {audio.size}), got shape {sources.shape}")
    total = audio.size
    window = max(1, round(config.window_s * rate_hz))
    blocks = plan_blocks(spans, total, max(1, round(config.block_s * rate_hz)))
    centroids = speaker_centroids(audio, blocks, embed, window, round(0.5 * config.block_s * rate_hz))
    attributor = Attributor(config, sources.shape[0], rate_hz)
    decisions: list[BlockDecision] = []
    if not blocks:
        return Attribution(decisions, centroids)
    windows = [window_around(b, total, window) for b in blocks]
    embedded = [embed_all(source, windows, window, embed) for source in sources]  # (K, blocks, dim)
    for i, block in enumerate(blocks):
        lo, hi = block.start_sample, block.end_sample
        views = [SourceView(embedded[k][i], float(np.mean(np.square(sources[k, lo:hi], dtype=np.float64))))
                 for k in range(sources.shape[0])]
        assignments = attributor.decide(lo, hi, block.speakers, views, centroids)
        gains: dict[int, float] = {}
        for speaker, a in list(assignments.items()):
            if a.source is None:
                continue
            gain = level_gain(audio[lo:hi], sources[a.source, lo:hi], config.max_gain)
            if gain < MIN_GAIN:  # the source is not in the input here: it carries nobody
                assignments[speaker] = Assignment(speaker, None, a.similarity, a.margin, "unsure")
            else:
                gains[a.source] = gain
        decisions.append(BlockDecision(block, {str(k): v for k, v in assignments.items()}, gains))
    return Attribution(decisions, centroids)
