"""The denoise runtime: every session's enhancement front end (rtsep.enhance) on a small pool of threads.

Each session gets a :class:`DenoiseStream`; its blocks run strictly in submission order, one at a time (the
denoiser's state moves sample by sample), while different sessions run side by side on the pool's threads (the
native runtime releases the GIL). A stream takes one pool slot per block and then yields it, so one busy session
does not starve the others. The native state is created by the stream's first block, on the pool (half a second of
CPU), and freed by its flush or by :meth:`DenoiseRuntime.close_stream`.

A failure (the state cannot be created, a block fails) fails that block's future and every later one of the same
stream: the session's driver ends that session (1011); the other sessions and the runtime go on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import numpy as np

from rtsep.enhance.config import DenoiseConfig
from rtsep.enhance.deepfilter import DenoiserError, StreamingDenoiser, load_deepfilter
from rtsep.errors import RtsepError

log = logging.getLogger(__name__)


class Denoiser(Protocol):
    """One stream's denoiser (rtsep.enhance.deepfilter.StreamingDenoiser): output at the input's positions."""

    def process(self, samples: np.ndarray) -> np.ndarray: ...

    def flush(self) -> np.ndarray: ...

    def close(self) -> None: ...


class DenoiseStream:
    """One session's queue of blocks on the runtime (its handle; nothing here is for the caller to touch)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.denoiser: Denoiser | None = None
        self.jobs: deque[tuple[np.ndarray | None, Future]] = deque()  # None: the flush
        self.scheduled = False
        self.error: BaseException | None = None
        self.closed = False


class DenoiseRuntime:
    def __init__(self, config: DenoiseConfig, sample_rate_hz: int,
                 factory: Callable[[], Denoiser] | None = None) -> None:
        """``factory`` makes one stream's denoiser (default: DeepFilterNet3, whose library is loaded now, so that a
        missing package stops the start-up rather than the first session)."""
        self.config = config
        self.sample_rate_hz = sample_rate_hz
        if factory is None:
            library = load_deepfilter()

            def factory() -> Denoiser:
                return StreamingDenoiser(library, sample_rate_hz, config.atten_lim_db)

        self._factory = factory
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(config.threads, thread_name_prefix="rtsep-denoise")
        self._closed = False

    def new_stream(self, name: str) -> DenoiseStream:
        return DenoiseStream(name)

    def submit(self, stream: DenoiseStream, samples: np.ndarray) -> Future:
        """Denoise the next block of ``stream``; the future gives the denoised samples now complete (at the positions
        that follow those given before: fewer than in, at first)."""
        return self._enqueue(stream, np.ascontiguousarray(samples, np.float32))

    def flush(self, stream: DenoiseStream) -> Future:
        """The end of ``stream``: the future gives the rest of its denoised samples; its state is freed after."""
        return self._enqueue(stream, None)

    def close_stream(self, stream: DenoiseStream) -> None:
        """The session ended: blocks not yet run are cancelled, the state is freed once the running one is done."""
        with self._lock:
            stream.closed = True
            jobs, stream.jobs = list(stream.jobs), deque()
            idle = not stream.scheduled
        for _, future in jobs:
            future.cancel()
        if idle:
            self._release(stream)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- internals ---

    def _enqueue(self, stream: DenoiseStream, samples: np.ndarray | None) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the denoise runtime is closed")
            if stream.closed:
                raise RuntimeError(f"denoise stream {stream.name} is closed")
            stream.jobs.append((samples, future))
            schedule = not stream.scheduled
            stream.scheduled = True
        if schedule:
            self._pool.submit(self._run_one, stream)
        return future

    def _run_one(self, stream: DenoiseStream) -> None:
        """One block of ``stream`` (on the pool), then its next block goes to the back of the pool's queue."""
        with self._lock:
            if not stream.jobs:
                stream.scheduled = False
                closed = stream.closed
                job = None
            else:
                job = stream.jobs.popleft()
        if job is None:
            if closed:
                self._release(stream)
            return
        samples, future = job
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(self._process(stream, samples))
            except BaseException as exc:  # noqa: BLE001 - to the session that submitted it, never the pool
                if stream.error is None:
                    log.error("denoise stream %s failed", stream.name, exc_info=exc)
                stream.error = exc
                future.set_exception(exc if isinstance(exc, RtsepError) else
                                     DenoiserError(f"internal error: the denoiser failed: {exc}"))
        with self._lock:
            more = bool(stream.jobs) and not self._closed
            if not more:
                stream.scheduled = False
            closed = stream.closed
        if more:
            try:
                self._pool.submit(self._run_one, stream)
            except RuntimeError:  # the pool shut down meanwhile: nobody will run the rest
                self._cancel_all(stream)
        elif closed:
            self._release(stream)

    def _process(self, stream: DenoiseStream, samples: np.ndarray | None) -> np.ndarray:
        if stream.error is not None:
            raise DenoiserError(f"internal error: the denoiser failed earlier in this session: {stream.error}")
        if stream.denoiser is None:
            stream.denoiser = self._factory()
        if samples is None:
            out = stream.denoiser.flush()
            self._release(stream)
            return out
        return stream.denoiser.process(samples)

    def _cancel_all(self, stream: DenoiseStream) -> None:
        with self._lock:
            jobs, stream.jobs = list(stream.jobs), deque()
            stream.scheduled = False
        for _, future in jobs:
            future.cancel()

    @staticmethod
    def _release(stream: DenoiseStream) -> None:
        denoiser, stream.denoiser = stream.denoiser, None
        if denoiser is not None:
            try:
                denoiser.close()
            except Exception:  # noqa: BLE001 - the session is over either way
                log.exception("denoise stream %s: freeing its state failed", stream.name)
