"""Live adaptation across sessions (rtsep.runtime.adaptation): a bounded, fair queue; a CPU share; the worker."""

import threading

import pytest

from rtsep.runtime.adaptation import AdaptationQueue, AdaptationWorker, DutyCycle


def test_a_session_s_newer_round_replaces_its_waiting_one_in_place():
    q: AdaptationQueue[str] = AdaptationQueue(max_queued=4)
    assert q.offer("a", "a1") == (True, None)
    assert q.offer("b", "b1") == (True, None)
    assert q.offer("a", "a2") == (True, "a1")  # handed back, to be told it was replaced
    assert len(q) == 2
    assert q.take() == ("a", "a2")  # a's place in line was kept, with its newer material
    assert q.take() == ("b", "b1")
    assert q.take() is None


def test_the_queue_is_bounded_and_refuses_a_new_session_when_full():
    q: AdaptationQueue[str] = AdaptationQueue(max_queued=2)
    q.offer("a", "a1")
    q.offer("b", "b1")
    assert q.offer("c", "c1") == (False, None)
    assert q.offer("a", "a2") == (True, "a1")  # a replacement needs no room
    assert len(q) == 2
    with pytest.raises(ValueError):
        AdaptationQueue(0)


def test_every_session_gets_its_first_round_before_any_gets_a_second():
    q: AdaptationQueue[str] = AdaptationQueue(max_queued=8)
    q.offer("a", "a1")
    assert q.take() == ("a", "a1")  # a has had one round
    q.offer("a", "a2")  # a asks again before b and c ask at all
    q.offer("b", "b1")
    q.offer("c", "c1")
    assert [q.take()[0] for _ in range(3)] == ["b", "c", "a"]
    q.offer("c", "c2")
    q.offer("b", "b2")
    assert [q.take()[0] for _ in range(2)] == ["c", "b"]  # equal counts: the earliest queued first


def test_a_discarded_session_leaves_the_queue_and_its_count_is_forgotten():
    q: AdaptationQueue[str] = AdaptationQueue(max_queued=4)
    q.offer("a", "a1")
    q.take()
    q.offer("a", "a2")
    q.offer("b", "b1")
    assert q.discard("a") == "a2" and q.discard("a") is None
    assert q.take() == ("b", "b1")  # b has had a round now
    q.offer("b", "b2")
    q.offer("a", "a3")  # a as a new session: no rounds counted, so before b's second though queued after it
    assert q.take() == ("a", "a3")
    assert q.drain() == ["b2"] and len(q) == 0


def test_the_duty_cycle_rests_so_that_busy_time_is_its_share():
    duty = DutyCycle(0.25)
    assert duty.rest_after(5.0) == 0.0  # nothing started yet
    duty.resume(10.0)
    assert duty.rest_after(10.3) == pytest.approx(0.9)  # 0.3 s busy, 0.9 s rest: a quarter of the time
    assert DutyCycle(1.0).rest_after(1.0) == 0.0
    with pytest.raises(ValueError):
        DutyCycle(0.0)


class FakeClock:
    """Time moves only when a round says it worked (``work``) or the worker rests (recorded)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_worker_runs_rounds_one_at_a_time_in_fair_order_resting_between_steps():
    clock = FakeClock()
    worker = AdaptationWorker(max_queued=4, cpu_share=0.5, clock=clock, initializer=None)
    gate, a1_started = threading.Event(), threading.Event()
    order = []

    def round_of(name, steps):
        def run(pace):
            if name == "a1":
                a1_started.set()
                gate.wait(10)  # holds the worker while the others queue up behind it
            order.append(name)
            for _ in range(steps):
                clock.now += 0.001  # a step "takes" 1 ms of the fake clock
                pace()
            return name
        return run

    def skipped(reason):
        return f"skipped: {reason}"

    try:
        first = worker.submit("a", round_of("a1", 2), skipped)
        assert a1_started.wait(10)
        a2 = worker.submit("a", round_of("a2", 1), skipped)
        b1 = worker.submit("b", round_of("b1", 1), skipped)
        a3 = worker.submit("a", round_of("a3", 1), skipped)  # replaces a2, which never runs
        gate.set()
        assert first.result(10) == "a1"
        assert a2.result(10) == "skipped: replaced by the session's newer round"
        assert b1.result(10) == "b1" and a3.result(10) == "a3"
        assert order == ["a1", "b1", "a3"]  # b had no round yet: it goes before a's second
        assert worker.rested_s == pytest.approx(0.004, abs=1e-9)  # share 0.5: rest as long as each 1 ms step
    finally:
        worker.close()


def test_rounds_waiting_when_the_worker_closes_or_the_session_ends_are_told_why():
    clock = FakeClock()
    worker = AdaptationWorker(max_queued=1, cpu_share=1.0, clock=clock, initializer=None)
    gate, started = threading.Event(), threading.Event()

    def hold(pace):
        started.set()
        gate.wait(10)
        return "held"

    def skipped(reason):
        return f"skipped: {reason}"

    running = worker.submit("a", hold, skipped)
    assert started.wait(10)
    waiting = worker.submit("b", lambda pace: "b", skipped)
    refused = worker.submit("c", lambda pace: "c", skipped)
    assert refused.result(10) == "skipped: the adaptation queue is full (1 rounds wait)"
    worker.discard("b")
    assert waiting.result(10) == "skipped: the session ended before its adaptation started"
    later = worker.submit("d", lambda pace: "d", skipped)
    worker.close(timeout_s=0.0)  # (the held round is still running; close does not wait for it here)
    assert later.result(10) == "skipped: the server is closing"
    gate.set()
    assert running.result(10) == "held"
    assert worker.submit("e", lambda pace: "e", skipped).result(10) == "skipped: the server is closing"


def test_a_round_waits_between_its_steps_while_the_live_inference_is_behind():
    backlog = [0.0]
    worker = AdaptationWorker(max_queued=1, cpu_share=1.0, initializer=None, live_backlog_s=lambda: backlog[0],
                              yield_backlog_s=0.15, yield_poll_s=0.005)
    steps: list[int] = []
    first_done = threading.Event()

    def run(pace):
        for step in range(3):
            steps.append(step)
            if step == 0:
                backlog[0] = 0.4  # the live steps fall behind while the first step runs
                first_done.set()
            pace()
        return "done"

    try:
        future = worker.submit("a", run, lambda reason: reason)
        assert first_done.wait(10)
        threading.Event().wait(0.2)
        assert steps == [0] and not future.done()  # held after its first step, not cut off
        backlog[0] = 0.1  # caught up (under the bound)
        assert future.result(10) == "done" and steps == [0, 1, 2]
        assert worker.yielded_s >= 0.15
    finally:
        worker.close()


def test_a_round_held_for_the_live_inference_ends_when_the_worker_closes():
    worker = AdaptationWorker(max_queued=1, cpu_share=1.0, initializer=None, live_backlog_s=lambda: 10.0,
                              yield_poll_s=0.005)
    paced = threading.Event()

    def run(pace):
        paced.set()
        pace()  # behind for ever: only the close ends the wait
        return "ended"

    future = worker.submit("a", run, lambda reason: reason)
    assert paced.wait(10)
    worker.close(timeout_s=10)
    assert future.result(10) == "ended"
    with pytest.raises(ValueError):
        AdaptationWorker(max_queued=1, cpu_share=1.0, initializer=None, yield_backlog_s=0)
