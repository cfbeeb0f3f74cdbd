"""StoreWriter: the store's writes in one thread, in order, behind a bounded queue; failures reported back."""

import asyncio
import threading

import pytest

from rtsep.errors import StoreError
from rtsep.store.writer import StoreWriter


async def test_writes_run_in_order_off_the_event_loop():
    writer = StoreWriter(max_pending_writes=8)
    done, threads = [], set()
    for i in range(20):
        await writer.submit(lambda i=i: (done.append(i), threads.add(threading.get_ident())))
    await writer.flush()
    assert done == list(range(20)) and threading.get_ident() not in threads and len(threads) == 1
    assert await writer.call(lambda: 42) == 42
    writer.close()


async def test_a_full_queue_makes_the_submitter_wait_without_blocking_the_loop():
    writer = StoreWriter(max_pending_writes=2)
    gate = threading.Event()
    await writer.submit(gate.wait)  # holds the writer thread
    await writer.submit(lambda: None)
    third = asyncio.create_task(writer.submit(lambda: None))
    for _ in range(20):  # the loop keeps running; the third write waits for room
        await asyncio.sleep(0)
    assert not third.done()
    gate.set()
    await asyncio.wait_for(third, 5)
    writer.close()


async def test_a_failed_write_is_reported_on_the_event_loop_and_the_writer_goes_on():
    writer = StoreWriter()
    reported = []
    failed = asyncio.Event()

    def on_error(error):
        reported.append((error, threading.get_ident()))
        failed.set()

    def disk_full():
        raise OSError("[Errno 28] No space left on device")

    await writer.submit(disk_full, on_error)
    await asyncio.wait_for(failed.wait(), 5)
    (error, thread), = reported
    assert isinstance(error, StoreError) and "No space left" in error.message and thread == threading.get_ident()
    with pytest.raises(StoreError, match="refused"):
        await writer.call(lambda: (_ for _ in ()).throw(StoreError("refused")))
    assert await writer.call(lambda: "still writing") == "still writing" and writer.failures == 2
    writer.close()
    with pytest.raises(StoreError, match="closed"):
        await writer.submit(lambda: None)


async def test_commits_are_confirmed_on_the_event_loop_in_order_and_only_after_the_write():
    writer = StoreWriter(max_pending_writes=8)
    gate = threading.Event()
    written, confirmed = [], []
    loop_thread = threading.get_ident()

    def write(i):
        if i == 0:
            gate.wait()
        written.append(i)

    def fail():
        raise StoreError("disk full")

    for i in range(3):
        await writer.submit(lambda i=i: write(i), on_committed=lambda i=i: confirmed.append((i, threading.get_ident())))
    await writer.submit(fail, on_error=lambda e: confirmed.append(("failed", e.message)),
                        on_committed=lambda: confirmed.append("never"))
    for _ in range(20):
        await asyncio.sleep(0)
    assert confirmed == [] and written == []  # the first write is still running: nothing is confirmed
    gate.set()
    await writer.flush()
    assert confirmed == [(0, loop_thread), (1, loop_thread), (2, loop_thread), ("failed", "disk full")]
    writer.close()
