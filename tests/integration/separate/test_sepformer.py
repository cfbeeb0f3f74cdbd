"""SepFormer from a local directory in SpeechBrain's on-disk format (a randomly initialised, small model written
here; nothing is downloaded), and the sliding-window channel alignment."""

import numpy as np
import pytest
import torch

from rtsep.errors import ConfigError, ModelLoadError
from rtsep.separate.base import create_separator
from rtsep.separate.sepformer import SlidingWindowSeparator

HYPERPARAMS = """\
sample_rate: 8000
num_spks: 2

Encoder: !new:speechbrain.lobes.models.dual_path.Encoder
  kernel_size: 16
  out_channels: 32

SBtfintra: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
  num_layers: 1
  d_model: 32
  nhead: 2
  d_ffn: 64
  dropout: 0
  use_positional_encoding: true
  norm_before: true

SBtfinter: !new:speechbrain.lobes.models.dual_path.SBTransformerBlock
  num_layers: 1
  d_model: 32
  nhead: 2
  d_ffn: 64
  dropout: 0
  use_positional_encoding: true
  norm_before: true

MaskNet: !new:speechbrain.lobes.models.dual_path.Dual_Path_Model
  num_spks: !ref <num_spks>
  in_channels: 32
  out_channels: 32
  num_layers: 1
  K: 50
  intra_model: !ref <SBtfintra>
  inter_model: !ref <SBtfinter>
  norm: ln
  linear_layer_after_inter_intra: false
  skip_around_intra: true

Decoder: !new:speechbrain.lobes.models.dual_path.Decoder
  in_channels: 32
  out_channels: 1
  kernel_size: 16
  stride: 8
  bias: false

modules:
  encoder: !ref <Encoder>
  decoder: !ref <Decoder>
  masknet: !ref <MaskNet>

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
  loadables:
    encoder: !ref <Encoder>
    masknet: !ref <MaskNet>
    decoder: !ref <Decoder>
"""


@pytest.fixture(scope="module")
def sepformer_dir(tmp_path_factory):
    from hyperpyyaml import load_hyperpyyaml

    root = tmp_path_factory.mktemp("sepformer")
    (root / "hyperparams.yaml").write_text(HYPERPARAMS)
    torch.manual_seed(0)
    hp = load_hyperpyyaml(HYPERPARAMS)
    for name, key in (("encoder", "Encoder"), ("masknet", "MaskNet"), ("decoder", "Decoder")):
        torch.save(hp[key].state_dict(), root / f"{name}.ckpt")
    return root, hp


def reference(hp, window: torch.Tensor) -> torch.Tensor:
    """SepFormer's forward written out from the modules (B, W) -> (B, C, W)."""
    with torch.no_grad():
        for m in (hp["Encoder"], hp["MaskNet"], hp["Decoder"]):
            m.eval()
        w = hp["Encoder"](window)
        masks = hp["MaskNet"](w)
        outs = [hp["Decoder"](w * masks[i]) for i in range(2)]
        out = torch.stack(outs, dim=1)
        return torch.nn.functional.pad(out, (0, window.shape[1] - out.shape[2]))


def test_loads_from_local_dir_and_runs_windowed(sepformer_dir):
    root, hp = sepformer_dir
    sep = create_separator("sepformer", separator_dir=root, window_s=0.3, hop_s=0.1)
    spec = sep.spec
    assert spec.sample_rate_hz == 8000 and spec.num_outputs == 2
    assert spec.step_samples == 800 and spec.lookahead_samples == 800
    assert spec.algorithmic_latency_s == pytest.approx(0.2)
    rng = np.random.default_rng(0)
    x = torch.from_numpy((0.1 * rng.standard_normal(8000)).astype(np.float32))
    states = [sep.new_state()]
    outs = [sep.process(x[None, i : i + 800], states) for i in range(0, 8000, 800)]
    got = torch.cat(outs, dim=-1)[0]
    assert got.shape == (2, 8000)
    # the last call's output is the window's middle hop, up to the channel order and level alignment
    window = x[-2400:][None]
    ref = reference(hp, window)[0, :, 800:1600]
    last = outs[-1][0]
    corr = [float(torch.nn.functional.cosine_similarity(last[a], ref[b], dim=0)) for a in range(2) for b in range(2)]
    assert max(corr) > 0.999


def test_missing_or_broken_dir(tmp_path, sepformer_dir):
    with pytest.raises(ConfigError):
        create_separator("sepformer")
    with pytest.raises(ModelLoadError):
        create_separator("sepformer", separator_dir=tmp_path)
    root, _ = sepformer_dir
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("hyperparams.yaml", "encoder.ckpt", "decoder.ckpt"):
        (broken / name).write_bytes((root / name).read_bytes())
    (broken / "masknet.ckpt").write_bytes(b"garbage")
    with pytest.raises(ModelLoadError):
        create_separator("sepformer", separator_dir=broken)


class ShufflingOracle:
    """A stand-in 'separator' that knows the true sources and returns them in a random order per window,
    scaled by a random gain: the adapter must keep the channels consistent."""

    def __init__(self, sources: torch.Tensor, hop: int, window: int) -> None:
        self.sources, self.hop, self.window, self.calls = sources, hop, window, 0
        self.rng = np.random.default_rng(1)

    def separate_batch(self, mix: torch.Tensor) -> torch.Tensor:
        end = (self.calls + 1) * self.hop
        self.calls += 1
        padded = torch.nn.functional.pad(self.sources, (self.window, 0))
        win = padded[:, end : end + self.window]
        order = list(self.rng.permutation(2))
        return (win[order] * float(self.rng.uniform(0.5, 2.0))).T[None]


def test_channels_stay_aligned_across_windows():
    t = torch.arange(16000) / 8000
    sources = torch.stack([torch.sin(2 * torch.pi * 220 * t), torch.sign(torch.sin(2 * torch.pi * 3 * t)) * 0.5])
    hop, window = 400, 1200
    sep = SlidingWindowSeparator(ShufflingOracle(sources, hop, window), sample_rate_hz=8000, num_sources=2,
                                 window_samples=window, hop_samples=hop)
    states = [sep.new_state()]
    mix = sources.sum(0)
    out = torch.cat([sep.process(mix[None, i : i + hop], states) for i in range(0, 16000, hop)], dim=-1)[0]
    look = sep.spec.lookahead_samples
    est = out[:, look + hop :]  # drop the start (negative times and the first, unaligned window)
    ref = sources[:, hop : 16000 - look]
    cos = torch.nn.functional.cosine_similarity
    same = float(cos(est[0], ref[0], dim=0) + cos(est[1], ref[1], dim=0))
    swapped = float(cos(est[0], ref[1], dim=0) + cos(est[1], ref[0], dim=0))
    assert max(same, swapped) > 1.98  # one consistent order for the whole stream
    with pytest.raises(ConfigError):
        SlidingWindowSeparator(ShufflingOracle(sources, hop, window), sample_rate_hz=8000, num_sources=2,
                               window_samples=600, hop_samples=400)


def test_without_speechbrain_the_error_names_the_extra(tmp_path, monkeypatch):
    import sys

    from rtsep.separate.sepformer import REQUIRED_FILES, load_sepformer_dir

    for name in REQUIRED_FILES:
        (tmp_path / name).write_text("")
    monkeypatch.setitem(sys.modules, "speechbrain.inference.separation", None)  # as if not installed
    with pytest.raises(ModelLoadError, match=r"pip install 'rtsep\[sepformer\]'"):
        load_sepformer_dir(tmp_path)
