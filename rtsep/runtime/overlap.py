"""The overlapped-speech detector: a small CNN + bidirectional GRU on log-mel frames (10 ms) that tells
whether nobody, one talker, or two or more talkers speak (classes 0 / 1 / 2+), every 20 ms.

rtsep trains it itself (``python -m training.overlap``, docs/models.md "Overlapped-speech detector") on
synthetic meetings of the real-voice corpus' *train* actors; the weights ship in the package
(``rtsep/diarize/weights/overlap_8k.safetensors``, a safetensors file whose metadata holds the model's config).
The detector works at 8 kHz (the corpus' rate): other rates are resampled. A session's audio is scored in
windows of ``window_s`` (what the model was trained on) that overlap by half; the frame probabilities of the
windows are averaged with a triangular weight, so the result does not depend on where a window starts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rtsep.errors import ConfigError

log = logging.getLogger(__name__)

MODEL_RATE_HZ = 8000
DEFAULT_WEIGHTS = "overlap_8k.safetensors"
FORMAT = "rtsep-overlap"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class OverlapNetConfig:
    sample_rate_hz: int = MODEL_RATE_HZ
    n_fft: int = 256
    win_samples: int = 200  # 25 ms
    hop_samples: int = 80  # 10 ms: one output frame
    n_mels: int = 40
    f_min_hz: float = 50.0
    f_max_hz: float = 3800.0
    channels: int = 16
    hidden: int = 64
    classes: int = 3  # 0, 1, 2+ talkers
    time_stride: int = 2  # output frames per feature frames: 20 ms
    window_s: float = 4.0  # the length of the training segments, and of the inference windows

    @property
    def window_samples(self) -> int:
        return round(self.window_s * self.sample_rate_hz)

    @property
    def frame_samples(self) -> int:
        """Samples (at ``sample_rate_hz``) per output frame."""
        return self.hop_samples * self.time_stride

    @property
    def frame_s(self) -> float:
        return self.frame_samples / self.sample_rate_hz


def mel_filterbank(config: OverlapNetConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale."""
    def mel(f: np.ndarray | float) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)

    def hz(m: np.ndarray) -> np.ndarray:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, config.sample_rate_hz / 2, config.n_fft // 2 + 1)
    edges = hz(np.linspace(mel(config.f_min_hz), mel(config.f_max_hz), config.n_mels + 2))
    bank = np.zeros((config.n_mels, freqs.size))
    for m in range(config.n_mels):
        lo, centre, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (centre - lo)
        down = (hi - freqs) / (hi - centre)
        bank[m] = np.maximum(0.0, np.minimum(up, down))
    return bank.astype(np.float32)


class OverlapNet(nn.Module):
    """(batch, samples) audio at 8 kHz -> (batch, frames, classes) logits, one frame per ``frame_samples``
    (frame i covers samples [i * frame_samples, (i + 1) * frame_samples)); ``samples`` a multiple of it."""

    def __init__(self, config: OverlapNetConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or OverlapNetConfig()
        self.register_buffer("mel", torch.from_numpy(mel_filterbank(c)), persistent=False)
        self.register_buffer("window", torch.hann_window(c.win_samples), persistent=False)
        # strided convolutions (cheaper than pooling on CPU): mels / 4, frames / time_stride
        self.conv = nn.Sequential(
            nn.Conv2d(1, c.channels, 3, stride=(2, 1), padding=1), nn.ReLU(),
            nn.Conv2d(c.channels, 2 * c.channels, 3, stride=(2, c.time_stride), padding=1), nn.ReLU(),
        )
        self.project = nn.Linear(2 * c.channels * (c.n_mels // 4), c.hidden)
        self.gru = nn.GRU(c.hidden, c.hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * c.hidden, c.classes)

    def features(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, n_mels, frames) log-mel, each band's mean over the segment removed (so
        the level and the channel's colour do not matter)."""
        c = self.config
        frames = audio.shape[-1] // c.hop_samples
        spec = torch.stft(audio, c.n_fft, c.hop_samples, c.win_samples, self.window, center=True,
                          pad_mode="constant", return_complex=True)[..., :frames]
        power = spec.real**2 + spec.imag**2
        logmel = torch.log(torch.matmul(self.mel, power) + 1e-8)
        return logmel - logmel.mean(dim=-1, keepdim=True)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.features(audio).unsqueeze(1)  # (B, 1, mels, T)
        x = self.conv(x)  # (B, C, mels / 4, T)
        b, ch, f, t = x.shape
        x = torch.relu(self.project(x.reshape(b, ch * f, t).transpose(1, 2)))  # (B, T, hidden)
        x, _ = self.gru(x)
        return self.head(x)


def save_overlap_net(model: OverlapNet, path: str | Path, metadata: dict | None = None) -> None:
    """Weights + the model's config (and free-form metadata: the recipe, the step, validation figures) as a
    safetensors file."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "config": json.dumps(asdict(model.config)),
              "metadata": json.dumps(metadata or {})}
    save_file(tensors, str(path), metadata=header)


def default_weights_path() -> Path:
    return Path(str(resources.files("rtsep.diarize") / "weights" / DEFAULT_WEIGHTS))


def load_overlap_net(path: str | Path | None = None) -> tuple[OverlapNet, dict]:
    """The detector (eval mode, CPU) and its metadata, from ``path`` or the shipped weights."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise ConfigError(f"overlap detector weights not found: {path} (python -m training.overlap writes them)")
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
    if header.get("format") != FORMAT:
        raise ConfigError(f"{path} is not an rtsep overlap-detector checkpoint (format {header.get('format')!r})")
    if int(header.get("version", "0")) > FORMAT_VERSION:
        raise ConfigError(f"{path}: checkpoint version {header['version']} is newer than this rtsep reads")
    config = OverlapNetConfig(**json.loads(header["config"]))
    model = OverlapNet(config)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), json.loads(header.get("metadata", "{}"))


class OverlapDetector:
    """A loaded detector: a whole recording in, per-frame probabilities of 0 / 1 / 2+ talkers out. Thread-safe
    for concurrent calls (read-only forwards); blocking: call it off the event loop."""

    def __init__(self, model: OverlapNet | None = None, metadata: dict | None = None, device: str = "cpu",
                 max_batch: int = 32) -> None:
        if model is None:
            model, metadata = load_overlap_net()
        self.model = model.to(device).eval()
        self.metadata = metadata or {}
        self.device = torch.device(device)
        self.max_batch = max_batch

    @classmethod
    def load(cls, path: str | Path | None = None, device: str = "cpu") -> OverlapDetector:
        model, metadata = load_overlap_net(path)
        return cls(model, metadata, device)

    @property
    def frame_s(self) -> float:
        return self.model.config.frame_s

    def probabilities(self, audio: np.ndarray, rate_hz: int) -> np.ndarray:
        """(frames, classes) probabilities for ``audio`` (mono float) at ``rate_hz``; frame i covers
        [i * frame_s, (i + 1) * frame_s) seconds."""
        c = self.model.config
        audio = np.asarray(audio, np.float32).reshape(-1)
        if rate_hz != c.sample_rate_hz:
            from math import gcd

            from scipy.signal import resample_poly

            g = gcd(int(rate_hz), c.sample_rate_hz)
            audio = resample_poly(audio, c.sample_rate_hz // g, int(rate_hz) // g).astype(np.float32)
        step = c.frame_samples
        frames = audio.size // step
        if frames == 0:
            return np.zeros((0, c.classes), np.float32)
        window = c.window_samples
        hop = window // 2
        window_frames = window // step
        starts = list(range(0, max(1, audio.size - window + hop), hop)) if audio.size > window else [0]
        padded = np.zeros(starts[-1] + window, np.float32)
        padded[: audio.size] = audio
        # triangular weights, never zero (the first and last frames of the recording have one window each)
        weight = 1.0 - np.abs(np.linspace(-1.0, 1.0, window_frames)) + 1e-3
        total = np.zeros((len(starts) * hop // step + window_frames, c.classes), np.float64)
        norm = np.zeros(total.shape[0], np.float64)
        with torch.inference_mode():
            for i in range(0, len(starts), self.max_batch):
                chunk = starts[i : i + self.max_batch]
                batch = torch.from_numpy(np.stack([padded[s : s + window] for s in chunk])).to(self.device)
                probs = torch.softmax(self.model(batch).float(), dim=-1).cpu().numpy()
                for s, p in zip(chunk, probs, strict=True):
                    f0 = s // step
                    total[f0 : f0 + window_frames] += p * weight[:, None]
                    norm[f0 : f0 + window_frames] += weight
        return (total[:frames] / norm[:frames, None]).astype(np.float32)

    def overlap_probability(self, audio: np.ndarray, rate_hz: int) -> np.ndarray:
        """(frames,) probability that two or more talkers speak."""
        probs = self.probabilities(audio, rate_hz)
        return probs[:, 2:].sum(axis=1) if probs.size else np.zeros(0, np.float32)
