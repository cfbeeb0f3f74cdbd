"""Causal Conv-TasNet: streaming equals one causal forward, causality, checkpoints, the separator API."""

import numpy as np
import pytest
import torch

from rtsep.errors import ConfigError, ModelLoadError
from rtsep.separate.base import (
    available_separators,
    create_separator,
    register_separator,
)
from rtsep.separate.convtasnet import (
    ConvTasNet,
    ConvTasNetConfig,
    ConvTasNetSeparator,
    CumulativeLayerNorm,
    load_convtasnet,
    low_latency_step_samples,
    read_checkpoint_metadata,
    save_convtasnet,
)
from tests.streaming import perturb, stream, streaming_error

SMALL = ConvTasNetConfig(encoder_filters=16, window_samples=16, bottleneck_channels=8, hidden_channels=16,
                         blocks_per_repeat=4, repeats=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = ConvTasNet(SMALL).eval()
    return perturb(m, 0.05)  # non-trivial norm parameters, so that the statistics matter


@pytest.mark.parametrize("sizes", [[8], [24], [400], [8, 16, 56, 800, 24]])
def test_streaming_equals_offline(model, sizes):
    torch.manual_seed(1)
    x = 0.3 * torch.randn(2, 3200)
    assert streaming_error(model, x, sizes, SMALL.lookahead_samples) <= 1e-4


def test_sessions_in_one_batch_do_not_interfere(model):
    torch.manual_seed(2)
    a, b = 0.3 * torch.randn(1, 800), 0.3 * torch.randn(1, 800)
    alone = stream(model, a, [80])
    sa, sb = model.new_state(), model.new_state()
    outs = []
    with torch.no_grad():
        model.stream(b[:, :80], [sb])  # b starts earlier: the batched states are at different positions
        for pos in range(0, 800, 80):
            both = model.stream(torch.cat([a[:, pos : pos + 80], b[:, (pos + 80) % 800 :][:, :80]]), [sa, sb])
            outs.append(both[:1])
    assert (torch.cat(outs, -1) - alone).abs().max().item() <= 1e-5


def test_causal(model):
    torch.manual_seed(3)
    x = 0.3 * torch.randn(1, 2400)
    y = x.clone()
    cut = 1200
    y[:, cut:] = torch.randn(1, 1200)
    with torch.no_grad():
        ox, oy = model(x), model(y)
    look = SMALL.lookahead_samples
    # offline output sample n depends on input samples <= n + lookahead, never later ones
    assert torch.equal(ox[..., : cut - look], oy[..., : cut - look])
    assert not torch.allclose(ox[..., cut - look :], oy[..., cut - look :])
    # streaming: everything emitted before the changed samples arrived is identical
    sx, sy = stream(model, x, [40]), stream(model, y, [40])
    assert torch.equal(sx[..., :cut], sy[..., :cut])
    assert not torch.allclose(sx[..., cut:], sy[..., cut:])


def test_cumulative_layer_norm_matches_definition():
    torch.manual_seed(4)
    norm = CumulativeLayerNorm(5)
    x = torch.randn(2, 7, 5)
    y, stats = norm(x)
    for t in range(7):
        past = x[:, : t + 1].reshape(2, -1).double()
        mean, var = past.mean(1), past.var(1, unbiased=False)
        ref = (x[:, t].double() - mean[:, None]) / (var[:, None] + norm.eps).sqrt()
        assert torch.allclose(y[:, t].double(), ref, atol=1e-5)
    y1, s1 = norm(x[:, :3])
    y2, s2 = norm(x[:, 3:], s1)
    assert torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-6)
    assert torch.allclose(s2, stats)


@pytest.mark.parametrize("memory_frames", [0.4, 3.0])  # 0.4: blocks of 200 frames, so several blocks
def test_layer_norm_with_memory_matches_its_recurrence(memory_frames):
    torch.manual_seed(5)
    norm = CumulativeLayerNorm(4, memory_frames=memory_frames)
    x = torch.randn(2, 450, 4)
    y, stats = norm(x)
    decay = np.exp(-1.0 / memory_frames)
    sums, count = torch.zeros(2, 2, dtype=torch.float64), 0.0
    for t in range(450):
        frame = x[:, t].double()
        sums = decay * sums + torch.stack((frame.sum(1), (frame * frame).sum(1)), 1)
        count = decay * count + 4
        mean = sums[:, 0] / count
        var = (sums[:, 1] / count - mean * mean).clamp_min(0)
        ref = (frame - mean[:, None]) / (var[:, None] + norm.eps).sqrt()
        assert torch.allclose(y[:, t].double(), ref, atol=1e-4), t
    y1, s1 = norm(x[:, :101])  # carried statistics continue the recurrence
    y2, s2 = norm(x[:, 101:], s1)
    assert torch.allclose(torch.cat([y1, y2], 1), y, atol=1e-5) and torch.allclose(s2, stats)


@pytest.mark.parametrize("sizes", [[8], [400], [8, 16, 56, 800, 24]])
def test_streaming_equals_offline_with_norm_memory(sizes):
    torch.manual_seed(0)
    m = ConvTasNet(ConvTasNetConfig(**{**SMALL.__dict__, "norm_memory_s": 0.02})).eval()  # 20 frames
    perturb(m, 0.05)
    x = 0.3 * torch.randn(2, 3200)
    assert streaming_error(m, x, sizes, SMALL.lookahead_samples) <= 1e-4


def test_norm_memory_forgets_the_distant_past():
    torch.manual_seed(6)
    m = ConvTasNet(ConvTasNetConfig(**{**SMALL.__dict__, "norm_memory_s": 0.02})).eval()
    tail = 0.3 * torch.randn(1, 1600)
    with torch.no_grad():
        quiet_start = m(torch.cat([0.01 * torch.randn(1, 8000), tail], 1))[..., -800:]
        loud_start = m(torch.cat([3.0 * torch.randn(1, 8000), tail], 1))[..., -800:]
    # 0.1 s after the start of the tail the 1 s before it weighs exp(-5): the outputs nearly agree
    assert (quiet_start - loud_start).abs().max().item() < 1e-2 * tail.abs().max().item()
    with pytest.raises(ConfigError):
        ConvTasNetConfig(norm_memory_s=-1.0)


def test_checkpoint_roundtrip(tmp_path, model):
    path = tmp_path / "m.safetensors"
    save_convtasnet(model, path, {"step": 7})
    loaded = load_convtasnet(path)
    assert loaded.config == SMALL
    assert read_checkpoint_metadata(path)["metadata"]["step"] == 7
    x = torch.randn(1, 800)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    remembering = ConvTasNet(ConvTasNetConfig(**{**SMALL.__dict__, "norm_memory_s": 4.0}))
    save_convtasnet(remembering, tmp_path / "r.safetensors")
    assert load_convtasnet(tmp_path / "r.safetensors").config.norm_memory_s == 4.0
    assert load_convtasnet(tmp_path / "r.safetensors", norm_memory_s=16.0).config.norm_memory_s == 16.0
    separator = create_separator("convtasnet", checkpoint=str(path), norm_memory_s=16.0)
    assert separator.model.config == ConvTasNetConfig(**{**SMALL.__dict__, "norm_memory_s": 16.0})
    with pytest.raises(ModelLoadError):
        load_convtasnet(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError):
        load_convtasnet(tmp_path / "junk.safetensors")


def test_separator_spec_and_process(tmp_path, model):
    assert ConvTasNetSeparator(model).spec.step_samples == 800  # 100 ms default
    for config in (SMALL, ConvTasNetConfig()):
        step = low_latency_step_samples(config)
        assert (step + config.lookahead_samples) / config.sample_rate_hz == pytest.approx(0.010)
    sep = ConvTasNetSeparator(model, step_samples=low_latency_step_samples(SMALL))
    spec = sep.spec
    assert spec.num_outputs == 2 and spec.sample_rate_hz == 8000
    assert spec.lookahead_samples == SMALL.window_samples - SMALL.hop_samples
    assert spec.algorithmic_latency_s <= 0.010
    states = [sep.new_state() for _ in range(3)]
    out = sep.process(torch.zeros(3, spec.step_samples), states)
    assert out.shape == (3, 2, spec.step_samples)
    with pytest.raises(ValueError):
        sep.process(torch.zeros(3, spec.step_samples + 1), states)
    with pytest.raises(ConfigError):
        ConvTasNetSeparator(model, step_samples=SMALL.hop_samples + 1)
    path = tmp_path / "m.safetensors"
    save_convtasnet(model, path)
    made = create_separator("convtasnet", checkpoint=path, step_samples=160)
    assert made.spec.step_samples == 160
    # [separator] step_s: seconds, rounded down to the hop (at least one hop)
    hop = SMALL.hop_samples
    assert create_separator("convtasnet", checkpoint=path, step_s=0.02).spec.step_samples == 160 // hop * hop
    assert create_separator("convtasnet", checkpoint=path, step_s=1e-5).spec.step_samples == hop


def test_registry():
    assert {"convtasnet", "sepformer"} <= set(available_separators())
    with pytest.raises(ConfigError):
        create_separator("no-such-separator")

    class Identity(ConvTasNetSeparator):
        pass

    register_separator("test-identity", lambda **kw: Identity(ConvTasNet(SMALL), **kw), replace=True)
    assert isinstance(create_separator("test-identity", step_samples=80), Identity)
    with pytest.raises(ConfigError):
        register_separator("test-identity", lambda: None)


def test_batch_of_numpy_shapes_is_float32(model):
    sep = ConvTasNetSeparator(model, step_samples=80)
    out = sep.process(torch.from_numpy(np.zeros((1, 80), np.float64)), [sep.new_state()])
    assert out.dtype == torch.float32


def test_adopted_model_takes_over_one_session_after_a_warm_up(model):
    torch.manual_seed(2)
    other = ConvTasNet(SMALL).eval()
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05 * torch.randn_like(p))
    step, switch_step = 80, 6
    sep = ConvTasNetSeparator(model, step_samples=step, warmup_s=0.03)  # warm-up: 3 steps = 240 samples
    warm = sep.warmup_samples
    assert warm == 240
    x = 0.3 * torch.randn(2, 12 * step)
    states = [sep.new_state(), sep.new_state()]
    outs = []
    for k in range(12):
        if k == switch_step:
            sep.adopt(states[1], other)
        outs.append(sep.process(x[:, k * step : (k + 1) * step], states))
    out = torch.cat(outs, dim=-1)
    with torch.no_grad():
        shared = stream(model, x, [step])
        # the adopted session = the other model streamed from `warm` samples before the switch, warm-up dropped
        begin = switch_step * step - warm
        taken = stream(other, x[1:, begin:], [step])[0, :, warm:]
    assert torch.allclose(out[0], shared[0], atol=1e-5)  # the session beside it is untouched
    assert torch.allclose(out[1, :, : switch_step * step], shared[1, :, : switch_step * step], atol=1e-5)
    assert torch.allclose(out[1, :, switch_step * step :], taken, atol=1e-4)
    with pytest.raises(ConfigError):
        sep.adopt(states[0], ConvTasNet(ConvTasNetConfig()))


def test_adapted_sessions_are_batched_with_their_own_weights_as_if_each_ran_alone(model):
    torch.manual_seed(3)
    adapted = []
    for scale in (0.05, 0.1, 0.2):
        other = ConvTasNet(SMALL).eval()
        other.load_state_dict(model.state_dict())
        with torch.no_grad():
            for p in other.parameters():
                p.add_(scale * torch.randn_like(p))
        adapted.append(other)
    step = 80
    sep = ConvTasNetSeparator(model, step_samples=step, warmup_s=0.01)
    x = 0.3 * torch.randn(5, 10 * step)
    states = [sep.new_state() for _ in range(5)]
    alone = [sep.new_state() for _ in range(5)]  # the same sessions, each separated by its model alone
    owners = [model, adapted[0], model, adapted[1], adapted[2]]
    for i in (1, 3, 4):
        sep.adopt(states[i], owners[i])
        states[i].extra["pending_model"][1].caches = [torch.zeros_like(c) for c in alone[i].caches]  # no warm-up
    outs, refs = [], []
    for k in range(10):
        chunk = x[:, k * step:(k + 1) * step]
        outs.append(sep.process(chunk, states))
        with torch.inference_mode():
            refs.append(torch.cat([owners[i].stream(chunk[i:i + 1], [alone[i]]) for i in range(5)]))
    out, ref = torch.cat(outs, -1), torch.cat(refs, -1)
    assert sep._stacked_key is not None  # the three adapted sessions went through one stacked call
    assert torch.allclose(out, ref, atol=1e-5)
    assert (out[1] - out[0]).abs().max() > 1e-3  # (the weights do differ)


def test_the_warm_up_runs_at_adopt_and_the_switch_catches_up_the_steps_since(model):
    torch.manual_seed(4)
    other = ConvTasNet(SMALL).eval()
    step = 80
    sep = ConvTasNetSeparator(model, step_samples=step, warmup_s=0.03)  # 3 steps
    x = 0.3 * torch.randn(1, 12 * step)
    state = sep.new_state()
    outs = []
    for k in range(12):
        if k == 5:
            sep.adopt(state, other)  # warmed on steps 2-4 here, in the caller's thread
        outs.append(sep.process(x[:, k * step:(k + 1) * step], [state]))  # switches at step 5
    late = sep.new_state()
    outs_late = []
    for k in range(12):
        if k == 5:
            sep.adopt(late, other)
        if k in (5, 6):  # two steps pass on the shared model before the session's next batch
            with torch.inference_mode():
                sep.model.stream(x[:, k * step:(k + 1) * step], [late])
            late.extra["recent"] = (torch.cat((late.extra["recent"][0], x[0, k * step:(k + 1) * step]))[-240:],
                                    late.extra["recent"][1] + step)
            outs_late.append(None)
            continue
        outs_late.append(sep.process(x[:, k * step:(k + 1) * step], [late]))
    with torch.no_grad():
        taken = stream(other, x[:, 2 * step:], [step])  # the warm-up from step 2 on, then straight on
    assert torch.allclose(torch.cat(outs[5:], -1)[0], taken[0, :, 3 * step:], atol=1e-4)
    # the switch two steps late: the new model heard steps 5-6 in the catch-up, so step 7 on matches
    assert torch.allclose(torch.cat(outs_late[7:], -1)[0], taken[0, :, 5 * step:], atol=1e-4)


@pytest.mark.parametrize("norm_memory_s", [0.0, 0.05])
def test_per_session_weights_in_one_call_equal_each_model_alone(norm_memory_s):
    """ConvTasNet.stream with stacked params: item b runs on model b's weights (slopes, gains, taps, matmuls), its
    streaming state is its own, and the result is what model b gives on its own, chunk after chunk."""
    from dataclasses import replace

    from rtsep.separate.convtasnet import stack_parameters

    config = replace(SMALL, norm_memory_s=norm_memory_s)
    torch.manual_seed(4)
    models = [perturb(ConvTasNet(config).eval(), 0.2) for _ in range(3)]
    stacked = stack_parameters(models)
    assert stacked["blocks.0.act1.weight"].shape == (3, 1) and stacked["decoder.weight"].shape[0] == 3
    x = 0.3 * torch.randn(3, 6 * 40)
    together = [models[0].new_state() for _ in range(3)]
    alone = [m.new_state() for m in models]
    with torch.inference_mode():
        out = torch.cat([models[0].stream(x[:, k * 40:(k + 1) * 40], together, stacked) for k in range(6)], -1)
        ref = torch.cat([torch.cat([m.stream(x[i:i + 1, k * 40:(k + 1) * 40], [alone[i]]) for k in range(6)], -1)
                         for i, m in enumerate(models)])
    assert torch.allclose(out, ref, atol=1e-5)
    assert (ref[1] - ref[0]).abs().max() > 1e-3


def test_the_traced_separator_gives_the_eager_one_s_output_for_any_batch(model):
    """The TorchScript trace of the streaming step (made for a batch of 2) runs batches of 1, 3 and 5 sessions
    with their own streaming states exactly as the eager step does, and adapted sessions still get their weights."""
    step = 80
    eager = ConvTasNetSeparator(model, step_samples=step, warmup_s=0.01)
    traced = ConvTasNetSeparator(model, step_samples=step, warmup_s=0.01, traced=True)
    assert traced._core is not None and eager._core is None
    torch.manual_seed(5)
    x = 0.3 * torch.randn(5, 6 * step)
    for batch in (1, 3, 5):
        ref_states = [eager.new_state() for _ in range(batch)]
        got_states = [traced.new_state() for _ in range(batch)]
        for k in range(6):
            chunk = x[:batch, k * step:(k + 1) * step]
            ref, got = eager.process(chunk, ref_states), traced.process(chunk, got_states)
            assert torch.allclose(got, ref, atol=1e-6)
    other = perturb(ConvTasNet(SMALL).eval(), 0.3)
    states = [traced.new_state() for _ in range(3)]
    alone = other.new_state()
    traced.adopt(states[1], other)
    states[1].extra["pending_model"][1].caches = [torch.zeros_like(c) for c in alone.caches]  # no warm-up
    for k in range(3):
        chunk = x[:3, k * step:(k + 1) * step]
        out = traced.process(chunk, states)
        with torch.inference_mode():
            assert torch.allclose(out[1:2], other.stream(chunk[1:2], [alone]), atol=1e-5)
