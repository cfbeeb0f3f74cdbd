import threading

import pytest

from rtsep.runtime.worker import BatchWorker


def test_one_request_per_key_per_batch_in_order():
    gate = threading.Event()
    batches: list[list[tuple[str, int]]] = []

    def process(requests):
        gate.wait(5)
        batches.append(list(requests))
        return [f"{key}{n}" for key, n in requests]

    worker = BatchWorker(process, max_batch=8)
    futures = [worker.submit("blocker", ("x", 0))]
    futures += [worker.submit(key, (key, n)) for n in range(3) for key in ("a", "b")]
    gate.set()
    assert [f.result(5) for f in futures] == ["x0", "a0", "b0", "a1", "b1", "a2", "b2"]
    worker.close()
    for batch in batches:
        keys = [key for key, _ in batch]
        assert len(keys) == len(set(keys)), "a session appears twice in one batch"
    order_a = [n for batch in batches for key, n in batch if key == "a"]
    assert order_a == [0, 1, 2]
    assert any(len(b) == 2 for b in batches), "sessions were not batched together"


def test_max_batch_and_errors_reach_every_waiter():
    def process(requests):
        if any(r == "boom" for r in requests):
            raise ValueError("model failed")
        return requests

    worker = BatchWorker(process, max_batch=2)
    ok = worker.submit(1, "fine")
    assert ok.result(5) == "fine"
    bad = worker.submit(2, "boom")
    with pytest.raises(ValueError):
        bad.result(5)
    assert worker.submit(3, "again").result(5) == "again"  # the worker survives a failed batch
    worker.close()
    with pytest.raises(RuntimeError):
        worker.submit(4, "late")


class _Stop(BaseException):
    """Not an error of a batch (like KeyboardInterrupt or SystemExit): the worker must not catch it."""


def test_a_base_exception_ends_the_worker_and_fails_every_waiter():
    entered, release = threading.Event(), threading.Event()
    seen = []

    def process(requests):
        entered.set()
        release.wait(5)
        raise _Stop

    def hook(args):
        seen.append(args.exc_type)

    previous, threading.excepthook = threading.excepthook, hook
    try:
        worker = BatchWorker(process, max_batch=1)
        in_flight = worker.submit("a", 1)
        assert entered.wait(5)
        queued = worker.submit("b", 2)  # waits behind the batch that will never finish
        release.set()
        for future in (in_flight, queued):
            with pytest.raises(RuntimeError, match="thread ended"):
                future.result(5)
        worker.close()
    finally:
        threading.excepthook = previous
    assert seen == [_Stop]  # it reached the thread's top level: not caught
    with pytest.raises(RuntimeError):
        worker.submit("c", 3)


def test_a_failing_metrics_callback_does_not_stop_inference():
    def on_batch(size, seconds):
        raise ValueError("metrics broke")

    worker = BatchWorker(lambda requests: [r * 2 for r in requests], max_batch=4, on_batch=on_batch)
    assert [worker.submit(k, k).result(5) for k in range(3)] == [0, 2, 4]
    worker.close()


def test_a_wrong_number_of_results_fails_the_batch():
    worker = BatchWorker(lambda requests: [], max_batch=4)
    with pytest.raises(RuntimeError, match="0 results for 1 requests"):
        worker.submit("a", 1).result(5)
    worker.close()


def test_gather_window_batches_sessions_that_arrive_apart():
    batches: list[list[str]] = []

    def process(requests):
        batches.append(list(requests))
        return requests

    # a window far longer than the test: the tick starts when max_batch sessions wait, not when the window ends
    worker = BatchWorker(process, max_batch=3, gather_s=600.0)
    first = worker.submit("a", "a0")
    assert not first.done()  # held for the others, not run alone
    futures = [first, worker.submit("b", "b0"), worker.submit("c", "c0")]
    assert [f.result(30) for f in futures] == ["a0", "b0", "c0"]
    worker.close()
    assert batches == [["a0", "b0", "c0"]]


def test_gather_window_ends_on_close():
    worker = BatchWorker(lambda requests: requests, max_batch=8, gather_s=600.0)
    pending = worker.submit("a", "a0")
    worker.close(timeout_s=30)
    assert pending.result(0) == "a0"  # processed, not left waiting for the window


def test_gather_wait_counts_from_the_oldest_request():
    from rtsep.runtime.worker import gather_wait_s

    assert gather_wait_s(10.0, 10.01, 0.05, waiting_keys=1, max_batch=8) == pytest.approx(0.04)
    assert gather_wait_s(10.0, 10.2, 0.05, waiting_keys=1, max_batch=8) == 0.0  # it already waited (worker busy)
    assert gather_wait_s(10.0, 10.01, 0.05, waiting_keys=8, max_batch=8) == 0.0  # a full batch starts at once
    assert gather_wait_s(10.0, 10.0, 0.0, waiting_keys=1, max_batch=8) == 0.0


def test_gather_s_must_not_be_negative():
    with pytest.raises(ValueError):
        BatchWorker(lambda requests: requests, max_batch=1, gather_s=-0.1)


def test_oldest_wait_is_the_backlog_in_time():
    now = [100.0]
    gate, started = threading.Event(), threading.Event()

    def process(requests):
        started.set()
        gate.wait(10)
        return requests

    worker = BatchWorker(process, max_batch=1, clock=lambda: now[0])
    try:
        assert worker.oldest_wait_s() == 0.0
        busy = worker.submit("a", "a0")  # taken at once: the worker holds it
        assert started.wait(10)
        now[0] = 101.0
        waiting = worker.submit("b", "b0")
        assert worker.oldest_wait_s() == 0.0  # (b arrived at 101.0)
        now[0] = 101.5
        assert worker.oldest_wait_s() == pytest.approx(0.5)
        gate.set()
        assert busy.result(10) == "a0" and waiting.result(10) == "b0"
        assert worker.oldest_wait_s() == 0.0
    finally:
        gate.set()
        worker.close()
