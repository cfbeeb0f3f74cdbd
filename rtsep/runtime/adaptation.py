"""Live adaptation rounds across a server's sessions: one at a time, from a bounded and fair queue, within a CPU share.

- :class:`AdaptationQueue` (the policy; no threads, no clock): at most ``max_queued`` rounds wait. A session has at
  most one waiting round: a newer one replaces it in place (the replaced one is handed back, to be told so). When the
  queue is full, a round of a session with none waiting is refused. The next round is that of the waiting session
  with the fewest rounds started so far (ties: the earliest queued), so every session gets its first round before
  any gets a second, however often the early ones ask.
- :class:`DutyCycle` (the budget; no threads, the clock is given): after work that took ``d`` seconds of wall time,
  rest ``d * (1 - share) / share``, so that the rounds keep at most ``share`` of one core's time, server-wide.
- :class:`AdaptationWorker`: the thread that runs the rounds (below the inference threads' priority), resting as
  the duty cycle says between the steps of a round (each round calls the ``pace`` it is given after every step),
  and, while the live inference falls behind (its oldest waiting step older than ``yield_backlog_s``), waiting until
  it has caught up: live steps first, adaptation with what is left (a round under overload waits, unfinished).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Waiting(Generic[T]):
    key: Hashable
    item: T
    order: int  # when it was first queued (a replacement keeps its place)


class AdaptationQueue(Generic[T]):
    def __init__(self, max_queued: int) -> None:
        if max_queued < 1:
            raise ValueError(f"max_queued must be >= 1, got {max_queued}")
        self.max_queued = max_queued
        self._waiting: dict[Hashable, _Waiting[T]] = {}
        self._started: dict[Hashable, int] = {}  # rounds started per session (until it is forgotten)
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._waiting)

    def offer(self, key: Hashable, item: T) -> tuple[bool, T | None]:
        """Queue ``item`` for session ``key``: (accepted, the round it replaced or None). Not accepted: the queue
        is full of other sessions' rounds."""
        waiting = self._waiting.get(key)
        if waiting is not None:
            replaced, waiting.item = waiting.item, item
            return True, replaced
        if len(self._waiting) >= self.max_queued:
            return False, None
        self._waiting[key] = _Waiting(key, item, next(self._order))
        return True, None

    def take(self) -> tuple[Hashable, T] | None:
        """The next round to run (None: none waits): the fewest rounds started first, then the earliest queued."""
        if not self._waiting:
            return None
        chosen = min(self._waiting.values(), key=lambda w: (self._started.get(w.key, 0), w.order))
        del self._waiting[chosen.key]
        self._started[chosen.key] = self._started.get(chosen.key, 0) + 1
        return chosen.key, chosen.item

    def discard(self, key: Hashable) -> T | None:
        """Session ``key`` ended: its waiting round (returned, if any) leaves the queue and its count is forgotten."""
        self._started.pop(key, None)
        waiting = self._waiting.pop(key, None)
        return waiting.item if waiting is not None else None

    def drain(self) -> list[T]:
        """Every waiting round, removed (the server closes)."""
        items = [w.item for w in self._waiting.values()]
        self._waiting.clear()
        return items


class DutyCycle:
    """Keeps busy time to ``share`` of wall time: :meth:`rest_after` says how long to rest after the work done since
    :meth:`resume` (``share`` 1: never rests)."""

    def __init__(self, share: float) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"the CPU share must be within (0, 1], got {share!r}")
        self.share = share
        self._since: float | None = None

    def resume(self, now_s: float) -> None:
        """Work starts (again) at ``now_s``."""
        self._since = now_s

    def rest_after(self, now_s: float) -> float:
        """Seconds to rest now, for the work since the last :meth:`resume`."""
        if self._since is None:
            return 0.0
        busy = max(0.0, now_s - self._since)
        return busy * (1.0 - self.share) / self.share


def lower_priority() -> None:
    """Background adaptation yields the CPU to real-time inference (Linux: per-thread nice value)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: it runs at the normal priority
        log.debug("cannot lower the adaptation thread's priority", exc_info=True)


@dataclass
class _Round:
    run: Callable[[Callable[[], None]], Any]  # run(pace) -> result; calls pace() after every step
    skipped: Callable[[str], Any]  # the result of a round that never ran, with the reason
    future: Future = field(default_factory=Future)


class AdaptationWorker:
    """Runs adaptation rounds one at a time in a thread of its own, in :class:`AdaptationQueue` order, resting per
    :class:`DutyCycle` (``cpu_share`` of one core) between the steps of a round. ``clock`` and ``wait`` (rest for
    so many seconds unless closed; returns True when closed) are injectable for tests."""

    def __init__(self, max_queued: int, cpu_share: float, name: str = "rtsep-adapt",
                 clock: Callable[[], float] = time.perf_counter,
                 initializer: Callable[[], None] | None = lower_priority,
                 live_backlog_s: Callable[[], float] | None = None, yield_backlog_s: float = 0.15,
                 yield_poll_s: float = 0.02) -> None:
        """``live_backlog_s``: how long the live inference's oldest waiting step has waited; while it exceeds
        ``yield_backlog_s`` the round waits between its steps (looking again every ``yield_poll_s``)."""
        if not yield_backlog_s > 0 or not yield_poll_s > 0:
            raise ValueError("yield_backlog_s and yield_poll_s must be > 0")
        self._queue: AdaptationQueue[_Round] = AdaptationQueue(max_queued)
        self._duty = DutyCycle(cpu_share)
        self._clock = clock
        self._cond = threading.Condition()
        self._closed = threading.Event()
        self._initializer = initializer
        self._live_backlog_s, self._yield_backlog_s, self._yield_poll_s = live_backlog_s, yield_backlog_s, yield_poll_s
        self.rested_s = 0.0  # seconds rested in all (the duty cycle at work)
        self.yielded_s = 0.0  # seconds waited for the live inference to catch up
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def submit(self, key: Hashable, run: Callable[[Callable[[], None]], Any],
               skipped: Callable[[str], Any]) -> Future:
        """Queue a round of session ``key``; its future gets ``run(pace)``'s result, or ``skipped(reason)`` when it
        is replaced by a newer round of the session, refused (queue full), discarded or closed before it ran."""
        new = _Round(run, skipped)
        with self._cond:
            if self._closed.is_set():
                new.future.set_result(skipped("the server is closing"))
                return new.future
            accepted, replaced = self._queue.offer(key, new)
            self._cond.notify()
        if not accepted:
            log.info("adaptation queue full (%d rounds): a round of %s is refused", self._queue.max_queued, key)
            new.future.set_result(skipped(f"the adaptation queue is full ({self._queue.max_queued} rounds wait)"))
        if replaced is not None:
            replaced.future.set_result(replaced.skipped("replaced by the session's newer round"))
        return new.future

    def discard(self, key: Hashable) -> None:
        """Session ``key`` ended: a round of it still waiting will not run."""
        with self._cond:
            waiting = self._queue.discard(key)
        if waiting is not None:
            waiting.future.set_result(waiting.skipped("the session ended before its adaptation started"))

    def close(self, timeout_s: float = 30.0) -> None:
        with self._cond:
            self._closed.set()
            left = self._queue.drain()
            self._cond.notify_all()
        for waiting in left:
            waiting.future.set_result(waiting.skipped("the server is closing"))
        self._thread.join(timeout_s)

    def _pace(self) -> None:
        """Between two steps of a round: rest as the duty cycle says, then wait while the live inference is behind
        (both cut short when the worker closes)."""
        rest = self._duty.rest_after(self._clock())
        if rest > 0:
            self.rested_s += rest
            self._closed.wait(rest)
        if self._live_backlog_s is not None:
            started = self._clock()
            while self._live_backlog_s() > self._yield_backlog_s and not self._closed.wait(self._yield_poll_s):
                pass
            self.yielded_s += self._clock() - started
        self._duty.resume(self._clock())

    def _serve(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while True:
            with self._cond:
                while not len(self._queue) and not self._closed.is_set():
                    self._cond.wait()
                if self._closed.is_set():
                    return
                taken = self._queue.take()
            assert taken is not None
            _, current = taken
            if not current.future.set_running_or_notify_cancel():
                continue
            self._duty.resume(self._clock())
            try:
                current.future.set_result(current.run(self._pace))
            except BaseException as exc:  # noqa: BLE001 - delivered to the session that asked; the worker goes on
                log.exception("an adaptation round failed")
                current.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
