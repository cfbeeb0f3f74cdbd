"""Re-assembly of model-rate steps after a denoiser (sans-I/O): the input's blocks and the denoised signal in, the
session's steps out, at the input's positions.

With ``--denoise`` the stream session cuts the input into short blocks (so that the denoiser adds little latency);
each block goes to the denoiser, whose output is aligned with its input but comes later. :class:`DenoisedSteps`
cuts both signals into the session's steps at the same fixed positions: a step is out once its denoised samples
are all in. With ``tracks`` the step's audio is the denoised signal (speaker tracks and separator hear it);
otherwise the step keeps the recording and carries the denoised signal as ``analysis`` (the diarizer hears it).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from rtsep.audio import AudioChunk
from rtsep.stream.chunker import Chunker
from rtsep.stream.session import ChunkReady


@dataclass(frozen=True)
class AssembledStep:
    step: ChunkReady
    shed: bool  # a block of it was shed by the transport: the whole step is a marked gap
    arrived_s: float  # when its last input sample arrived (for its latency)


class DenoisedSteps:
    def __init__(self, step_samples: int, sample_rate_hz: int, tracks: bool) -> None:
        self.step_samples = step_samples
        self.sample_rate_hz = sample_rate_hz
        self.tracks = tracks
        self._raw = Chunker(step_samples)
        self._denoised = Chunker(step_samples)
        self._raw_steps: deque[np.ndarray] = deque()
        self._arrivals: deque[float] = deque()  # per raw step, in order
        self._shed_steps: set[int] = set()  # step starts with a shed block
        self.input_samples = 0
        self.denoised_samples = 0
        self._last_arrival_s = 0.0
        self.finished = False

    @property
    def held_samples(self) -> int:
        """Input samples whose denoised samples are not in yet."""
        return self.input_samples - self.denoised_samples

    def push_input(self, block: ChunkReady, shed: bool, now_s: float) -> np.ndarray:
        """A block from the stream session; returns its valid samples (what goes to the denoiser)."""
        if self.finished:
            raise RuntimeError("push_input after the end")
        samples = block.chunk.samples[: block.valid_samples]
        if shed and samples.size:
            first = self.input_samples // self.step_samples
            last = (self.input_samples + samples.size - 1) // self.step_samples
            self._shed_steps.update(range(first * self.step_samples, (last + 1) * self.step_samples,
                                          self.step_samples))
        self.input_samples += samples.size
        self._last_arrival_s = now_s
        for _, chunk in self._raw.push(samples):
            self._raw_steps.append(chunk)
            self._arrivals.append(now_s)
        return samples

    def push_denoised(self, samples: np.ndarray, last: bool = False) -> list[AssembledStep]:
        """Denoised samples (following those pushed before); ``last``: the denoiser's flush, the end of input."""
        if self.finished:
            raise RuntimeError("push_denoised after the end")
        if self.denoised_samples + samples.size > self.input_samples:
            raise RuntimeError(f"the denoiser returned {self.denoised_samples + samples.size} samples for "
                               f"{self.input_samples} in")
        self.denoised_samples += samples.size
        out = [self._step(start, chunk, self.step_samples, False) for start, chunk in self._denoised.push(samples)]
        if last:
            if self.denoised_samples != self.input_samples:
                raise RuntimeError(f"the denoiser's flush left {self.held_samples} samples out")
            self.finished = True
            rest = self._denoised.flush()
            raw = self._raw.flush()
            if rest is not None:
                assert raw is not None  # both signals have the same length
                self._raw_steps.append(raw[1])
                self._arrivals.append(self._last_arrival_s)
                out.append(self._step(rest[0], rest[1], rest[2], True))
            elif out:
                final = out[-1]
                out[-1] = AssembledStep(ChunkReady(final.step.chunk, final.step.valid_samples, True,
                                                   final.step.analysis), final.shed, final.arrived_s)
        return out

    def _step(self, start: int, denoised: np.ndarray, valid: int, is_last: bool) -> AssembledStep:
        raw = self._raw_steps.popleft()
        arrived_s = self._arrivals.popleft()
        shed = start in self._shed_steps
        self._shed_steps.discard(start)
        rate = self.sample_rate_hz
        if self.tracks:
            step = ChunkReady(AudioChunk(denoised, start, rate), valid, is_last)
        else:
            step = ChunkReady(AudioChunk(raw, start, rate), valid, is_last, analysis=denoised)
        return AssembledStep(step, shed, arrived_s)
