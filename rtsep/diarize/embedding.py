"""Speaker embeddings from resemblyzer's GE2E voice encoder (weights ship inside the package).

The mel front end is re-done in torch (same filterbank and framing as resemblyzer's librosa code) so
that a batch of windows from many sessions is embedded in one forward on any device.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rtsep.errors import ModelLoadError

EMBEDDING_SAMPLE_RATE_HZ = 16000
MEL_FFT_SAMPLES = 400  # 25 ms
MEL_HOP_SAMPLES = 160  # 10 ms
MEL_CHANNELS = 40
EMBEDDING_DIM = 256
TARGET_DBFS = -30.0  # resemblyzer normalises utterances to this level before embedding


def window_samples_for_frames(num_frames: int) -> int:
    """Samples that give exactly ``num_frames`` mel frames (no centre padding)."""
    return MEL_FFT_SAMPLES + (num_frames - 1) * MEL_HOP_SAMPLES


class MelFrontend(nn.Module):
    """Power mel spectrogram, 40 bands, 25 ms Hann window, 10 ms hop (resemblyzer's features)."""

    def __init__(self) -> None:
        super().__init__()
        import librosa

        fb = librosa.filters.mel(sr=EMBEDDING_SAMPLE_RATE_HZ, n_fft=MEL_FFT_SAMPLES, n_mels=MEL_CHANNELS)
        self.register_buffer("filterbank", torch.from_numpy(fb.astype(np.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(MEL_FFT_SAMPLES, periodic=True), persistent=False)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, frames, 40)."""
        spec = torch.stft(
            samples, MEL_FFT_SAMPLES, MEL_HOP_SAMPLES, window=self.window, center=False, return_complex=True
        )
        power = spec.real**2 + spec.imag**2  # (B, 201, frames)
        return torch.matmul(self.filterbank, power).transpose(1, 2)


class SpeakerEncoder(nn.Module):
    """GE2E LSTM encoder: (B, T) samples at 16 kHz -> (B, 256) unit-norm embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = MelFrontend()
        self.lstm = nn.LSTM(MEL_CHANNELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, EMBEDDING_DIM)

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        samples = normalize_level(samples)
        _, (hidden, _) = self.lstm(self.mel(samples))
        raw = torch.relu(self.linear(hidden[-1]))
        return raw / torch.linalg.vector_norm(raw, dim=1, keepdim=True).clamp_min(1e-8)


def normalize_level(samples: torch.Tensor) -> torch.Tensor:
    """Raise each window's RMS level to -30 dBFS (never lower it), as resemblyzer's preprocessing does."""
    rms = torch.sqrt(torch.mean(samples**2, dim=1, keepdim=True)).clamp_min(1e-6)
    gain = (10 ** (TARGET_DBFS / 20)) / rms
    return samples * torch.clamp(gain, min=1.0, max=10 ** (60 / 20))


def default_weights_path() -> Path:
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the resemblyzer package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


def load_speaker_encoder(weights_path: Path | None = None) -> SpeakerEncoder:
    path = Path(weights_path) if weights_path else default_weights_path()
    if not path.is_file():
        raise ModelLoadError(f"resemblyzer weights not found at {path}")
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a load error
        raise ModelLoadError(f"cannot load resemblyzer weights {path}: {exc}") from exc
    state = {k: v for k, v in checkpoint["model_state"].items() if k.startswith(("lstm.", "linear."))}
    encoder = SpeakerEncoder()
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.startswith("mel.")]
    if missing or unexpected:
        raise ModelLoadError(f"resemblyzer checkpoint mismatch: missing {missing}, unexpected {unexpected}")
    return encoder.eval()
