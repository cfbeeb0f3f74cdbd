"""CPU per call of the live paths' converters (rtsep.stream.resample.IntegerRatioResampler) at the sizes a live
session feeds them: 20 ms client messages 16 -> 8 kHz (the separator's input) and 100 ms separator steps
8 -> 16 kHz (each separated source back to the session's rate). Medians of ``--repeats`` runs of ``--calls`` calls.

    python -m bench.resample_speed [--calls 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from bench.common import machine_note
from rtsep.stream.resample import IntegerRatioResampler


def us_per_call(in_rate_hz: int, out_rate_hz: int, chunk: int, calls: int) -> float:
    resampler = IntegerRatioResampler(in_rate_hz, out_rate_hz)
    x = np.random.default_rng(0).standard_normal(chunk * calls).astype(np.float32)
    started = time.perf_counter()
    for i in range(calls):
        resampler.process(x[i * chunk:(i + 1) * chunk])
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    note = machine_note()
    cases = {"16k->8k, 320 samples (20 ms message)": (16000, 8000, 320),
             "8k->16k, 800 samples (100 ms step)": (8000, 16000, 800)}
    report = {name: round(statistics.median(us_per_call(*case, args.calls) for _ in range(args.repeats)), 1)
              for name, case in cases.items()}
    print(json.dumps({"us_per_call_median": report, "machine": note}, indent=1))


if __name__ == "__main__":
    main()
