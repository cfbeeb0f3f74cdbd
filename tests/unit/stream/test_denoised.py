"""DenoisedSteps (rtsep.stream.denoised): blocks and a lagging denoiser's output in, the session's steps out at the
input's positions, whatever the blocks and the lag."""

import numpy as np
import pytest

from rtsep.audio import AudioChunk
from rtsep.stream.denoised import DenoisedSteps
from rtsep.stream.session import ChunkReady

STEP = 1000


class LaggingDenoiser:
    """Returns ``-x`` (so that it is told apart from the input) ``lag`` samples late, all of it at the flush."""

    def __init__(self, lag: int) -> None:
        self.lag, self.buffer, self.given = lag, np.zeros(0, np.float32), 0

    def process(self, x: np.ndarray) -> np.ndarray:
        self.buffer = np.concatenate([self.buffer, -x])
        ready = max(0, self.buffer.size - self.lag)
        out, self.buffer = self.buffer[:ready], self.buffer[ready:]
        return out

    def flush(self) -> np.ndarray:
        out, self.buffer = self.buffer, np.zeros(0, np.float32)
        return out


def blocks(signal: np.ndarray, size: int) -> list[ChunkReady]:
    out = []
    for start in range(0, signal.size, size):
        part = signal[start: start + size]
        padded = np.zeros(size, np.float32)
        padded[: part.size] = part
        out.append(ChunkReady(AudioChunk(padded, start, 16000), part.size, start + size >= signal.size))
    return out


def assemble(signal, block, lag, tracks, shed_blocks=()):
    steps = DenoisedSteps(STEP, 16000, tracks)
    denoiser = LaggingDenoiser(lag)
    out = []
    for i, b in enumerate(blocks(signal, block)):
        samples = steps.push_input(b, i in shed_blocks, now_s=float(i))
        out += steps.push_denoised(denoiser.process(samples))
    out += steps.push_denoised(denoiser.flush(), last=True)
    return out


@pytest.mark.parametrize("block,lag", [(320, 0), (320, 777), (1, 5), (999, 2500), (4096, 10)])
@pytest.mark.parametrize("tracks", [False, True])
def test_steps_keep_the_input_positions(block, lag, tracks):
    signal = np.random.default_rng(block).standard_normal(3 * STEP + 123).astype(np.float32)
    out = assemble(signal, block, lag, tracks)
    assert [a.step.chunk.start_sample for a in out] == [0, STEP, 2 * STEP, 3 * STEP]
    assert [a.step.valid_samples for a in out] == [STEP, STEP, STEP, 123]
    assert [a.step.is_last for a in out] == [False, False, False, True]
    audio = np.concatenate([a.step.chunk.samples[: a.step.valid_samples] for a in out])
    if tracks:  # the step is the denoised signal, nothing besides
        np.testing.assert_array_equal(audio, -signal)
        assert all(a.step.analysis is None for a in out)
    else:  # the step keeps the recording, the diarizer's copy is denoised
        np.testing.assert_array_equal(audio, signal)
        heard = np.concatenate([a.step.analysis[: a.step.valid_samples] for a in out])
        np.testing.assert_array_equal(heard, -signal)
    assert all(a.step.chunk.samples.size == STEP for a in out)  # the last one zero-padded, as the chunker does


def test_a_step_ending_on_the_last_block_is_marked_last():
    out = assemble(np.ones(2 * STEP, np.float32), 250, 300, False)
    assert [a.step.is_last for a in out] == [False, True] and out[-1].step.valid_samples == STEP


def test_a_step_with_a_shed_block_is_a_gap_and_arrival_is_its_last_block():
    out = assemble(np.ones(3 * STEP, np.float32), 500, 100, False, shed_blocks={3})  # samples 1500..2000
    assert [a.shed for a in out] == [False, True, False]
    assert [a.arrived_s for a in out] == [1.0, 3.0, 5.0]


def test_a_denoiser_that_returns_too_much_or_too_little_is_an_error():
    steps = DenoisedSteps(STEP, 16000, False)
    steps.push_input(ChunkReady(AudioChunk(np.zeros(100, np.float32), 0, 16000), 100), False, 0.0)
    with pytest.raises(RuntimeError, match="returned 101 samples for 100"):
        steps.push_denoised(np.zeros(101, np.float32))
    with pytest.raises(RuntimeError, match="left 50 samples out"):
        steps.push_denoised(np.zeros(50, np.float32), last=True)
