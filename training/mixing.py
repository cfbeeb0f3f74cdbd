"""Dynamic mixing of the real-voice corpus (training.corpus) for training, and its fixed evaluation sets.

Every training mixture is drawn fresh: two different speakers of the train split (the source first, by
``source_weights``, then a speaker of it, so the 14 short klettres voices do not crowd out the actors), each
speed-perturbed (resampled by 0.9..1.1: tempo and pitch together), possibly talking in only a part of the segment
(turn-taking), possibly in a room (a recorded or simulated response per talker), at -5..+5 dB, with coloured noise
and a random level. Targets are the sources as they sound in the mixture (room included, noise excluded).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.corpus import SAMPLE_RATE_HZ
from training.data import _coloured_noise


class RealCorpus:
    """The speakers of one split of a built corpus, in memory (float32 at 8 kHz)."""

    def __init__(self, root: Path, split: str) -> None:
        index = json.loads((root / "index.json").read_text())
        self.speakers: list[str] = []
        self.audio: dict[str, np.ndarray] = {}
        self.offsets: dict[str, np.ndarray] = {}
        self.source: dict[str, str] = {}
        for name, info in sorted(index.items()):
            if info["split"] != split:
                continue
            self.speakers.append(name)
            self.audio[name] = np.load(root / f"{name}.npy").astype(np.float32) / 32768.0
            self.offsets[name] = np.asarray(info["offsets"], np.int64)
            self.source[name] = info["source"]
        if len(self.speakers) < 2:
            raise ValueError(f"corpus {root} has fewer than 2 {split} speakers")
        rir_path = root / "rirs.npz"
        self.rirs = np.load(rir_path)["rirs"] if rir_path.exists() else None
        self.seconds = sum(len(a) for a in self.audio.values()) / SAMPLE_RATE_HZ


@dataclass
class RealMixConfig:
    segment_samples: int = 2 * SAMPLE_RATE_HZ
    snr_db: tuple[float, float] = (-5.0, 5.0)
    speed: tuple[float, float] = (0.9, 1.1)
    reverb_prob: float = 0.3
    noise_prob: float = 0.4
    noise_snr_db: tuple[float, float] = (15.0, 40.0)
    partial_prob: float = 0.2
    level_dbfs: tuple[float, float] = (-35.0, -12.0)
    source_weights: dict[str, float] = field(default_factory=lambda: {"fillets-cs": 0.6, "festvox-ru": 0.25,
                                                                      "klettres": 0.15})


class RealMixer:
    """Draws ``(mixture (T,), sources (2, T))`` training pairs from a :class:`RealCorpus` with its own RNG."""

    def __init__(self, corpus: RealCorpus, config: RealMixConfig, rng: np.random.Generator) -> None:
        self.corpus, self.config, self.rng = corpus, config, rng
        by_source: dict[str, list[str]] = {}
        for name in corpus.speakers:
            by_source.setdefault(corpus.source[name], []).append(name)
        self.sources = sorted(by_source)
        self.by_source = by_source
        weights = np.array([config.source_weights.get(s, 0.0) for s in self.sources], np.float64)
        if weights.sum() <= 0:
            weights = np.ones(len(self.sources))
        self.source_p = weights / weights.sum()

    def _speaker(self) -> str:
        source = self.sources[int(self.rng.choice(len(self.sources), p=self.source_p))]
        names = self.by_source[source]
        return names[int(self.rng.integers(len(names)))]

    def _pair(self) -> tuple[str, str]:
        first = self._speaker()
        for _ in range(100):
            second = self._speaker()
            if second != first:
                return first, second
        raise RuntimeError("the train split needs two speakers with non-zero weight")

    def _talk(self, speaker: str, length: int) -> np.ndarray:
        """``length`` samples of one speaker at a random speed: utterances strung together with short pauses."""
        rng = self.rng
        speed = float(rng.uniform(*self.config.speed))
        need = int(np.ceil(length * speed)) + 2
        audio, offs = self.corpus.audio[speaker], self.corpus.offsets[speaker]
        out = np.zeros(need, np.float32)
        pos = 0
        while pos < need:
            i = int(rng.integers(len(offs) - 1))
            piece = audio[offs[i] : offs[i + 1]]
            if pos == 0 and len(piece) > need:
                start = int(rng.integers(0, len(piece) - need + 1))
                piece = piece[start : start + need]
            take = min(len(piece), need - pos)
            out[pos : pos + take] = piece[:take]
            pos += take + int(rng.uniform(0.03, 0.3) * SAMPLE_RATE_HZ)
        # resample by linear interpolation: sample j of the result reads position j * speed
        return np.interp(np.arange(length) * speed, np.arange(need), out).astype(np.float32)

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        from scipy.signal import fftconvolve

        c, rng = self.config, self.rng
        n = c.segment_samples
        a, b = self._pair()
        sources = np.stack([self._talk(a, n), self._talk(b, n)])
        if rng.random() < c.partial_prob:
            k = int(rng.integers(2))
            keep = int(rng.integers(n // 3, n))
            start = int(rng.integers(0, n - keep + 1))
            env = np.zeros(n, np.float32)
            ramp = min(200, keep // 4)
            env[start : start + keep] = 1.0
            env[start : start + ramp] = np.linspace(0, 1, ramp)
            env[start + keep - ramp : start + keep] = np.linspace(1, 0, ramp)
            sources[k] *= env
        if self.corpus.rirs is not None and rng.random() < c.reverb_prob:
            pair = self.corpus.rirs[int(rng.integers(len(self.corpus.rirs)))]
            sources = np.stack([fftconvolve(sources[i], pair[i])[:n] for i in range(2)]).astype(np.float32)
        power = (sources**2).mean(axis=1) + 1e-10
        snr = rng.uniform(*c.snr_db)
        sources[1] *= np.sqrt(power[0] / power[1] * 10 ** (-snr / 10))
        mixture = sources.sum(0)
        if rng.random() < c.noise_prob:
            noise = _coloured_noise(rng, n)
            mixture = mixture + noise * np.sqrt((mixture**2).mean() / 10 ** (rng.uniform(*c.noise_snr_db) / 10))
        level = 10 ** (rng.uniform(*c.level_dbfs) / 20) / (np.sqrt((mixture**2).mean()) + 1e-9)
        mixture, sources = mixture * level, sources * level
        peak = np.abs(mixture).max()
        if peak > 0.99:
            mixture, sources = mixture * (0.99 / peak), sources * (0.99 / peak)
        return mixture.astype(np.float32), sources.astype(np.float32)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            pairs = [self.draw() for _ in range(batch_size)]
            yield np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def load_eval_set(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed set written by training.corpus: ``[(mixture (T,), sources (2, T))]`` at each item's length."""
    data = np.load(path)
    return [(m[:n], s[:, :n]) for m, s, n in zip(data["mixtures"], data["sources"], data["lengths"], strict=True)]
