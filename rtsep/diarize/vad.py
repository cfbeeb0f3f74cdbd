"""silero-vad (16 kHz) as a batched torch module with explicit per-stream state.

The weights are those of the package's default 16 kHz model (``silero_vad.jit`` inside the ``silero-vad``
package), copied into this plain module. The package's JIT model keeps its recurrent state inside the
module, which cannot serve several sessions in one batch; this module takes the state as an argument and
returns the new one, so the runtime can stack the states of many sessions into one forward.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from rtsep.errors import ModelLoadError

VAD_SAMPLE_RATE_HZ = 16000
VAD_FRAME_SAMPLES = 512  # 32 ms per probability
VAD_CONTEXT_SAMPLES = 64  # each frame also sees the 64 samples before it
VAD_HIDDEN = 128


class SileroVadNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def front_end(self, frames: torch.Tensor) -> torch.Tensor:
        """The stateless part: ``frames`` (N, 64 + 512) -> features (N, 128). Any number of frames of any
        streams at once (it does not depend on the recurrent state)."""
        x = F.pad(frames, (0, 64), mode="reflect").unsqueeze(1)
        x = self.stft_conv(x)
        x = torch.sqrt(x[:, :129] ** 2 + x[:, 129:] ** 2)
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return F.relu(self.conv4(x)).squeeze(-1)

    def decode(self, features: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The recurrent part for one frame per stream: features (B, 128), state (2, B, 128) -> prob (B,), state."""
        h, c = self.lstm_cell(features, (state[0], state[1]))
        prob = torch.sigmoid(F.linear(F.relu(h), self.final_conv.weight[:, :, 0], self.final_conv.bias)).squeeze(1)
        return prob, torch.stack([h, c])

    def forward_frame(
        self, frame: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame per stream: ``frame`` (B, 64 + 512), ``state`` (2, B, 128) -> prob (B,), state."""
        return self.decode(self.front_end(frame), state)

    def forward(
        self, samples: torch.Tensor, context: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A step of several frames per stream.

        ``samples`` (B, n * 512), ``context`` (B, 64) = the last 64 samples before them, ``state`` (2, B, 128).
        Returns probabilities (B, n), the new context and the new state. The convolutional front end runs
        once over all B * n frames; only the LSTM cell loops over the n frames.
        """
        batch = samples.shape[0]
        n_frames = samples.shape[1] // VAD_FRAME_SAMPLES
        padded = torch.cat([context, samples[:, : n_frames * VAD_FRAME_SAMPLES]], dim=1)
        # (B, n, 64 + 512): frame i = padded[i*512 : i*512 + 576]
        frames = padded.unfold(1, VAD_CONTEXT_SAMPLES + VAD_FRAME_SAMPLES, VAD_FRAME_SAMPLES)
        features = self.front_end(frames.reshape(batch * n_frames, -1)).reshape(batch, n_frames, -1)
        h, c = state[0], state[1]
        hs = []
        for i in range(n_frames):
            h, c = self.lstm_cell(features[:, i], (h, c))
            hs.append(h)
        hidden = torch.stack(hs, dim=1)  # (B, n, 128)
        probs = torch.sigmoid(F.linear(F.relu(hidden), self.final_conv.weight[:, :, 0], self.final_conv.bias))
        new_context = torch.cat([context, samples], dim=1)[:, -VAD_CONTEXT_SAMPLES:]
        return probs.squeeze(-1), new_context, torch.stack([h, c])


@dataclass
class VadState:
    """Per-stream state, kept by the session and passed to the runtime with each step; the runtime
    updates it in place, in step order.

    Besides the recurrent state of the VAD it holds the stream's most recent *speech* (the samples of the
    frames the VAD called speech, silence cut out), from which the speaker embedding is computed.
    """

    context: np.ndarray  # (64,) float32
    hidden: np.ndarray  # (2, 128) float32
    speech: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # most recent speech, oldest first
    last_speech_sample: int = -1  # stream position just after the newest speech frame (-1: none yet)

    @classmethod
    def initial(cls) -> VadState:
        return cls(np.zeros(VAD_CONTEXT_SAMPLES, np.float32), np.zeros((2, VAD_HIDDEN), np.float32))

    def add_speech(self, samples: np.ndarray, capacity: int) -> None:
        """Append speech samples, keeping the newest ``capacity``."""
        if samples.size:
            self.speech = np.concatenate([self.speech, samples.astype(np.float32, copy=False)])[-capacity:]

    def clear_speech(self) -> None:
        self.speech = np.zeros(0, np.float32)


# parameter names of this module -> names inside the package's TorchScript 16 kHz model
_JIT_NAMES = {
    "stft_conv.weight": "stft.forward_basis_buffer",
    **{f"conv{i + 1}.{p}": f"encoder.{i}.reparam_conv.{p}" for i in range(4) for p in ("weight", "bias")},
    **{f"lstm_cell.{p}": f"decoder.rnn.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")},
    "final_conv.weight": "decoder.decoder.2.weight",
    "final_conv.bias": "decoder.decoder.2.bias",
}


def default_weights_path() -> Path:
    """The JIT file inside the installed silero-vad package (found without importing the package,
    whose import changes torch's global thread count)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the silero-vad package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.jit"


def load_silero_vad(weights_path: Path | None = None) -> SileroVadNet:
    path = Path(weights_path) if weights_path else default_weights_path()
    if not path.is_file():
        raise ModelLoadError(f"silero-vad weights not found at {path}")
    try:
        jit = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        raise ModelLoadError(f"cannot load silero-vad model {path}: {exc}") from exc
    source = {**dict(jit._model.named_parameters()), **dict(jit._model.named_buffers())}
    net = SileroVadNet()
    net.load_state_dict({name: source[jit_name].detach().clone() for name, jit_name in _JIT_NAMES.items()})
    return net.eval()
