"""SeparationRuntime: steps of several sessions batched together give each session its own stream's output."""

import numpy as np
import pytest
import torch

from rtsep.runtime.diarization import RuntimeConfig
from rtsep.runtime.separation import SeparateRequest, SeparationRuntime
from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig, ConvTasNetSeparator

SMALL = ConvTasNetConfig(encoder_filters=16, window_samples=16, bottleneck_channels=8, hidden_channels=16,
                         blocks_per_repeat=3, repeats=1)


def test_batched_sessions_match_their_own_streams():
    torch.manual_seed(0)
    model = ConvTasNet(SMALL).eval()
    runtime = SeparationRuntime(RuntimeConfig(max_batch=4), ConvTasNetSeparator(model, step_samples=80))
    try:
        rng = np.random.default_rng(0)
        signals = {k: (0.3 * rng.standard_normal(800)).astype(np.float32) for k in ("a", "b", "c")}
        states = {k: runtime.new_state() for k in signals}
        futures = {k: [] for k in signals}
        for i in range(10):  # all steps submitted at once: the worker keeps each session's order
            for k, sig in signals.items():
                req = SeparateRequest(i, i * 80, sig[i * 80 : (i + 1) * 80], states[k])
                futures[k].append(runtime.submit(k, req))
        for k, sig in signals.items():
            steps = [f.result(timeout=30) for f in futures[k]]
            assert [s.step_index for s in steps] == list(range(10))
            assert steps[0].start_sample == -SMALL.lookahead_samples
            got = np.concatenate([s.sources for s in steps], axis=1)
            with torch.no_grad():
                ref = model(torch.from_numpy(sig)[None])[0].numpy()
            look = SMALL.lookahead_samples
            assert np.abs(got[:, look:] - ref[:, :-look]).max() <= 1e-4
        with pytest.raises(ValueError):
            runtime.submit("a", SeparateRequest(0, 0, np.zeros(81, np.float32), states["a"]))
    finally:
        runtime.close()


def test_a_queued_adaptation_of_an_ended_session_is_dropped_before_any_work():
    """One adaptation runs at a time; a round queued behind it for a session that ended meanwhile does nothing."""
    import threading

    model = ConvTasNet(SMALL).eval()
    runtime = SeparationRuntime(RuntimeConfig(), ConvTasNetSeparator(model, step_samples=80))
    try:
        release = threading.Event()
        started = threading.Event()

        def first_material():  # holds the adaptation thread until the test releases it
            started.set()
            release.wait(30)
            raise RuntimeError("first session: no material")

        gathered = []
        ended = threading.Event()

        def second_material():
            gathered.append("called")
            return {}

        first = runtime.adapt(runtime.new_state(), first_material, None)
        assert started.wait(30)
        second = runtime.adapt(runtime.new_state(), second_material, None, stop=ended.is_set)
        ended.set()  # the second session ends while its round waits in the queue
        release.set()
        with pytest.raises(RuntimeError, match="no material"):
            first.result(timeout=30)
        report = second.result(timeout=30)
        assert report.skipped and "ended" in report.skipped and gathered == []  # no material gathered, no steps
    finally:
        runtime.close()
