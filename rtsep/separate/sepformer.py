"""SpeechBrain SepFormer from a local directory, run on a sliding window with channels aligned across windows.

The directory is in SpeechBrain's on-disk format for its pretrained separators: ``hyperparams.yaml``
(``Encoder`` / ``MaskNet`` / ``Decoder``, ``modules`` and a ``pretrainer`` whose loadables are
``encoder`` / ``masknet`` / ``decoder``) next to ``encoder.ckpt``, ``masknet.ckpt`` and ``decoder.ckpt``.
It is loaded with SpeechBrain's own ``SepformerSeparation.from_hparams`` from that directory only (nothing
is downloaded). SepFormer looks at the whole input, so it is not causal; rtsep runs it continuous-speech-
separation style:

* every call consumes ``hop`` new samples; the model separates the last ``window`` samples;
* the sources of the new window are put in the order of the previous window's sources by comparing the two on
  their overlap (``window - hop`` samples): the permutation with the highest summed correlation wins, and each
  source's level is matched to the previous window's by least squares on the overlap;
* each call emits the ``hop`` samples that end ``lookahead = (window - hop) / 2`` samples before the end of
  the window: they have seen that much future context.

Latency (algorithmic): ``hop + lookahead`` = 0.8 s + 0.8 s = 1.6 s with the defaults (2.4 s window, 0.8 s hop).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from rtsep.errors import ConfigError, ModelLoadError
from rtsep.separate.base import StreamingSeparator
from rtsep.specs import ModelSpec

REQUIRED_FILES = ("hyperparams.yaml", "encoder.ckpt", "masknet.ckpt", "decoder.ckpt")


class BatchSeparator(Protocol):
    """What the adapter needs of a SpeechBrain separator: ``separate_batch((B, T)) -> (B, T, C)``."""

    def separate_batch(self, mix: torch.Tensor) -> torch.Tensor: ...


@dataclass
class SlidingWindowState:
    buffer: torch.Tensor  # (window_samples,) the last window of input
    previous: torch.Tensor | None = None  # (C, window_samples) the previous window's aligned estimates


def load_sepformer_dir(directory: str | Path, device: str = "cpu") -> tuple[Any, int, int]:
    """Load SpeechBrain's SepFormer from ``directory``; returns (model, sample_rate_hz, num_sources)."""
    directory = Path(directory).expanduser().resolve()
    missing = [name for name in REQUIRED_FILES if not (directory / name).is_file()]
    if missing:
        raise ModelLoadError(f"{directory} is not a SpeechBrain SepFormer directory: missing {', '.join(missing)}")
    try:  # an optional dependency: only this separator needs it
        from speechbrain.inference.separation import SepformerSeparation
        from speechbrain.utils.fetching import LocalStrategy
    except ImportError as exc:
        raise ModelLoadError(f"--separator sepformer needs SpeechBrain, which is not installed ({exc}); install "
                             "it with: pip install 'rtsep[sepformer]'") from exc
    try:
        model = SepformerSeparation.from_hparams(
            source=str(directory), savedir=str(directory), run_opts={"device": device},
            local_strategy=LocalStrategy.NO_LINK,
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load SepFormer from {directory}: {exc}") from exc
    model.mods.eval()
    rate = int(getattr(model.hparams, "sample_rate", 8000))
    sources = int(getattr(model.hparams, "num_spks", 2))
    return model, rate, sources


class SlidingWindowSeparator(StreamingSeparator):
    """Runs a whole-input separator on a sliding window and keeps output channels consistent."""

    def __init__(self, model: BatchSeparator, *, sample_rate_hz: int, num_sources: int, window_samples: int,
                 hop_samples: int, name: str = "sepformer", device: str | torch.device = "cpu") -> None:
        if hop_samples < 1 or window_samples < 2 * hop_samples:
            raise ConfigError("the window must be at least twice the hop (the overlap aligns the channels)")
        self.model = model
        self.window_samples = window_samples
        self.hop_samples = hop_samples
        self.overlap_samples = window_samples - hop_samples
        lookahead = (window_samples - hop_samples) // 2
        self.spec = ModelSpec(name=name, sample_rate_hz=sample_rate_hz, step_samples=hop_samples,
                              lookahead_samples=lookahead, num_outputs=num_sources)
        self._device = torch.device(device)
        self._perms = list(itertools.permutations(range(num_sources)))

    def new_state(self) -> SlidingWindowState:
        return SlidingWindowState(buffer=torch.zeros(self.window_samples, device=self._device))

    def to(self, device: torch.device | str) -> SlidingWindowSeparator:
        self._device = torch.device(device)
        mods = getattr(self.model, "mods", None)
        if mods is not None:
            mods.to(self._device)
            self.model.device = str(self._device)
        return self

    def process(self, chunks: torch.Tensor, states: Sequence[SlidingWindowState]) -> torch.Tensor:
        self.validate_batch(chunks, states)
        hop, look = self.hop_samples, self.spec.lookahead_samples
        chunks = chunks.to(self._device, torch.float32)
        windows = torch.stack([torch.cat((s.buffer[hop:], chunks[i])) for i, s in enumerate(states)])
        with torch.inference_mode():
            estimates = self.model.separate_batch(windows).transpose(1, 2).float()  # (B, C, W)
        out = []
        for i, state in enumerate(states):
            est = self._align(estimates[i], state.previous)
            state.buffer = windows[i]
            state.previous = est
            end = self.window_samples - look
            out.append(est[:, end - hop : end])
        return torch.stack(out)

    def _align(self, current: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
        if previous is None:
            return current
        ov = self.overlap_samples
        prev = previous[:, self.hop_samples :]  # previous window's estimates of the overlap
        cur = current[:, :ov]
        prev_n = prev / (prev.norm(dim=1, keepdim=True) + 1e-8)
        cur_n = cur / (cur.norm(dim=1, keepdim=True) + 1e-8)
        corr = prev_n @ cur_n.T  # (C_prev, C_cur)
        best = max(self._perms, key=lambda p: float(sum(corr[k, p[k]] for k in range(len(p)))))
        aligned = current[list(best)]
        cur = aligned[:, :ov]
        gain = (prev * cur).sum(1) / ((cur * cur).sum(1) + 1e-8)
        return aligned * gain.clamp(0.1, 10.0).unsqueeze(1)


def create_separator(separator_dir: str | Path | None = None, window_s: float = 2.4, hop_s: float = 0.8,
                     device: str = "cpu") -> SlidingWindowSeparator:
    """Registry factory: ``create_separator("sepformer", separator_dir=DIR, window_s=2.4, hop_s=0.8)``."""
    if separator_dir is None:
        raise ConfigError("the sepformer separator needs --separator-dir DIR (SpeechBrain's on-disk format)")
    model, rate, sources = load_sepformer_dir(separator_dir, device)
    return SlidingWindowSeparator(model, sample_rate_hz=rate, num_sources=sources,
                                  window_samples=round(window_s * rate), hop_samples=round(hop_s * rate),
                                  device=device)
