"""A causal time-frequency mask separator built for CPUs, with exact stateful streaming.

Signal path, for a mono input at ``sample_rate_hz``:

* analysis: a short STFT, ``window_samples`` long (16 ms at 8 kHz) with a hop of ``hop_samples = window / 2``
  (8 ms), square-root periodic Hann window, as a DFT matrix (cheaper than FFT
  calls on single frames). The input is padded on the left only, so frame ``k`` ends at sample ``(k+1)*hop``;
* features per frame: the log power spectrum normalised across frequency (a per-frame layer norm: no state, no
  dependence on the input level) and the frame's mean log power (scaled), so level and silence stay visible;
* mask estimator: a linear input layer, a ``layers``-deep GRU of ``hidden`` units (unidirectional: causal),
  a linear layer to one complex mask per source and bin, with a bounded magnitude ``tanh(|z|)``;
* synthesis: the masked complex spectrum, inverse DFT, the same window, 50 % overlap-add (the squared window sums
  to one, so a unit mask gives the input back exactly).

At an 8 ms hop the recurrent network sees 125 frames a second (the Conv-TasNet's 2 ms hop: 500), which is what
makes it cheap. Like the Conv-TasNet, the one piece of look-ahead is the overlap-add: an output sample is final
once the frame that starts at it has been analysed, ``window - hop`` samples later; streaming returns the output
delayed by that many samples (``ModelSpec.lookahead_samples``) and the algorithmic latency is that delay plus the
step (one hop: 16 ms at 8 kHz).

Streaming state per session (:class:`TFMaskState`): the last ``window - hop`` input samples, the GRU's hidden
state and the pending overlap-add tail. Processing a stream in chunks of any multiple of the hop gives the output
of one forward pass over the whole signal (to float rounding). States of many sessions stack into one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rtsep.errors import ConfigError
from rtsep.separate.base import StreamingSeparator
from rtsep.separate.checkpoint import load_checkpoint, read_header, save_checkpoint
from rtsep.specs import ModelSpec

CHECKPOINT_FORMAT = "rtsep-tfmask"
CHECKPOINT_VERSION = 1
_LOG_FLOOR = 1e-8


@dataclass(frozen=True)
class TFMaskConfig:
    sample_rate_hz: int = 8000
    num_sources: int = 2
    window_samples: int = 128  # 16 ms at 8 kHz; hop 8 ms
    hidden: int = 192
    layers: int = 2

    def __post_init__(self) -> None:
        if self.window_samples < 4 or self.window_samples % 2:
            raise ConfigError("TFMaskConfig.window_samples must be an even number >= 4")
        for f in fields(self):
            if getattr(self, f.name) < 1:
                raise ConfigError(f"TFMaskConfig.{f.name} must be >= 1")

    @property
    def hop_samples(self) -> int:
        return self.window_samples // 2

    @property
    def lookahead_samples(self) -> int:
        return self.window_samples - self.hop_samples

    @property
    def bins(self) -> int:
        return self.window_samples // 2 + 1


@dataclass
class TFMaskState:
    """One session's streaming state."""

    input_tail: torch.Tensor  # (lookahead,) float32
    hidden: torch.Tensor  # (layers, hidden) float32
    output_tail: torch.Tensor  # (sources, hop) float32
    samples_in: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _dft_bases(window_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The windowed real DFT and its inverse as matrices (cheaper than FFT calls on 16 ms frames, one frame at
    a time): ``frame @ analysis`` = [Re X | Im X] of the sqrt-Hann-windowed frame (F = N/2 + 1 bins each);
    ``[Re Y | Im Y] @ synthesis`` = the sqrt-Hann-windowed inverse real DFT (as irfft: the imaginary parts of
    the DC and Nyquist bins are ignored)."""
    n = window_samples
    bins = n // 2 + 1
    window = torch.hann_window(n, periodic=True, dtype=torch.float64).sqrt()
    t = torch.arange(n, dtype=torch.float64)
    k = torch.arange(bins, dtype=torch.float64)
    angle = 2 * torch.pi * t[:, None] * k[None, :] / n  # (N, F)
    analysis = torch.cat((torch.cos(angle), -torch.sin(angle)), dim=1) * window[:, None]
    weight = torch.full((bins,), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    weight[-1] = 1.0  # N even: the Nyquist bin counts once
    synthesis = torch.cat((weight[:, None] * torch.cos(angle.T), -weight[:, None] * torch.sin(angle.T)), dim=0)
    synthesis = synthesis / n * window[None, :]
    return analysis.float(), synthesis.float()


class TFMaskNet(nn.Module):
    def __init__(self, config: TFMaskConfig) -> None:
        super().__init__()
        self.config = c = config
        analysis, synthesis = _dft_bases(c.window_samples)
        self.register_buffer("analysis", analysis, persistent=False)
        self.register_buffer("synthesis", synthesis, persistent=False)
        self.norm = nn.LayerNorm(c.bins)
        self.input = nn.Linear(c.bins + 1, c.hidden)
        self.rnn = nn.GRU(c.hidden, c.hidden, num_layers=c.layers, batch_first=True)
        self.mask = nn.Linear(c.hidden, c.num_sources * c.bins * 2)

    @property
    def device(self) -> torch.device:
        return self.mask.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _run(self, x: torch.Tensor, input_tail: torch.Tensor | None, hidden: torch.Tensor | None,
             output_tail: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T), T a multiple of the hop. Returns the overlap-added output (B, S, T + lookahead) covering
        samples [-lookahead, T) relative to x (the previous call's pending tail included), the new input tail
        (B, lookahead) and the GRU state (layers, B, H)."""
        c = self.config
        batch, hop, win = x.shape[0], c.hop_samples, c.window_samples
        xin = F.pad(x, (c.lookahead_samples, 0)) if input_tail is None else torch.cat((input_tail, x), dim=1)
        new_tail = xin[:, xin.shape[1] - c.lookahead_samples :]
        spec = torch.matmul(xin.unfold(1, win, hop), self.analysis)  # (B, K, 2F): windowed DFT, real | imag
        sr, si = spec[..., : c.bins], spec[..., c.bins :]
        power = sr.square() + si.square()
        log_power = torch.log(power + _LOG_FLOOR)
        level = log_power.mean(-1, keepdim=True)
        feats = torch.cat((self.norm(log_power), 0.1 * level), dim=-1)
        y, new_hidden = self.rnn(torch.relu(self.input(feats)), hidden)
        k = spec.shape[1]
        z = self.mask(y).view(batch, k, c.num_sources, c.bins, 2)
        zr, zi = z[..., 0], z[..., 1]
        magnitude = torch.sqrt(zr.square() + zi.square() + 1e-12)
        gain = torch.tanh(magnitude) / magnitude
        mr, mi = zr * gain, zi * gain  # (B, K, S, F)
        sr, si = sr.unsqueeze(2), si.unsqueeze(2)
        est = torch.cat((mr * sr - mi * si, mr * si + mi * sr), dim=-1)  # (B, K, S, 2F)
        decoded = torch.matmul(est, self.synthesis)  # (B, K, S, win): inverse DFT, windowed
        decoded = decoded.permute(0, 2, 1, 3).reshape(batch, c.num_sources, k, 2, hop)
        out = F.pad(decoded[:, :, :, 0], (0, 0, 0, 1)) + F.pad(decoded[:, :, :, 1], (0, 0, 1, 0))
        if output_tail is not None:
            out[:, :, 0] += output_tail
        return out.reshape(batch, c.num_sources, (k + 1) * hop), new_tail, new_hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One causal pass over whole signals. x: (B, T) -> (B, num_sources, T), aligned with x (the last
        ``lookahead_samples`` lack the next frame's overlap-add, as streaming returns them one step later)."""
        hop, total = self.config.hop_samples, x.shape[-1]
        pad = (-total) % hop
        if pad:
            x = F.pad(x, (0, pad))
        out, _, _ = self._run(x, None, None, None)
        look = self.config.lookahead_samples
        return out[:, :, look : look + total]

    def new_state(self, device: torch.device | str | None = None) -> TFMaskState:
        c = self.config
        device = device if device is not None else self.device
        return TFMaskState(input_tail=torch.zeros(c.lookahead_samples, device=device),
                           hidden=torch.zeros(c.layers, c.hidden, device=device),
                           output_tail=torch.zeros(c.num_sources, c.hop_samples, device=device))

    def stream(self, chunks: torch.Tensor, states: Sequence[TFMaskState]) -> torch.Tensor:
        """chunks: (B, T), T a multiple of the hop; returns (B, S, T) = outputs of samples
        [-lookahead, T - lookahead) relative to the chunk. Updates ``states`` in place."""
        c = self.config
        if chunks.shape[1] % c.hop_samples:
            raise ValueError(f"chunk length {chunks.shape[1]} is not a multiple of the hop ({c.hop_samples})")
        if len(states) == 1:
            input_tail = states[0].input_tail.unsqueeze(0)
            hidden = states[0].hidden.unsqueeze(1)
            output_tail = states[0].output_tail.unsqueeze(0)
        else:
            input_tail = torch.stack([s.input_tail for s in states])
            hidden = torch.stack([s.hidden for s in states], dim=1)
            output_tail = torch.stack([s.output_tail for s in states])
        out, new_tail, new_hidden = self._run(chunks, input_tail, hidden, output_tail)
        t = chunks.shape[1]
        for i, state in enumerate(states):
            state.input_tail = new_tail[i]
            state.hidden = new_hidden[:, i]
            state.output_tail = out[i, :, t:]
            state.samples_in += t
        return out[:, :, :t]


# ---------------------------------------------------------------------- checkpoints
def save_tfmask(model: TFMaskNet, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """A self-describing checkpoint: safetensors weights + the config (and free-form metadata) as JSON."""
    save_checkpoint(model, path, format_name=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, metadata=metadata)


def read_tfmask_metadata(path: str | Path) -> dict[str, Any]:
    return read_header(path, format_name=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="TF-mask")


def load_tfmask(path: str | Path) -> TFMaskNet:
    """Load a checkpoint written by :func:`save_tfmask` (on the CPU, in eval mode)."""
    return load_checkpoint(path, lambda config: TFMaskNet(TFMaskConfig(**config)), format_name=CHECKPOINT_FORMAT,
                           version=CHECKPOINT_VERSION, what="TF-mask")


# ---------------------------------------------------------------------- the streaming separator
class TFMaskSeparator(StreamingSeparator):
    """Serves a :class:`TFMaskNet` to many sessions, batched. ``step_samples``: a multiple of the hop (default one
    hop, the live operating point: 8 ms step + 8 ms look-ahead at 8 kHz)."""

    def __init__(self, model: TFMaskNet, step_samples: int | None = None, name: str = "tfmask") -> None:
        c = model.config
        hop = c.hop_samples
        step_samples = hop if step_samples is None else step_samples
        if step_samples < hop or step_samples % hop:
            raise ConfigError(f"step_samples must be a positive multiple of the hop ({hop}), got {step_samples}")
        self.model = model.eval()
        self.spec = ModelSpec(name=name, sample_rate_hz=c.sample_rate_hz, step_samples=step_samples,
                              lookahead_samples=c.lookahead_samples, num_outputs=c.num_sources)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_state(self) -> TFMaskState:
        return self.model.new_state()

    def process(self, chunks: torch.Tensor, states: Sequence[TFMaskState]) -> torch.Tensor:
        self.validate_batch(chunks, states)
        with torch.inference_mode():
            return self.model.stream(chunks.to(self.device, torch.float32), states)

    def to(self, device: torch.device | str) -> TFMaskSeparator:
        self.model.to(device)
        return self


def create_separator(checkpoint: str | Path | None = None, step_samples: int | None = None) -> TFMaskSeparator:
    """Registry factory: ``create_separator("tfmask", checkpoint=..., step_samples=...)``."""
    if checkpoint is None:
        raise ConfigError("the tfmask separator needs a checkpoint (none ships in the package yet)")
    return TFMaskSeparator(load_tfmask(checkpoint), step_samples=step_samples)


__all__ = ["TFMaskConfig", "TFMaskNet", "TFMaskSeparator", "TFMaskState", "create_separator", "load_tfmask",
           "read_tfmask_metadata", "save_tfmask"]
