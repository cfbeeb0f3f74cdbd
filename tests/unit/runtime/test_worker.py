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
