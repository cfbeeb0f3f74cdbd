"""Batched diarization inference: silero-vad + speaker embeddings for the steps of all sessions."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from rtsep.diarize.online import DiarizationConfig, StepAnalysis
from rtsep.diarize.vad import VadState
from rtsep.errors import ConfigError
from rtsep.runtime.worker import BatchWorker
from rtsep.stream.core import OVERFLOW_POLICIES

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RuntimeConfig:
    device: str = "cpu"
    max_batch: int = 32
    # intra-op threads of torch (process-wide); 1 keeps a core free for the event loop and measured
    # faster than 2 on a 2-core machine (bench/RESULTS.md); 0 leaves torch's default
    torch_threads: int = 1
    max_in_flight_steps: int = 16  # per session: the bound on its queue of steps awaiting inference
    overflow: str = "backpressure"  # what a session does when its bound is reached: wait, or drop the step
    # a step's result later than this fails its session (1011): a stalled model ends sessions, never hangs them
    result_timeout_s: float = 30.0
    # the interpreter's GIL switch interval (sys.setswitchinterval, process-wide; Python's own is 0.005): an
    # inference thread that gives the GIL up around each torch call waits up to this for it while the event loop runs
    # Python, so a shorter one keeps inference from falling behind a busy loop (bench/RESULTS.md "16 live sessions
    # with separation on"); 0 leaves Python's
    gil_switch_interval_s: float = 0.0005

    def __post_init__(self) -> None:
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(f"overflow policy must be one of {OVERFLOW_POLICIES}, got {self.overflow!r}")
        if self.max_batch < 1 or self.max_in_flight_steps < 1:
            raise ConfigError("max_batch and max_in_flight_steps must be >= 1")
        if not self.result_timeout_s > 0:
            raise ConfigError("result_timeout_s must be > 0")
        if not 0 <= self.gil_switch_interval_s <= 0.1:
            raise ConfigError(f"gil_switch_interval_s must be within [0, 0.1] s, got {self.gil_switch_interval_s!r}")

    def apply_to_process(self) -> None:
        """The process-wide settings: torch's intra-op threads and the GIL switch interval (where set)."""
        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        if self.gil_switch_interval_s:
            sys.setswitchinterval(self.gil_switch_interval_s)


@dataclass
class DiarizeRequest:
    step_index: int
    start_sample: int
    valid_samples: int
    samples: np.ndarray  # (step_samples,) float32
    window: np.ndarray  # (embedding_window_samples,) float32, ends with ``samples``
    vad_state: VadState  # the session's; updated in place, in step order


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but CUDA is not available on this machine")
    return device


class DiarizationRuntime:
    def __init__(
        self,
        runtime_config: RuntimeConfig,
        diarization_config: DiarizationConfig,
        vad: nn.Module | None = None,
        encoder: nn.Module | None = None,
        on_batch: Callable[[int, float], object] | None = None,
        final_pipeline: Any = None,
        overlap_detector: Any = None,
    ) -> None:
        from rtsep.diarize.embedding import load_speaker_encoder
        from rtsep.diarize.vad import load_silero_vad

        runtime_config.apply_to_process()
        self.config = runtime_config
        self.diarization = diarization_config
        self.device = resolve_device(runtime_config.device)
        # --final-pipeline: rtsep.runtime.pyannote.FinalPipeline, which makes the final timeline instead
        self.final_pipeline = final_pipeline
        # [overlap] enabled: rtsep.runtime.overlap.OverlapDetector, run on the whole session for the final timeline
        self.overlap_detector = overlap_detector
        self.vad = (vad if vad is not None else load_silero_vad()).to(self.device).eval()
        self.encoder = (encoder if encoder is not None else load_speaker_encoder()).to(self.device).eval()
        self._worker: BatchWorker[DiarizeRequest, StepAnalysis] = BatchWorker(
            self._process, max_batch=runtime_config.max_batch, name="rtsep-diarize", on_batch=on_batch,
            gather_s=diarization_config.gather_s,
        )

    @property
    def queue_depth(self) -> int:
        return self._worker.queue_depth

    def backlog_s(self) -> float:
        """How long the oldest step waiting for this runtime's inference has waited (0: none waits)."""
        return self._worker.oldest_wait_s()

    def submit(self, key: Hashable, request: DiarizeRequest) -> Future:
        return self._worker.submit(key, request)

    def close(self) -> None:
        self._worker.close()

    def enroll(self, audio: bytes, min_speech_s: float, max_s: float) -> tuple[np.ndarray, float]:
        """An enrollment clip (audio file bytes) -> (unit embedding, seconds of speech), with this runtime's own
        VAD and speaker encoder (read-only forwards beside the batch worker's). Blocking: call it off the event
        loop. BadEnrollment for audio that cannot be decoded or holds too little speech."""
        from rtsep.diarize.voices import decode_clip, enrollment_embedding

        samples = decode_clip(audio, max_s)
        return enrollment_embedding(samples, self.vad, self.encoder,
                                    window_samples=self.diarization.embedding_window_samples,
                                    min_speech_s=min_speech_s, vad_onset=self.diarization.vad_onset)

    def embed_windows(self, windows: np.ndarray, batch: int = 64) -> np.ndarray:
        """(n, samples) float32 windows at the diarizer's rate -> (n, dim) unit speaker embeddings, with this
        runtime's speaker encoder (read-only forwards beside the batch worker's; what the attribution of separated
        sources compares). Blocking: call it off the event loop."""
        windows = np.asarray(windows, np.float32)
        if windows.ndim != 2:
            raise ValueError(f"windows must be (n, samples), got shape {windows.shape}")
        out = []
        with torch.inference_mode():
            for lo in range(0, windows.shape[0], batch):
                part = torch.from_numpy(np.ascontiguousarray(windows[lo:lo + batch])).to(self.device)
                out.append(self.encoder(part).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def _process(self, requests: Sequence[DiarizeRequest]) -> list[StepAnalysis]:
        cfg = self.diarization
        dev = self.device
        with torch.inference_mode():
            samples = torch.from_numpy(np.stack([r.samples for r in requests])).to(dev)
            context = torch.from_numpy(np.stack([r.vad_state.context for r in requests])).to(dev)
            hidden = torch.from_numpy(np.stack([r.vad_state.hidden for r in requests], axis=1)).to(dev)
            probs, context, hidden = self.vad(samples, context, hidden)
            probs_np = probs.float().cpu().numpy()
            context_np = context.cpu().numpy()
            hidden_np = hidden.cpu().numpy()
            windows_np: dict[int, np.ndarray] = {}
            speech_s: dict[int, float] = {}
            for i, r in enumerate(requests):
                r.vad_state.context = context_np[i].copy()
                r.vad_state.hidden = hidden_np[:, i].copy()
                valid_frames = -(-r.valid_samples // cfg.frame_samples)
                is_speech = probs_np[i][:valid_frames] >= cfg.vad_onset
                if int(is_speech.sum()) < cfg.min_embed_speech_frames:
                    if cfg.embedding_source == "speech":
                        self._update_speech(r, is_speech)
                    continue
                if cfg.embedding_source == "speech":
                    self._update_speech(r, is_speech)
                    buffer = r.vad_state.speech
                    if buffer.size < cfg.min_embed_speech_samples:
                        continue
                    window = np.zeros(cfg.embedding_window_samples, np.float32)
                    window[window.size - buffer.size :] = buffer[-window.size :]
                    windows_np[i] = window
                    speech_s[i] = min(buffer.size, window.size) / cfg.sample_rate_hz
                else:
                    windows_np[i] = r.window
                    speech_s[i] = -1.0  # unknown: the diarizer measures it
            embeddings: dict[int, np.ndarray] = {}
            if windows_np:
                wants = list(windows_np)
                windows = torch.from_numpy(np.stack([windows_np[i] for i in wants])).to(dev)
                out = self.encoder(windows).float().cpu().numpy()
                embeddings = {i: out[j] for j, i in enumerate(wants)}
        return [
            StepAnalysis(r.step_index, r.start_sample, r.valid_samples, probs_np[i], embeddings.get(i),
                         speech_s.get(i, -1.0))
            for i, r in enumerate(requests)
        ]

    def _update_speech(self, request: DiarizeRequest, is_speech: np.ndarray) -> None:
        """Append the step's speech frames to the session's speech buffer (in step order: the worker
        processes one step per session per batch). After a long pause the buffer starts afresh."""
        cfg = self.diarization
        state = request.vad_state
        frame = cfg.frame_samples
        if not is_speech.any():
            return
        first = int(np.argmax(is_speech))
        gap = request.start_sample + first * frame - state.last_speech_sample
        reset_gap = None if cfg.speech_reset_gap_s is None else cfg.speech_reset_gap_s * cfg.sample_rate_hz
        if state.last_speech_sample >= 0 and reset_gap is not None and gap > reset_gap:
            state.clear_speech()
        chunks = [request.samples[k * frame : (k + 1) * frame] for k in np.flatnonzero(is_speech)]
        state.add_speech(np.concatenate(chunks), cfg.embedding_window_samples)
        last = int(np.flatnonzero(is_speech)[-1])
        state.last_speech_sample = request.start_sample + min((last + 1) * frame, request.valid_samples)
