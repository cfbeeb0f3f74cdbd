"""The Conv-TasNet checkpoint shipped in the package: loads by name, streams through the batched runtime exactly
as one causal forward, and moves energy between its two outputs according to the input."""

import numpy as np
import torch

from rtsep.runtime.diarization import RuntimeConfig
from rtsep.runtime.separation import SeparateRequest, SeparationRuntime
from rtsep.separate import create_separator
from rtsep.separate.convtasnet import default_checkpoint_path, load_convtasnet, read_checkpoint_metadata


def test_shipped_checkpoint_is_self_describing():
    path = default_checkpoint_path()
    assert path.is_file(), "rtsep/separate/weights/convtasnet_8k.safetensors must ship with the package"
    assert path.stat().st_size < 8 * 1024 * 1024
    header = read_checkpoint_metadata(path)
    assert header["config"]["sample_rate_hz"] == 8000 and header["config"]["num_sources"] == 2
    assert header["metadata"]["step"] > 0


def test_shipped_separator_streams_through_the_runtime_like_offline():
    separator = create_separator("convtasnet")
    spec = separator.spec
    assert spec.sample_rate_hz == 8000 and spec.num_outputs == 2
    rng = np.random.default_rng(0)
    t = np.arange(3 * spec.step_samples * 4) / 8000
    mix = (0.1 * np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 4 * t))
           + 0.05 * np.sin(2 * np.pi * 900 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
    runtime = SeparationRuntime(RuntimeConfig(max_batch=4), separator)
    try:
        state = runtime.new_state()
        step = spec.step_samples
        futures = [runtime.submit("s", SeparateRequest(i, i * step, mix[i * step : (i + 1) * step], state))
                   for i in range(len(mix) // step)]
        got = np.concatenate([f.result(timeout=60).sources for f in futures], axis=1)
    finally:
        runtime.close()
    model = load_convtasnet(default_checkpoint_path())
    with torch.no_grad():
        ref = model(torch.from_numpy(mix)[None])[0].numpy()
    look = spec.lookahead_samples
    assert np.abs(got[:, look:] - ref[:, :-look]).max() <= 1e-4
    assert np.isfinite(got).all() and np.abs(got).max() > 1e-4
