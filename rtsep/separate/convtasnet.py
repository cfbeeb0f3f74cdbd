"""Causal Conv-TasNet (Luo & Mesgarani, 2019) with exact stateful streaming.

Signal path, for a mono input at ``sample_rate_hz``:

* encoder: a learned filterbank, ``window_samples`` long with a hop of ``hop_samples = window_samples / 2``,
  followed by a ReLU. The input is padded on the left only, so frame ``k`` ends at sample ``(k+1)*hop``;
* mask network: cumulative layer norm (cLN) -> 1x1 bottleneck -> ``repeats`` x ``blocks_per_repeat``
  temporal blocks (1x1 conv, PReLU, cLN, dilated depthwise conv padded on the left only, PReLU, cLN,
  1x1 conv, residual) -> PReLU -> 1x1 conv to one mask per source (sigmoid);
* decoder: the transposed learned filterbank, overlap-add.

Every operation only looks at the past, so the model is causal. The one piece of look-ahead is the
decoder's overlap-add: an output sample is final once the frame that starts at it has been decoded, i.e.
``window_samples - hop_samples`` samples later. Streaming therefore returns the output delayed by that many
samples (``ModelSpec.lookahead_samples``); the algorithmic latency is that delay plus the step.

Streaming state per session (:class:`ConvTasNetState`): the last ``window - hop`` input samples (encoder),
the left context of every dilated convolution, the running sums of every cLN (in float64, so that hours of
audio keep full precision), and the decoder's pending overlap-add tail. Processing a stream in chunks of
any multiple of the hop gives the same output as one forward over the whole signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from rtsep.errors import ConfigError
from rtsep.separate.base import StreamingSeparator
from rtsep.separate.checkpoint import load_checkpoint, read_header, save_checkpoint
from rtsep.specs import ModelSpec

CHECKPOINT_FORMAT = "rtsep-convtasnet"
CHECKPOINT_VERSION = 1
DEFAULT_CHECKPOINT = "convtasnet_8k.safetensors"


@dataclass(frozen=True)
class ConvTasNetConfig:
    sample_rate_hz: int = 8000
    num_sources: int = 2
    encoder_filters: int = 128  # N
    window_samples: int = 32  # L (4 ms at 8 kHz; hop 2 ms)
    bottleneck_channels: int = 64  # B
    hidden_channels: int = 128  # H
    kernel_size: int = 3  # P
    blocks_per_repeat: int = 8  # X: dilations 1, 2, ..., 2**(X-1)
    repeats: int = 3  # R
    # the cumulative layer norms' memory: 0 pools every frame since the start alike (plain cLN); > 0 lets each
    # frame's weight fall by e every ``norm_memory_s`` seconds, so that the statistics follow the last few seconds
    # of a long session as they follow a short training segment
    norm_memory_s: float = 0.0

    def __post_init__(self) -> None:
        if self.window_samples < 2 or self.window_samples % 2:
            raise ConfigError("window_samples must be an even number >= 2")
        for f in fields(self):
            if f.name != "norm_memory_s" and getattr(self, f.name) < 1:
                raise ConfigError(f"ConvTasNetConfig.{f.name} must be >= 1")
        if not self.norm_memory_s >= 0:
            raise ConfigError("ConvTasNetConfig.norm_memory_s must be >= 0")

    @property
    def hop_samples(self) -> int:
        return self.window_samples // 2

    @property
    def lookahead_samples(self) -> int:
        return self.window_samples - self.hop_samples

    @property
    def norm_memory_frames(self) -> float:
        return self.norm_memory_s * self.sample_rate_hz / self.hop_samples

    @property
    def receptive_field_frames(self) -> int:
        return 1 + self.repeats * (self.kernel_size - 1) * (2**self.blocks_per_repeat - 1)

    @property
    def receptive_field_s(self) -> float:
        return self.receptive_field_frames * self.hop_samples / self.sample_rate_hz


_COUNTS: dict[tuple[str, int], torch.Tensor] = {}


def _frame_counts(frames: int, device: torch.device) -> torch.Tensor:
    """1, 2, ..., frames in float64 (cached: streaming calls reuse it thousands of times; not while torch.compile
    traces, where a lookup would become a guard and the arange is folded into the graph anyway)."""
    key, tracing = (str(device), frames), torch.compiler.is_compiling()
    counts = None if tracing else _COUNTS.get(key)
    if counts is None:
        counts = torch.arange(1, frames + 1, device=device, dtype=torch.float64)
        if frames <= 65536 and len(_COUNTS) < 64 and not tracing:
            _COUNTS[key] = counts
    return counts


_DECAYS: dict[tuple[str, int, float, float], tuple[torch.Tensor, ...]] = {}


def _decays(frames: int, memory_frames: float, weight: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    """For t = 0..frames-1, float64: exp(t / m), exp(-t / m), exp(-(t + 1) / m) and the decayed count of frames of
    ``weight`` from a zero start (cached, as _frame_counts)."""
    key, tracing = (str(device), frames, memory_frames, weight), torch.compiler.is_compiling()
    found = None if tracing else _DECAYS.get(key)
    if found is None:
        t = torch.arange(frames, device=device, dtype=torch.float64)
        grow, shrink = (t / memory_frames).exp(), (-t / memory_frames).exp()
        found = (grow, shrink, (-(t + 1) / memory_frames).exp(), (grow * weight).cumsum(0) * shrink)
        if frames <= 65536 and len(_DECAYS) < 64 and not tracing:
            _DECAYS[key] = found
    return found


def _leaky_cumsum(values: torch.Tensor, weight: float, memory_frames: float,
                  carried: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decaying running sums: ``S_t = d * S_(t-1) + v_t`` with ``d = exp(-1 / memory_frames)``, and the same for
    the count (each frame adds ``weight``). ``values``: (B, T, 2) float64; ``carried``: (B, 3) sums and count
    before the input, or None. Computed in blocks short enough that ``exp(t / memory_frames)`` stays finite."""
    batch, frames, _ = values.shape
    sums_before = values.new_zeros(batch, 2) if carried is None else carried[:, :2]
    count_before = values.new_zeros(batch) if carried is None else carried[:, 2]
    block = max(1, int(500 * memory_frames))
    all_sums, all_counts = [], []
    for start in range(0, frames, block):
        v = values[:, start : start + block]
        grow, shrink, carry, fresh_counts = _decays(v.shape[1], memory_frames, weight, v.device)
        sums = torch.addcmul((v * grow[:, None]).cumsum(1) * shrink[:, None], sums_before[:, None, :], carry[:, None])
        counts = torch.addcmul(fresh_counts, count_before[:, None], carry)
        all_sums.append(sums)
        all_counts.append(counts)
        sums_before, count_before = sums[:, -1], counts[:, -1]
    return torch.cat(all_sums, 1), torch.cat(all_counts, 1)


Params = dict[str, torch.Tensor] | None  # per-session weights: a parameter's name -> (sessions, *its shape)


def _param(params: Params, name: str, shared: torch.Tensor) -> torch.Tensor:
    """The tensor the computation uses for parameter ``name``: the sessions' stacked own, or the shared one."""
    return shared if params is None else params.get(name, shared)


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` over the last dimension; with a per-session ``weight`` (B, out, in) and ``bias`` (B, out), batch
    item b of ``x`` (B, ..., in) goes through its own weights (one batched matmul)."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    y = torch.bmm(flat, weight.transpose(1, 2)) if bias is None else torch.baddbmm(bias[:, None, :], flat,
                                                                                   weight.transpose(1, 2))
    return y.reshape(*x.shape[:-1], weight.shape[1])


def _prelu(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.prelu`` with one slope; a per-session slope (B, 1) applies to batch item b (as F.prelu's per-channel
    slopes, with the batch moved to the channel axis: one kernel, where a where() would take several)."""
    if weight.dim() == 1:
        return F.prelu(x, weight)
    return F.prelu(x.transpose(0, 1), weight.reshape(-1)).transpose(0, 1)


class CumulativeLayerNorm(nn.Module):
    """Layer norm whose statistics at frame ``t`` pool all channels of frames ``0..t`` (causal).

    Input is channel-last ``(B, T, C)``. ``stats`` carries ``(sum, sum of squares, count)`` of everything
    seen before the input, per batch item, in float64; the forward returns the normalised input and the
    updated statistics. With ``memory_frames`` > 0 older frames weigh less: exp(-age / memory_frames).
    """

    def __init__(self, channels: int, eps: float = 1e-8, memory_frames: float = 0.0) -> None:
        super().__init__()
        self.eps = eps
        self.memory_frames = memory_frames
        self.gain = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, stats: torch.Tensor | None = None, params: Params = None,
                prefix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """``params``: per-session gains and biases (``prefix`` + "gain" / "bias", stacked), if any."""
        channels, frames = x.shape[2], x.shape[1]
        per_frame = torch.stack((x.sum(2), (x * x).sum(2)), dim=2).double()  # (B, T, 2)
        if self.memory_frames > 0:
            sums, counts = _leaky_cumsum(per_frame, channels, self.memory_frames, stats)
        else:
            sums = per_frame.cumsum(1)
            counts = _frame_counts(frames, x.device) * channels  # (T,)
            if stats is not None:
                sums = sums + stats[:, None, :2]
                counts = counts + stats[:, 2:3]  # (B, T)
            else:
                counts = counts.expand(x.shape[0], frames)
        mean = sums[:, :, 0] / counts
        scale = (sums[:, :, 1] / counts - mean * mean).clamp_min(0.0).add(self.eps).rsqrt()
        new_stats = torch.cat((sums[:, -1], counts[:, -1:]), dim=1)
        y = (x - mean.float().unsqueeze(2)) * scale.float().unsqueeze(2)
        gain, bias = _param(params, prefix + "gain", self.gain), _param(params, prefix + "bias", self.bias)
        if gain.dim() == 2:
            gain, bias = gain[:, None, :], bias[:, None, :]
        return torch.addcmul(bias, y, gain), new_stats


class TemporalBlock(nn.Module):
    """1x1 conv -> PReLU -> cLN -> dilated depthwise conv (left context only) -> PReLU -> cLN -> 1x1 conv,
    with a residual connection. Channel-last ``(B, T, C)``; 1x1 convolutions are linear layers."""

    def __init__(self, bottleneck: int, hidden: int, kernel_size: int, dilation: int,
                 memory_frames: float = 0.0) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.context_frames = (kernel_size - 1) * dilation
        self.hidden = hidden
        self.in_conv = nn.Linear(bottleneck, hidden)
        self.act1 = nn.PReLU()
        self.norm1 = CumulativeLayerNorm(hidden, memory_frames=memory_frames)
        self.depthwise_weight = nn.Parameter(torch.empty(kernel_size, hidden))
        self.depthwise_bias = nn.Parameter(torch.zeros(hidden))
        nn.init.uniform_(self.depthwise_weight, -1 / math.sqrt(kernel_size), 1 / math.sqrt(kernel_size))
        self.act2 = nn.PReLU()
        self.norm2 = CumulativeLayerNorm(hidden, memory_frames=memory_frames)
        self.out_conv = nn.Linear(hidden, bottleneck)

    def depthwise(self, padded: torch.Tensor, params: Params = None, prefix: str = "") -> torch.Tensor:
        """padded: (B, context + T, H) -> (B, T, H); tap k reads frame t - (P-1-k)*dilation."""
        frames = padded.shape[1] - self.context_frames
        weight = _param(params, prefix + "depthwise_weight", self.depthwise_weight)
        bias = _param(params, prefix + "depthwise_bias", self.depthwise_bias)
        if weight.dim() == 3:  # per session: (B, P, H) taps, (B, H) bias, broadcast over the frames
            taps, bias = [tap[:, None, :] for tap in weight.unbind(1)], bias[:, None, :]
        else:
            taps = weight.unbind(0)
        out = torch.addcmul(bias, padded[:, :frames], taps[0])
        for k in range(1, self.kernel_size):
            start = k * self.dilation
            out = torch.addcmul(out, padded[:, start : start + frames], taps[k])
        return out

    def forward(
        self, x: torch.Tensor, cache: torch.Tensor | None, stats1: torch.Tensor | None, stats2: torch.Tensor | None,
        params: Params = None, prefix: str = "",
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``params``: per-session weights named from ``prefix`` (see :meth:`ConvTasNet.stream`), if any."""
        def p(name: str, shared: torch.Tensor) -> torch.Tensor:
            return _param(params, prefix + name, shared)

        y = _linear(x, p("in_conv.weight", self.in_conv.weight), p("in_conv.bias", self.in_conv.bias))
        y, stats1 = self.norm1(_prelu(y, p("act1.weight", self.act1.weight)), stats1, params, prefix + "norm1.")
        y = F.pad(y, (0, 0, self.context_frames, 0)) if cache is None else torch.cat((cache, y), dim=1)
        new_cache = y[:, y.shape[1] - self.context_frames :]
        y = _prelu(self.depthwise(y, params, prefix), p("act2.weight", self.act2.weight))
        y, stats2 = self.norm2(y, stats2, params, prefix + "norm2.")
        out = _linear(y, p("out_conv.weight", self.out_conv.weight), p("out_conv.bias", self.out_conv.bias))
        return x + out, new_cache, stats1, stats2


@dataclass
class ConvTasNetState:
    """One session's streaming state: every left context (encoder input tail, the context of each dilated
    convolution, the decoder's pending overlap-add tail) and every cLN's running sums."""

    caches: list[torch.Tensor]  # float32; [(lookahead,), (context_frames, hidden) per block, (sources, lookahead)]
    stats: torch.Tensor  # (num_norms, 3) float64: sum, sum of squares, count
    extra: dict[str, Any] = field(default_factory=dict)


class ConvTasNet(nn.Module):
    def __init__(self, config: ConvTasNetConfig) -> None:
        super().__init__()
        self.config = c = config
        # learned filterbanks: frame (L samples) -> N coefficients, and back
        self.encoder = nn.Linear(c.window_samples, c.encoder_filters, bias=False)
        self.input_norm = CumulativeLayerNorm(c.encoder_filters, memory_frames=c.norm_memory_frames)
        self.bottleneck = nn.Linear(c.encoder_filters, c.bottleneck_channels)
        self.blocks = nn.ModuleList(
            TemporalBlock(c.bottleneck_channels, c.hidden_channels, c.kernel_size, 2**i, c.norm_memory_frames)
            for _ in range(c.repeats)
            for i in range(c.blocks_per_repeat)
        )
        self.mask_act = nn.PReLU()
        self.mask_conv = nn.Linear(c.bottleneck_channels, c.num_sources * c.encoder_filters)
        self.decoder = nn.Linear(c.encoder_filters, c.window_samples, bias=False)
        # shapes of the streaming caches, in order
        self._cache_shapes: list[tuple[int, ...]] = [(c.lookahead_samples,)]  # encoder input tail
        self._cache_shapes += [(block.context_frames, c.hidden_channels) for block in self.blocks]
        self._cache_shapes.append((c.num_sources, c.lookahead_samples))  # decoder overlap-add tail
        self.num_norms = 1 + 2 * len(self.blocks)

    @property
    def device(self) -> torch.device:
        return self.encoder.weight.device

    # ------------------------------------------------------------------ shared core
    def _run(
        self, x: torch.Tensor, caches: list[torch.Tensor] | None, stats: torch.Tensor | None, params: Params = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """x: (B, T) with T a multiple of the hop. Returns the decoder's overlap-added output
        (B, C, T + lookahead) covering samples [-lookahead, T) relative to x (including the previous
        call's pending tail), and the new caches (all but the decoder's) and norm statistics. ``params``: batch
        item b's own weights (see :meth:`stream`), if any."""
        c = self.config

        def p(name: str, shared: torch.Tensor) -> torch.Tensor:
            return _param(params, name, shared)

        batch, hop = x.shape[0], c.hop_samples
        pieces: list[torch.Tensor] = []
        new_stats: list[torch.Tensor] = []

        def take(i: int) -> torch.Tensor | None:
            return None if caches is None else caches[i]

        def stat(i: int) -> torch.Tensor | None:
            return None if stats is None else stats[:, i]

        enc_tail = take(0)
        xin = F.pad(x, (c.lookahead_samples, 0)) if enc_tail is None else torch.cat((enc_tail, x), dim=1)
        pieces.append(xin[:, xin.shape[1] - c.lookahead_samples :])
        feats = F.relu(_linear(xin.unfold(1, c.window_samples, hop), p("encoder.weight", self.encoder.weight),
                               None))  # (B, K, N)
        y, s = self.input_norm(feats, stat(0), params, "input_norm.")
        new_stats.append(s)
        y = _linear(y, p("bottleneck.weight", self.bottleneck.weight), p("bottleneck.bias", self.bottleneck.bias))
        for i, block in enumerate(self.blocks):
            y, piece, s1, s2 = block(y, take(1 + i), stat(1 + 2 * i), stat(2 + 2 * i), params, f"blocks.{i}.")
            pieces.append(piece)
            new_stats += [s1, s2]
        frames = feats.shape[1]
        y = _linear(_prelu(y, p("mask_act.weight", self.mask_act.weight)), p("mask_conv.weight", self.mask_conv.weight),
                    p("mask_conv.bias", self.mask_conv.bias))
        masks = torch.sigmoid(y).view(batch, frames, c.num_sources, c.encoder_filters)
        decoded = _linear(masks * feats.unsqueeze(2), p("decoder.weight", self.decoder.weight), None)  # (B, K, C, L)
        decoded = decoded.permute(0, 2, 1, 3).reshape(batch, c.num_sources, frames, 2, hop)
        # 50 % overlap-add: segment j (hop samples, at [(j-1)*hop, j*hop)) = first half of frame j
        # + second half of frame j-1
        out = F.pad(decoded[:, :, :, 0], (0, 0, 0, 1)) + F.pad(decoded[:, :, :, 1], (0, 0, 1, 0))
        dec_tail = take(len(self.blocks) + 1)
        if dec_tail is not None:
            out[:, :, 0] += dec_tail
        return out.reshape(batch, c.num_sources, (frames + 1) * hop), pieces, new_stats

    # ------------------------------------------------------------------ offline
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One causal pass over whole signals. x: (B, T) -> (B, num_sources, T), aligned with x.

        The last ``lookahead_samples`` outputs lack the next frame's overlap-add contribution (as streaming,
        which returns them one step later). T is padded up to a multiple of the hop internally."""
        hop = self.config.hop_samples
        total = x.shape[-1]
        pad = (-total) % hop
        if pad:
            x = F.pad(x, (0, pad))
        out, _, _ = self._run(x, None, None)
        return out[:, :, self.config.lookahead_samples : self.config.lookahead_samples + total]

    # ------------------------------------------------------------------ streaming
    def new_state(self, device: torch.device | str | None = None) -> ConvTasNetState:
        device = device if device is not None else self.device
        return ConvTasNetState(
            caches=[torch.zeros(shape, device=device) for shape in self._cache_shapes],
            stats=torch.zeros(self.num_norms, 3, dtype=torch.float64, device=device),
        )

    def stream(self, chunks: torch.Tensor, states: Sequence[ConvTasNetState], params: Params = None,
               core: nn.Module | None = None) -> torch.Tensor:
        """chunks: (B, T), T a multiple of the hop; returns (B, C, T) = outputs of samples
        [-lookahead, T - lookahead) relative to the chunk. Updates ``states`` in place.

        ``params``: each session on weights of its own (e.g. adapted to its talkers): parameter name (as in
        ``named_parameters()``) -> the B sessions' tensors stacked on a first dimension (:func:`stack_parameters`).
        The batch stays one call: linear layers become batched matmuls, slopes, gains and taps broadcast per item.
        ``core``: this model's :class:`StreamingCore` traced (:func:`trace_streaming_core`), run instead of the eager
        one (same results; without params)."""
        c = self.config
        if chunks.shape[1] % c.hop_samples:
            raise ValueError(f"chunk length {chunks.shape[1]} is not a multiple of the hop ({c.hop_samples})")
        if len(states) == 1:
            caches = [piece.unsqueeze(0) for piece in states[0].caches]
            stats = states[0].stats.unsqueeze(0)
        else:
            caches = [torch.stack(pieces) for pieces in zip(*(s.caches for s in states), strict=True)]
            stats = torch.stack([s.stats for s in states])
        if core is not None and params is None:
            with torch.jit.optimized_execution(False):  # the plain interpreter: no re-profiling when the batch changes
                out, pieces, packed_stats = core(chunks, caches, stats)
        else:
            out, pieces, new_stats = self._run(chunks, caches, stats, params)
            packed_stats = torch.stack(new_stats, dim=1)
        pieces.append(out[:, :, out.shape[2] - c.lookahead_samples :])
        for i, state in enumerate(states):
            state.caches = [piece[i] for piece in pieces]
            state.stats = packed_stats[i]
        return out[:, :, : chunks.shape[1]]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ---------------------------------------------------------------------- checkpoints
def save_convtasnet(model: ConvTasNet, path: str | Path, metadata: dict[str, Any] | None = None) -> None:
    """Write a self-describing checkpoint: safetensors weights + the config (and free-form metadata) as JSON."""
    save_checkpoint(model, path, format_name=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, metadata=metadata)


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    return read_header(path, format_name=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, what="Conv-TasNet")


def with_norm_memory(model: ConvTasNet, norm_memory_s: float) -> ConvTasNet:
    """``model`` with its layer norms' memory set to ``norm_memory_s`` (ConvTasNetConfig.norm_memory_s): a new
    model sharing no tensors with it, on the same device and in the same mode; ``model`` itself if it has that
    memory already."""
    if model.config.norm_memory_s == norm_memory_s:
        return model
    other = ConvTasNet(replace(model.config, norm_memory_s=norm_memory_s)).to(model.device)
    other.load_state_dict(model.state_dict())
    return other.train(model.training)


def load_convtasnet(path: str | Path, norm_memory_s: float | None = None) -> ConvTasNet:
    """Load a checkpoint written by :func:`save_convtasnet` (on the CPU, in eval mode); ``norm_memory_s``: the
    layer norms' memory to run it with (None: the checkpoint's)."""

    def build(config: dict[str, Any]) -> ConvTasNet:
        c = ConvTasNetConfig(**config)
        return ConvTasNet(c if norm_memory_s is None else replace(c, norm_memory_s=norm_memory_s))

    return load_checkpoint(path, build, format_name=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION,
                           what="Conv-TasNet")


def default_checkpoint_path() -> Path:
    return Path(str(resources.files("rtsep.separate") / "weights" / DEFAULT_CHECKPOINT))


# ---------------------------------------------------------------------- the streaming separator
DEFAULT_STEP_S = 0.1


class StreamingCore(nn.Module):
    """A model's streaming step as one module (what :func:`trace_streaming_core` traces): (chunks, caches, stats)
    -> (overlap-added output, new caches, new statistics stacked (B, norms, 3))."""

    def __init__(self, model: ConvTasNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, caches: list[torch.Tensor], stats: torch.Tensor):
        out, pieces, new_stats = self.model._run(x, caches, stats)
        return out, pieces, torch.stack(new_stats, dim=1)


def trace_streaming_core(model: ConvTasNet, step_samples: int) -> torch.jit.ScriptModule:
    """``model``'s streaming step for chunks of ``step_samples``, traced with TorchScript: the batch runs as one
    graph in C++ instead of ~2,900 small calls from Python, each of which has to win the GIL back from the server's
    event loop (bench/RESULTS.md "16 live sessions with separation on"). Any batch size; the step is fixed. Exact:
    the same operations as the eager step (tests/unit/separate/test_convtasnet.py)."""
    import warnings

    states = [model.new_state() for _ in range(2)]
    caches = [torch.stack(pieces) for pieces in zip(*(s.caches for s in states), strict=True)]
    stats = torch.stack([s.stats for s in states])
    example = (torch.zeros(2, step_samples, device=model.device), caches, stats)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the step's frame count is fixed, as traced
        return torch.jit.trace(StreamingCore(model).eval(), example, check_trace=False)


def flat_parameters(model: nn.Module) -> torch.Tensor:
    """All of a model's parameters in one vector, in ``named_parameters()`` order (what :func:`stack_parameters`
    stacks: one copy per tick, not one per parameter)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def stack_parameters(models: Sequence[nn.Module], flats: Sequence[torch.Tensor] | None = None
                     ) -> dict[str, torch.Tensor]:
    """The models' parameters stacked on a first dimension (one row per model, in order), named as in
    ``named_parameters()``: the ``params`` of :meth:`ConvTasNet.stream` for a batch of sessions on these models.
    ``flats``: their :func:`flat_parameters`, if kept; the result's tensors are views of one (B, total) copy."""
    bank = torch.stack(list(flats) if flats is not None else [flat_parameters(m) for m in models])
    stacked, offset = {}, 0
    for name, p in models[0].named_parameters():
        stacked[name] = bank[:, offset : offset + p.numel()].view(len(models), *p.shape)
        offset += p.numel()
    return stacked


def low_latency_step_samples(config: ConvTasNetConfig, latency_s: float = 0.010) -> int:
    """The largest step (a multiple of the hop) whose step + look-ahead stays within ``latency_s``."""
    budget = int(latency_s * config.sample_rate_hz) - config.lookahead_samples
    if budget < config.hop_samples:
        raise ConfigError(f"no step of {config.window_samples}-sample windows fits a {latency_s * 1000:.0f} ms latency")
    return budget // config.hop_samples * config.hop_samples
class ConvTasNetSeparator(StreamingSeparator):
    """Serves a :class:`ConvTasNet` to many sessions. ``step_samples`` must be a multiple of the hop.

    Latency = step + look-ahead. The model's own algorithmic latency is its window (4 ms at 8 kHz: 2 ms hop +
    2 ms look-ahead); :func:`low_latency_step_samples` gives the step of the 10 ms operating point. The default
    step (:data:`DEFAULT_STEP_S`, 100 ms) is where one CPU core streams one session at RTF <= 0.1 (eager PyTorch
    pays a fixed cost per call; see bench/RESULTS.md "Separation" for RTF against step and batch).

    Per-session models: :meth:`adopt` hands one session a model of its own (e.g. adapted to its talkers,
    rtsep.separate.adapt). The switch happens at that session's next step, inside :meth:`process`: the new
    model's state is first warmed up on the session's last ``warmup_s`` of input, so that its output continues
    without a restart. Sessions on the shared model are batched together; each adopted model runs its own batch.
    """

    def __init__(self, model: ConvTasNet, step_samples: int | None = None, name: str = "convtasnet",
                 warmup_s: float = 4.0, traced: bool = False) -> None:
        """``traced``: the shared model's batches run through its TorchScript trace (:func:`trace_streaming_core`,
        made here, ~1 s), which the server's event loop slows far less than the eager step."""
        c = model.config
        hop = c.hop_samples
        if step_samples is None:
            step_samples = max(hop, round(DEFAULT_STEP_S * c.sample_rate_hz) // hop * hop)
        if step_samples < hop or step_samples % hop:
            raise ConfigError(f"step_samples must be a positive multiple of the hop ({hop}), got {step_samples}")
        self.model = model.eval()
        self.warmup_samples = max(1, round(warmup_s * c.sample_rate_hz / step_samples)) * step_samples
        # the adapted sessions of the last tick: their models and their parameters stacked (ConvTasNet.stream's
        # params), reused while the same sessions tick together
        self._stacked_key: tuple[int, ...] | None = None
        self._stacked_models: list[ConvTasNet] = []
        self._stacked: dict[str, torch.Tensor] = {}
        self._shared_flat: torch.Tensor | None = None  # the shared model's flat_parameters, made on first use
        self.traced = traced
        self._core = trace_streaming_core(self.model, step_samples) if traced else None
        self.spec = ModelSpec(
            name=name,
            sample_rate_hz=c.sample_rate_hz,
            step_samples=step_samples,
            lookahead_samples=c.lookahead_samples,
            num_outputs=c.num_sources,
        )

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_state(self) -> ConvTasNetState:
        return self.model.new_state()

    def adopt(self, state: ConvTasNetState, model: ConvTasNet) -> None:
        """From its next step on, the session of ``state`` is separated by ``model`` (same config as the shared
        one). Call it from the adaptation thread: the new model's warm-up on the session's recent input runs here,
        outside the shared batch; the switch in :meth:`process` only catches up the steps that came meanwhile."""
        if model.config != self.model.config:
            raise ConfigError("an adopted model must have the shared model's configuration")
        model = model.to(self.device).eval()
        fresh = model.new_state(self.device)
        recent, fed = state.extra.get("recent", (None, 0))  # (one reference, read at once: the batch thread swaps it)
        if recent is not None:
            with torch.inference_mode():
                model.stream(recent[None], [fresh])
        state.extra["pending_model"] = (model, fresh, fed)

    def process(self, chunks: torch.Tensor, states: Sequence[ConvTasNetState]) -> torch.Tensor:
        self.validate_batch(chunks, states)
        chunks = chunks.to(self.device, torch.float32)
        with torch.inference_mode():
            shared: list[int] = []
            adapted: list[int] = []
            for i, state in enumerate(states):
                if "pending_model" in state.extra:
                    self._switch(state, *state.extra.pop("pending_model"))
                (adapted if "model" in state.extra else shared).append(i)
            if not adapted:
                out = self.model.stream(chunks, states, core=self._core)
            elif not shared or not self.traced:  # one eager call, each session on its own weights (or the shared ones)
                out = self._stream_adapted(chunks, states)
            else:  # the shared sessions through the trace, the adapted ones in one stacked eager call
                out = chunks.new_empty(len(states), self.spec.num_outputs, chunks.shape[1])
                out[shared] = self.model.stream(chunks[shared], [states[i] for i in shared], core=self._core)
                out[adapted] = self._stream_adapted(chunks[adapted], [states[i] for i in adapted])
            for i, state in enumerate(states):  # the input tail that a model switch warms up on
                recent, fed = state.extra.get("recent", (None, 0))
                joined = chunks[i] if recent is None else torch.cat((recent, chunks[i]))
                state.extra["recent"] = (joined[-self.warmup_samples :], fed + chunks.shape[1])
            return out

    def _stream_adapted(self, chunks: torch.Tensor, states: Sequence[ConvTasNetState]) -> torch.Tensor:
        """Sessions each on its own model (an adapted one, or the shared one), in one call: their weights stacked
        and passed to the shared model's streaming (ConvTasNet.stream's ``params``), so that N adapted sessions
        cost about one batch rather than N calls. The shared model's own weights are only read, never swapped."""
        models = [state.extra.get("model", self.model) for state in states]
        if len(models) == 1:
            return models[0].stream(chunks, states)
        key = tuple(id(m) for m in models)
        if self._stacked_key != key:  # the same sessions tick after tick: stack their weights once
            flats = []
            for state, model in zip(states, models, strict=True):
                if model is self.model:
                    if self._shared_flat is None:
                        self._shared_flat = flat_parameters(self.model)
                    flats.append(self._shared_flat)
                    continue
                if state.extra.get("flat_model") is not model:  # each adopted model flattened once
                    state.extra["flat"], state.extra["flat_model"] = flat_parameters(model), model
                flats.append(state.extra["flat"])
            self._stacked = stack_parameters(models, flats)
            self._stacked_key, self._stacked_models = key, models  # (held: no id is reused while cached)
        return self.model.stream(chunks, states, self._stacked)

    def _switch(self, state: ConvTasNetState, model: ConvTasNet, fresh: ConvTasNetState, fed_at: int) -> None:
        recent, fed = state.extra.get("recent", (None, 0))
        behind = fed - fed_at  # input the session took on the old model since the warm-up's snapshot
        if behind > 0 and recent is not None and behind <= recent.shape[0]:
            model.stream(recent[None, recent.shape[0] - behind:], [fresh])
        elif behind > 0:  # (more than the kept tail: warm up on that tail instead)
            fresh = model.new_state(self.device)
            if recent is not None:
                model.stream(recent[None], [fresh])
        state.caches, state.stats = fresh.caches, fresh.stats
        state.extra["model"] = model

    def to(self, device: torch.device | str) -> ConvTasNetSeparator:
        self.model.to(device)
        self._stacked_key, self._stacked_models, self._stacked, self._shared_flat = None, [], {}, None
        if self.traced:  # (a trace holds its device's constants: traced again there)
            self._core = trace_streaming_core(self.model, self.spec.step_samples)
        return self


def create_separator(checkpoint: str | Path | None = None, step_samples: int | None = None,
                     norm_memory_s: float | None = None, step_s: float | None = None,
                     traced: bool = False) -> ConvTasNetSeparator:
    """Registry factory: ``create_separator("convtasnet", checkpoint=..., step_samples=..., norm_memory_s=...)``.
    Without a checkpoint, the one shipped in the package is loaded; ``norm_memory_s`` as in load_convtasnet.
    ``step_s`` (when ``step_samples`` is not given): the step in seconds, rounded down to a multiple of the hop
    (at least one hop)."""
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
    model = load_convtasnet(path, norm_memory_s)
    if step_samples is None and step_s is not None:
        hop = model.config.hop_samples
        step_samples = max(hop, int(step_s * model.config.sample_rate_hz + 1e-6) // hop * hop)
    return ConvTasNetSeparator(model, step_samples=step_samples, traced=traced)


__all__ = [
    "ConvTasNet",
    "ConvTasNetConfig",
    "ConvTasNetSeparator",
    "ConvTasNetState",
    "CumulativeLayerNorm",
    "create_separator",
    "default_checkpoint_path",
    "load_convtasnet",
    "low_latency_step_samples",
    "save_convtasnet",
]
