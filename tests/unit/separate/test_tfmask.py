"""Causal TF-mask separator: streaming equals one causal forward, causality, batching, checkpoints, the API."""

import pytest
import torch

from rtsep.errors import ConfigError, ModelLoadError
from rtsep.separate.base import available_separators, create_separator
from rtsep.separate.tfmask import (
    TFMaskConfig,
    TFMaskNet,
    TFMaskSeparator,
    load_tfmask,
    read_tfmask_metadata,
    save_tfmask,
)
from tests.streaming import perturb, stream, streaming_error

SMALL = TFMaskConfig(window_samples=32, hidden=24, layers=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TFMaskNet(SMALL).eval()
    return perturb(m, 0.1)  # non-trivial norm parameters, so that the statistics matter


@pytest.mark.parametrize("sizes", [[16], [48], [800], [16, 32, 112, 1600, 48]])
def test_streaming_equals_offline(model, sizes):
    torch.manual_seed(1)
    x = 0.3 * torch.randn(2, 4800)
    assert streaming_error(model, x, sizes, SMALL.lookahead_samples) <= 1e-4


def test_unit_mask_reconstructs_the_input():
    # the analysis and synthesis windows overlap-add to one: a model whose masks are 1 returns its input
    m = TFMaskNet(SMALL).eval()
    with torch.no_grad():
        m.mask.weight.zero_()
        bias = torch.zeros(SMALL.num_sources, SMALL.bins, 2)
        bias[..., 0] = 20.0  # tanh(20) == 1 in float32
        m.mask.bias.copy_(bias.flatten())
        x = 0.3 * torch.randn(1, 1600)
        out = m(x)
    look = SMALL.lookahead_samples
    assert torch.allclose(out[0, 0, :-look], x[0, :-look], atol=1e-5)
    assert torch.allclose(out[0, 1, :-look], x[0, :-look], atol=1e-5)


def test_sessions_in_one_batch_do_not_interfere(model):
    torch.manual_seed(2)
    a, b = 0.3 * torch.randn(1, 1600), 0.3 * torch.randn(1, 1600)
    together = stream(model, torch.cat((a, b)), [64])
    assert torch.allclose(together[:1], stream(model, a, [64]), atol=1e-6)
    assert torch.allclose(together[1:], stream(model, b, [64]), atol=1e-6)


def test_causal(model):
    torch.manual_seed(3)
    x = 0.3 * torch.randn(1, 3200)
    y = x.clone()
    cut = 1600
    y[:, cut:] = torch.randn(1, 1600)
    with torch.no_grad():
        ox, oy = model(x), model(y)
    look = SMALL.lookahead_samples
    # offline output sample n depends on input samples <= n + lookahead, never later ones
    assert torch.equal(ox[..., : cut - look], oy[..., : cut - look])
    assert not torch.allclose(ox[..., cut - look :], oy[..., cut - look :])
    sx, sy = stream(model, x, [80]), stream(model, y, [80])
    assert torch.equal(sx[..., :cut], sy[..., :cut])
    assert not torch.allclose(sx[..., cut:], sy[..., cut:])


def test_checkpoint_roundtrip(tmp_path, model):
    path = tmp_path / "tf.safetensors"
    save_tfmask(model, path, {"step": 7})
    meta = read_tfmask_metadata(path)
    assert meta["metadata"] == {"step": 7} and meta["config"]["window_samples"] == 32
    loaded = load_tfmask(path)
    x = torch.randn(1, 800)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(ModelLoadError):
        load_tfmask(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError):
        load_tfmask(tmp_path / "junk.safetensors")


def test_separator_spec_process_and_registry(tmp_path, model):
    default = TFMaskSeparator(TFMaskNet(TFMaskConfig()))
    # the live operating point: one 8 ms hop + 8 ms look-ahead at 8 kHz
    assert default.spec.step_samples == 64 and default.spec.algorithmic_latency_s == pytest.approx(0.016)
    sep = TFMaskSeparator(model, step_samples=2 * SMALL.hop_samples)
    states = [sep.new_state() for _ in range(3)]
    out = sep.process(torch.zeros(3, sep.spec.step_samples), states)
    assert out.shape == (3, 2, sep.spec.step_samples) and out.dtype == torch.float32
    with pytest.raises(ValueError):
        sep.process(torch.zeros(3, sep.spec.step_samples + 1), states)
    with pytest.raises(ConfigError):
        TFMaskSeparator(model, step_samples=SMALL.hop_samples + 1)
    assert "tfmask" in available_separators()
    with pytest.raises(ConfigError):
        create_separator("tfmask")
    path = tmp_path / "tf.safetensors"
    save_tfmask(model, path)
    made = create_separator("tfmask", checkpoint=path, step_samples=64)
    assert isinstance(made, TFMaskSeparator) and made.spec.step_samples == 64


def test_config_validation():
    with pytest.raises(ConfigError):
        TFMaskConfig(window_samples=31)
    with pytest.raises(ConfigError):
        TFMaskConfig(hidden=0)
