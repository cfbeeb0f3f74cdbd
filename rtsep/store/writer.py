"""The store's writes off the event loop: one thread performs them in order, behind a bounded queue.

A session's driver hands each write (a track's samples, a closed turn, its info, its final timeline) to
:meth:`StoreWriter.submit`, which waits, without blocking the event loop, while ``max_pending_writes`` are
queued. A failed write is logged and reported back on the submitter's event loop (``on_error``), so that
the session can tell its client (``store_error``); a committed one is confirmed there (``on_committed``), in the
order of the writes, so that the session acknowledges to its client only what is committed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from rtsep.errors import StoreError

log = logging.getLogger(__name__)

_STOP = object()


class StoreWriter:
    def __init__(self, max_pending_writes: int = 1024, name: str = "rtsep-store-writer") -> None:
        if max_pending_writes < 1:
            raise ValueError("max_pending_writes must be >= 1")
        self.max_pending_writes = max_pending_writes
        self._items: queue.SimpleQueue = queue.SimpleQueue()
        self._room = asyncio.Semaphore(max_pending_writes)  # bound to the loop of its first waiter
        self._closed = False
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    async def submit(self, write: Callable[[], Any], on_error: Callable[[StoreError], Any] | None = None,
                     on_committed: Callable[[], Any] | None = None) -> None:
        """Queue ``write`` (returns once it is queued, not done). Once it is done, on the submitter's event loop:
        ``on_committed()`` if it returned, ``on_error(error)`` if it raised."""
        if self._closed:
            raise StoreError("the store writer is closed")
        await self._room.acquire()
        self._items.put((write, (on_error, on_committed), asyncio.get_running_loop(), None))

    async def call(self, op: Callable[[], Any]) -> Any:
        """Run ``op`` in the writer's thread after everything queued before it; its result, or its exception."""
        if self._closed:
            raise StoreError("the store writer is closed")
        await self._room.acquire()
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()
        self._items.put((op, (None, None), loop, done))
        return await done

    async def flush(self) -> None:
        """Wait until every write queued so far is done."""
        await self.call(lambda: None)

    def close(self, timeout_s: float = 10.0) -> None:
        """Finish what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._items.put(_STOP)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("store writer: writes still pending after %.0f s at close", timeout_s)

    def _run(self) -> None:
        while True:
            item = self._items.get()
            if item is _STOP:
                return
            op, callbacks, loop, done = item
            result: Any = None
            error: BaseException | None = None
            try:
                result = op()
            except StoreError as exc:
                log.error("store write failed: %s", exc.message)
                error = exc
            except Exception as exc:  # noqa: BLE001 - reported to the session, the thread goes on
                log.exception("store write failed")
                error = StoreError(f"store write failed: {exc}")
            if error is not None:
                self.failures += 1
            self._reply(loop, done, callbacks, result, error)

    def _reply(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future | None,
               callbacks: tuple[Callable[[StoreError], Any] | None, Callable[[], Any] | None], result: Any,
               error: BaseException | None) -> None:
        on_error, on_committed = callbacks

        def deliver() -> None:
            self._room.release()
            if done is not None:
                if done.cancelled():
                    return
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(result)
            elif error is not None:
                if on_error is not None:
                    on_error(error)  # type: ignore[arg-type]
            elif on_committed is not None:
                try:
                    on_committed()
                except Exception:  # noqa: BLE001 - the submitter's bug: logged, the writer goes on
                    log.exception("store writer: a commit confirmation failed")

        try:
            loop.call_soon_threadsafe(deliver)
        except RuntimeError:  # the submitter's loop is closed: nobody is left to tell
            if error is not None:
                log.error("store write failed after its session's event loop closed: %s", error)
