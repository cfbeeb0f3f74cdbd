"""The per-session input state machine (sans-I/O).

It takes the client's text and binary messages as they arrive and returns events: the accepted
``start``, chunks of audio at the model rate ready for analysis, and the ``stop``. It validates
everything and raises a :class:`~rtsep.errors.ClientError` subclass on bad input; the transport
turns that into an error message and a close code. Output never depends on how the client cut
its audio into messages: decoding is per whole sample, the resampler is streaming, and the
chunker re-cuts at fixed positions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from rtsep.audio import AudioChunk
from rtsep.errors import MessageTooBig, ProtocolViolation
from rtsep.protocol.messages import Start, Stop, parse_client_message
from rtsep.protocol.pcm import decode_pcm
from rtsep.stream.chunker import Chunker
from rtsep.stream.resample import StreamResampler


@dataclass(frozen=True)
class StreamConfig:
    model_sample_rate_hz: int = 16000
    step_samples: int = 4096
    max_message_bytes: int = 1 << 20
    # also emit every block of model-rate input as it arrives (SamplesReady), before the steps it completes: the
    # separator's path takes it at once instead of waiting for a whole step
    emit_samples: bool = False


class Phase(enum.Enum):
    AWAITING_START = "awaiting_start"
    STREAMING = "streaming"
    STOPPED = "stopped"


@dataclass(frozen=True)
class StartAccepted:
    start: Start


@dataclass(frozen=True)
class ChunkReady:
    """A step of model-rate audio; ``valid_samples`` < chunk size only for the zero-padded last one. ``analysis``:
    the same step denoised (rtsep.stream.denoised), which the diarizer hears instead of ``chunk``."""

    chunk: AudioChunk
    valid_samples: int
    is_last: bool = False
    analysis: np.ndarray | None = None


@dataclass(frozen=True)
class SamplesReady:
    """Model-rate input as it arrived (``emit_samples``): ``samples`` from position ``start_sample``; the same
    samples come again in the steps they complete (:class:`ChunkReady`), which follow it."""

    start_sample: int
    samples: np.ndarray


@dataclass(frozen=True)
class StopRequested:
    total_samples: int  # model-rate samples received in all


Event = StartAccepted | SamplesReady | ChunkReady | StopRequested


class StreamSession:
    def __init__(self, config: StreamConfig) -> None:
        self.config = config
        self.phase = Phase.AWAITING_START
        self.start: Start | None = None
        self._resampler: StreamResampler | None = None
        self._chunker = Chunker(config.step_samples)
        self.input_samples = 0  # at the client's rate, per channel
        self.model_samples = 0  # at the model rate, valid (not padding)

    @property
    def input_s(self) -> float:
        return self.input_samples / self.start.sample_rate if self.start else 0.0

    def _check_size(self, size: int) -> None:
        if size > self.config.max_message_bytes:
            raise MessageTooBig(f"message of {size} bytes exceeds the limit of {self.config.max_message_bytes} bytes")

    def receive_text(self, text: str) -> list[Event]:
        self._check_size(len(text))
        message = parse_client_message(text)
        if isinstance(message, Start):
            if self.phase is not Phase.AWAITING_START:
                raise ProtocolViolation("'start' was already received", error_code="unexpected_message")
            self.start = message
            self._resampler = StreamResampler(message.sample_rate, self.config.model_sample_rate_hz)
            self.phase = Phase.STREAMING
            return [StartAccepted(message)]
        assert isinstance(message, Stop)
        if self.phase is Phase.AWAITING_START:
            raise ProtocolViolation("'stop' before 'start'", error_code="unexpected_message")
        if self.phase is Phase.STOPPED:
            raise ProtocolViolation("'stop' was already received", error_code="unexpected_message")
        return self.finish()

    def receive_bytes(self, data: bytes) -> list[Event]:
        self._check_size(len(data))
        if self.phase is Phase.AWAITING_START:
            raise ProtocolViolation("audio received before 'start'", error_code="audio_before_start")
        if self.phase is Phase.STOPPED:
            raise ProtocolViolation("audio received after 'stop'", error_code="audio_after_stop")
        assert self.start is not None and self._resampler is not None
        samples = decode_pcm(data, self.start.encoding, self.start.channels)
        self.input_samples += samples.size
        return self._emit(self._resampler.process(samples))

    def receive_samples(self, samples: np.ndarray) -> list[Event]:
        """Already-decoded mono float32 at the announced rate (WebRTC and file transports)."""
        if self.phase is not Phase.STREAMING:
            raise ProtocolViolation("audio received outside a streaming session", error_code="unexpected_audio")
        assert self._resampler is not None
        self.input_samples += samples.size
        return self._emit(self._resampler.process(samples))

    def finish(self) -> list[Event]:
        """End of input (a ``stop``, or the transport closing): flush everything still buffered."""
        if self.phase is not Phase.STREAMING:
            return []
        assert self._resampler is not None
        events = self._emit(self._resampler.flush())
        last = self._chunker.flush()
        if last is not None:
            start, chunk, valid = last
            events.append(ChunkReady(AudioChunk(chunk, start, self.config.model_sample_rate_hz), valid, True))
        elif events:
            final = events[-1]
            assert isinstance(final, ChunkReady)
            events[-1] = ChunkReady(final.chunk, final.valid_samples, True)
        self.phase = Phase.STOPPED
        events.append(StopRequested(self.model_samples))
        return events

    def _emit(self, resampled: np.ndarray) -> list[Event]:
        events: list[Event] = []
        if self.config.emit_samples and resampled.size:
            events.append(SamplesReady(self.model_samples, resampled))
        self.model_samples += resampled.size
        rate = self.config.model_sample_rate_hz
        return events + [
            ChunkReady(AudioChunk(chunk, start, rate), chunk.size) for start, chunk in self._chunker.push(resampled)
        ]
