"""DenoiseRuntime (rtsep.runtime.denoise) with fake denoisers: order per session, sessions side by side, a failure
that stays in its session, states freed."""

import threading

import numpy as np
import pytest

from rtsep.enhance.config import DenoiseConfig
from rtsep.enhance.deepfilter import DenoiserError
from rtsep.runtime.denoise import DenoiseRuntime


class Recording:
    """Returns each block scaled by 2 at once; ``fail_on``: raises on that block (counted from 0)."""

    def __init__(self, fail_on: int | None = None, gate: threading.Event | None = None) -> None:
        self.blocks: list[np.ndarray] = []
        self.fail_on, self.gate = fail_on, gate
        self.closed = 0
        self.flushed = False
        self.entered = threading.Event()

    def process(self, samples):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_on is not None and len(self.blocks) == self.fail_on:
            raise RuntimeError("the denoiser broke")
        self.blocks.append(samples.copy())
        return 2 * samples

    def flush(self):
        self.flushed = True
        return np.zeros(3, np.float32)

    def close(self):
        self.closed += 1


def runtime_with(denoisers, threads=2):
    made = iter(denoisers)
    return DenoiseRuntime(DenoiseConfig(enabled=True, threads=threads), 16000, factory=lambda: next(made))


def test_blocks_run_in_order_per_stream_and_streams_side_by_side():
    a, b = Recording(), Recording()
    runtime = runtime_with([a, b])
    sa, sb = runtime.new_stream("a"), runtime.new_stream("b")
    futures = []
    for i in range(50):
        futures.append((runtime.submit(sa, np.full(4, i, np.float32)), i))
        futures.append((runtime.submit(sb, np.full(4, -i, np.float32)), -i))
    for future, value in futures:
        np.testing.assert_array_equal(future.result(10), np.full(4, 2 * value, np.float32))
    assert [int(x[0]) for x in a.blocks] == list(range(50))
    assert [int(x[0]) for x in b.blocks] == [-i for i in range(50)]
    assert runtime.flush(sa).result(10).size == 3 and a.flushed and a.closed == 1  # the flush frees the state
    runtime.close_stream(sa)
    runtime.close_stream(sb)
    assert b.closed == 1 and a.closed == 1
    runtime.close()


def test_a_failure_fails_that_stream_from_then_on_and_no_other():
    broken, fine = Recording(fail_on=2), Recording()
    runtime = runtime_with([broken, fine], threads=1)
    sa, sb = runtime.new_stream("a"), runtime.new_stream("b")
    results = [runtime.submit(sa, np.ones(2, np.float32)) for _ in range(5)]
    other = [runtime.submit(sb, np.ones(2, np.float32)) for _ in range(5)]
    assert all(f.result(10).size == 2 for f in results[:2])
    with pytest.raises(DenoiserError, match="the denoiser failed: the denoiser broke"):
        results[2].result(10)
    for later in results[3:]:
        with pytest.raises(DenoiserError, match="failed earlier in this session"):
            later.result(10)
    assert all(f.result(10).size == 2 for f in other)
    runtime.close_stream(sa)
    assert broken.closed == 1
    runtime.close()


def test_a_state_that_cannot_be_created_fails_the_stream():
    def factory():
        raise DenoiserError("no state for you")

    runtime = DenoiseRuntime(DenoiseConfig(enabled=True), 16000, factory=factory)
    stream = runtime.new_stream("a")
    with pytest.raises(DenoiserError, match="no state for you"):
        runtime.submit(stream, np.ones(2, np.float32)).result(10)
    runtime.close()


def test_closing_a_stream_cancels_its_waiting_blocks_and_frees_its_state_after_the_running_one():
    gate = threading.Event()
    denoiser = Recording(gate=gate)
    runtime = runtime_with([denoiser], threads=1)
    stream = runtime.new_stream("a")
    running = runtime.submit(stream, np.ones(2, np.float32))
    waiting = [runtime.submit(stream, np.ones(2, np.float32)) for _ in range(3)]
    assert denoiser.entered.wait(10)  # the first block is running
    runtime.close_stream(stream)
    assert all(f.cancelled() for f in waiting)
    gate.set()
    assert running.result(10).size == 2
    runtime.close()  # waits for the pool: the state is freed by then
    assert denoiser.closed == 1
    with pytest.raises(RuntimeError, match="closed"):
        runtime.submit(stream, np.ones(2, np.float32))
