"""Batched separation inference: one step of every session's audio per forward, on the configured device."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rtsep.runtime.adaptation import AdaptationWorker
from rtsep.runtime.diarization import RuntimeConfig, resolve_device
from rtsep.runtime.worker import BatchWorker
from rtsep.separate.base import StreamingSeparator

log = logging.getLogger(__name__)


@dataclass
class SeparateRequest:
    """One step of one session: ``samples`` is ``(step_samples,)`` float32 at the separator's rate, starting at
    input sample ``start_sample``; ``state`` is the session's (from :meth:`SeparationRuntime.new_state`),
    updated in place, in step order."""

    step_index: int
    start_sample: int
    samples: np.ndarray
    state: Any


@dataclass(frozen=True)
class SeparatedStep:
    """The separated sources of one step: ``sources`` is ``(num_outputs, step_samples)`` float32 and covers
    samples ``[start_sample, start_sample + step_samples)`` of the model-rate timeline, which is the input
    step shifted back by the separator's look-ahead (so ``start_sample`` may be negative at the start)."""

    step_index: int
    start_sample: int
    sources: np.ndarray


class SeparationRuntime:
    def __init__(
        self,
        runtime_config: RuntimeConfig,
        separator: StreamingSeparator,
        on_batch: Callable[[int, float], object] | None = None,
        adaptation_cpu_share: float = 0.5,
        adaptation_max_queued: int = 16,
        gather_s: float = 0.0,
        adaptation_yield_backlog_s: float = 0.15,
    ) -> None:
        """``gather_s``: the worker's gather window (rtsep.runtime.worker; ``[separator] gather_s``).
        ``adaptation_yield_backlog_s``: adaptation waits while a live step has waited longer than this for this
        runtime's inference, or for that of a runtime given to :meth:`yield_to` (``[adaptation] yield_backlog_s``)."""
        runtime_config.apply_to_process()
        self.config = runtime_config
        self.device = resolve_device(runtime_config.device)
        self.separator = separator.to(self.device)
        self.spec = separator.spec
        self._worker: BatchWorker[SeparateRequest, SeparatedStep] = BatchWorker(
            self._process, max_batch=runtime_config.max_batch, name="rtsep-separate", on_batch=on_batch,
            gather_s=gather_s,
        )
        self._adapter: AdaptationWorker | None = None  # started with the first round
        self._adapt_share, self._adapt_max_queued = adaptation_cpu_share, adaptation_max_queued
        self._adapt_yield_s = adaptation_yield_backlog_s
        self._live_backlogs: list[Callable[[], float]] = [self.backlog_s]
        self._speaker_encoder: Any = None  # for purity filters of adaptation material, loaded on first use
        self._closing = threading.Event()

    @property
    def supports_adaptation(self) -> bool:
        """Whether sessions can get a copy of the model fine-tuned on their own talkers (Conv-TasNet)."""
        return callable(getattr(self.separator, "adopt", None))

    def adapt(self, state: Any, speech: Mapping[str, np.ndarray] | Callable[[], Mapping[str, np.ndarray]],
              config: Any, stop: Callable[[], bool] | None = None, key: Hashable | None = None) -> Future:
        """Fine-tune a copy of the shared model on ``speech`` (speaker -> single-talker audio at the separator's
        rate, or a function that returns it, called in the adaptation thread) in the background, then hand it to
        the session of ``state`` (``key``: the session, by default its state). Rounds run one at a time, server-wide,
        in a thread below the inference threads' priority, within ``adaptation_cpu_share`` of one core, from a queue
        of at most ``adaptation_max_queued`` rounds where a session's newer round replaces its waiting one and the
        session with the fewest rounds goes first (rtsep.runtime.adaptation); between its steps a round waits while
        the live inference is behind (:meth:`live_backlog_s` over ``adaptation_yield_backlog_s``). The future's result
        is the :class:`AdaptReport` (``skipped`` says why a round did not run). A round ends early, unused, when
        ``stop()`` says so (e.g. the session ended) or the runtime closes."""
        from rtsep.separate.adapt import AdaptReport, adapt_convtasnet

        if not self.supports_adaptation:
            raise RuntimeError(f"separator {self.spec.name!r} cannot be adapted")
        if self._adapter is None:
            self._adapter = AdaptationWorker(self._adapt_max_queued, self._adapt_share,
                                             live_backlog_s=self.live_backlog_s, yield_backlog_s=self._adapt_yield_s)

        def run(pace: Callable[[], None]) -> AdaptReport:
            stopped = (lambda: self._closing.is_set() or stop()) if stop is not None else self._closing.is_set
            if stopped():  # queued behind another session's round, and its own session ended meanwhile
                return AdaptReport([], {}, skipped="the session ended before its adaptation started")
            material = speech() if callable(speech) else speech
            model, report = adapt_convtasnet(self.separator.model, material, config,
                                             progress=lambda step, loss: pace(), stop=stopped)
            if report.skipped is None:
                self.separator.adopt(state, model)  # (its warm-up runs here, in the adaptation thread)
            return report

        def skipped(reason: str) -> AdaptReport:
            return AdaptReport([], {}, skipped=reason)

        return self._adapter.submit(key if key is not None else id(state), run, skipped)

    def end_session(self, key: Hashable) -> None:
        """Session ``key`` ended: its waiting adaptation round, if any, will not run."""
        if self._adapter is not None:
            self._adapter.discard(key)

    def purity_filter(self, config: Any) -> Any:
        """A purity filter (rtsep.separate.purity) with ``config`` (AdaptationConfig.purity_config in
        rtsep.separate.config) for adaptation material; all share one speaker encoder on the CPU, loaded on first
        use — call it from the adaptation thread."""
        from rtsep.separate.purity import PurityFilter

        if self._speaker_encoder is None:
            from rtsep.diarize.embedding import load_speaker_encoder

            self._speaker_encoder = load_speaker_encoder()
        return PurityFilter(config, encoder=self._speaker_encoder)

    @property
    def queue_depth(self) -> int:
        return self._worker.queue_depth

    def backlog_s(self) -> float:
        """How long the oldest step waiting for this runtime's inference has waited (0: none waits)."""
        return self._worker.oldest_wait_s()

    def yield_to(self, backlog_s: Callable[[], float]) -> None:
        """Adaptation also waits while another live runtime (e.g. the diarization's ``backlog_s``) is behind."""
        self._live_backlogs.append(backlog_s)

    def live_backlog_s(self) -> float:
        """The largest backlog of the live runtimes adaptation yields to (this one and those of :meth:`yield_to`)."""
        return max(backlog() for backlog in self._live_backlogs)

    def new_state(self) -> Any:
        """A fresh streaming state for a new session (lives on the runtime's device)."""
        return self.separator.new_state()

    def submit(self, key: Hashable, request: SeparateRequest) -> Future:
        step = self.spec.step_samples
        if request.samples.shape != (step,):
            raise ValueError(f"separation step must be ({step},) samples, got {request.samples.shape}")
        return self._worker.submit(key, request)

    def close(self) -> None:
        self._closing.set()
        self._worker.close()
        if self._adapter is not None:
            self._adapter.close()

    def _process(self, requests: Sequence[SeparateRequest]) -> list[SeparatedStep]:
        chunks = torch.from_numpy(np.stack([r.samples for r in requests]).astype(np.float32, copy=False))
        with torch.inference_mode():
            out = self.separator.process(chunks.to(self.device), [r.state for r in requests])
            out_np = out.float().cpu().numpy()
        look = self.spec.lookahead_samples
        return [SeparatedStep(r.step_index, r.start_sample - look, out_np[i]) for i, r in enumerate(requests)]
