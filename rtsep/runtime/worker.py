"""A worker thread that gathers requests from many sessions into one batch per tick.

Requests carry a ``key`` (the session). A tick takes at most one request per key, in arrival order, so a
session's requests are processed strictly in sequence (its recurrent state is updated step by step)
while different sessions share one forward. Requests of a key beyond the first wait for the next tick.

``gather_s``: a tick starts no earlier than ``gather_s`` after its oldest request arrived (unless ``max_batch``
sessions are already waiting, or the worker closes), so that the steps of sessions that arrive a few ms apart share
one forward instead of running as many tiny batches. A request that already waited that long (the worker was busy)
waits no more; each request waits at most ``gather_s`` longer than without the window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")


def gather_wait_s(oldest_arrived_s: float, now_s: float, gather_s: float, waiting_keys: int, max_batch: int) -> float:
    """How much longer a tick waits before it starts: until ``gather_s`` after its oldest request arrived, and not at
    all once ``max_batch`` sessions (keys) have a request waiting."""
    if waiting_keys >= max_batch:
        return 0.0
    return max(0.0, oldest_arrived_s + gather_s - now_s)


@dataclass
class _Item(Generic[Req, Res]):
    key: Hashable
    request: Req
    future: Future
    arrived_s: float = 0.0  # the worker's clock at submit


class BatchWorker(Generic[Req, Res]):
    def __init__(
        self,
        process_batch: Callable[[Sequence[Req]], Sequence[Res]],
        *,
        max_batch: int,
        name: str = "rtsep-worker",
        on_batch: Callable[[int, float], Any] | None = None,
        gather_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not gather_s >= 0:
            raise ValueError(f"gather_s must be >= 0, got {gather_s!r}")
        self._process_batch = process_batch
        self._max_batch = max_batch
        self._gather_s = gather_s
        self._clock = clock
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._in_flight: list[_Item] = []  # the batch being processed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def oldest_wait_s(self) -> float:
        """How long the oldest request still waiting has waited (0 when none waits): the worker's backlog, in
        time. A request waits up to ``gather_s`` by design; much longer means the worker falls behind."""
        with self._cond:
            return max(0.0, self._clock() - self._queue[0].arrived_s) if self._queue else 0.0

    def submit(self, key: Hashable, request: Req) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("worker is closed")
            self._queue.append(_Item(key, request, future, self._clock()))
            self._cond.notify()
        return future

    def close(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def _gather_wait_s(self) -> float:
        """How much longer the tick waits for more sessions' requests (0: start now). Called with the lock held."""
        if self._gather_s <= 0 or self._closed:
            return 0.0
        return gather_wait_s(self._queue[0].arrived_s, self._clock(), self._gather_s,
                             len({item.key for item in self._queue}), self._max_batch)

    def _take_batch(self) -> list[_Item]:
        batch: list[_Item] = []
        seen: set[Hashable] = set()
        kept: deque[_Item] = deque()
        while self._queue and len(batch) < self._max_batch:
            item = self._queue.popleft()
            if item.key in seen:
                kept.append(item)
            else:
                seen.add(item.key)
                batch.append(item)
        kept.extend(self._queue)
        self._queue = kept
        return batch

    def _run(self) -> None:
        try:
            self._serve()
        finally:  # however the thread ends, no session waits for ever on a request it will never process
            self._fail_pending()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed and not self._queue:
                    return
                while (wait_s := self._gather_wait_s()) > 0:  # woken by each submit, and by close
                    self._cond.wait(wait_s)
                batch = self._take_batch()
            live = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if not live:
                continue
            self._in_flight = live
            started = time.perf_counter()
            try:
                results = self._process_batch([item.request for item in live])
                if len(results) != len(live):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(live)} requests")
            except Exception as exc:  # noqa: BLE001 - delivered to every waiting session; the worker goes on
                log.exception("batch of %d failed", len(live))
                for item in live:
                    item.future.set_exception(exc)
                self._in_flight = []
                continue
            if self._on_batch is not None:
                try:
                    self._on_batch(len(live), time.perf_counter() - started)
                except Exception:  # noqa: BLE001 - a metrics callback never stops inference
                    log.exception("on_batch callback failed")
            for item, result in zip(live, results, strict=True):
                item.future.set_result(result)
            self._in_flight = []

    def _fail_pending(self) -> None:
        """Close the worker and fail every request it holds (the thread is ending, e.g. on a BaseException)."""
        with self._cond:
            self._closed = True
            pending, self._queue = [*self._in_flight, *self._queue], deque()
            self._in_flight = []
        for item in pending:
            if not item.future.done():
                if item.future.running() or item.future.set_running_or_notify_cancel():
                    item.future.set_exception(RuntimeError(f"the {self._thread.name} thread ended"))
