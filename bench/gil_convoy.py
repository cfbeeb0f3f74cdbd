"""The separator's step beside a thread that runs Python: eager against traced, at two GIL switch intervals.

    python -m bench.gil_convoy [--sessions 16] [--ticks 20] [--busy-share 1.0]

A live server's event loop runs Python while the separator's worker thread runs a batch. The eager step is
thousands of small torch calls (``eager_torch_calls_per_step`` in the report counts them); each gives the GIL up
and must win it back, which can take up to the interpreter's switch interval while another thread runs Python.
The traced step (``[separator] traced``) is one call into TorchScript.
This times one batch of ``--sessions`` 100 ms steps of the shipped Conv-TasNet (one torch thread), alone and beside a
thread that runs pure Python ``--busy-share`` of the time (1.0: always, the worst case), for each combination of
step (eager / traced) and switch interval (Python's 5 ms / rtsep's ``[runtime] gil_switch_interval_s``).
Medians over ``--ticks`` ticks. Run it on an otherwise idle machine: a third busy thread changes the figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

import torch

from bench.common import machine_note
from rtsep.runtime.diarization import RuntimeConfig
from rtsep.separate.convtasnet import ConvTasNetSeparator, default_checkpoint_path, load_convtasnet


def _busy(stop: threading.Event, share: float) -> None:
    """Pure Python for ``share`` of each 10 ms, asleep for the rest."""
    while not stop.is_set():
        started = time.perf_counter()
        total = 0
        while time.perf_counter() - started < 0.01 * share:
            for i in range(200):
                total += i
        if share < 1.0:
            time.sleep(0.01 * (1.0 - share))


def tick_ms(separator: ConvTasNetSeparator, sessions: int, ticks: int) -> float:
    states = [separator.new_state() for _ in range(sessions)]
    x = 0.1 * torch.randn(sessions, separator.spec.step_samples, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for tick in range(ticks + 3):
            started = time.perf_counter()
            separator.process(x, states)
            if tick >= 3:
                times.append(time.perf_counter() - started)
    return round(1000 * statistics.median(times), 1)


def torch_calls_per_step(separator: ConvTasNetSeparator, sessions: int) -> int:
    """How many torch operator calls one eager step makes from Python (top-level events of torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    states = [separator.new_state() for _ in range(sessions)]
    x = torch.zeros(sessions, separator.spec.step_samples)
    with torch.inference_mode():
        separator.process(x, states)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            separator.process(x, states)
    return sum(1 for event in prof.events() if event.cpu_parent is None)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--ticks", type=int, default=20)
    parser.add_argument("--busy-share", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    note = machine_note()
    model = load_convtasnet(default_checkpoint_path(), norm_memory_s=16.0)
    separators = {"eager": ConvTasNetSeparator(model), "traced": ConvTasNetSeparator(model, traced=True)}
    python_s, rtsep_s = sys.getswitchinterval(), RuntimeConfig().gil_switch_interval_s
    rows = []
    for interval in (python_s, rtsep_s):
        sys.setswitchinterval(interval)
        for beside in (False, True):
            stop = threading.Event()
            busy = threading.Thread(target=_busy, args=(stop, args.busy_share), daemon=True) if beside else None
            if busy is not None:
                busy.start()
            try:
                row = {"switch_interval_s": interval, "busy_thread": beside}
                for name, separator in separators.items():
                    row[f"{name}_ms"] = tick_ms(separator, args.sessions, args.ticks)
            finally:
                stop.set()
                if busy is not None:
                    busy.join()
            rows.append(row)
            print(json.dumps(row), flush=True)
    sys.setswitchinterval(python_s)
    calls = torch_calls_per_step(separators["eager"], args.sessions)
    print(json.dumps({"sessions": args.sessions, "busy_share": args.busy_share, "eager_torch_calls_per_step": calls,
                      "rows": rows, "machine": note}))


if __name__ == "__main__":
    main()
