"""Cost of one batched inference tick of the diarization runtime versus the number of sessions in it.

    python bench/batching.py [--sizes 1 4 8 16] [--ticks 40]

Calls the runtime's batch function directly (no server, no event loop) on real speech from the sample.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_note  # noqa: E402

from rtsep.demo import sample_paths  # noqa: E402
from rtsep.diarize.online import DiarizationConfig  # noqa: E402
from rtsep.diarize.vad import VadState  # noqa: E402
from rtsep.runtime.diarization import DiarizationRuntime, DiarizeRequest, RuntimeConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--ticks", type=int, default=40)
    args = parser.parse_args()
    note = machine_note()
    audio, _ = sf.read(str(sample_paths()[0]), dtype="float32")
    config = DiarizationConfig()
    runtime = DiarizationRuntime(RuntimeConfig(), config)
    step, window = config.step_samples, config.embedding_window_samples
    rows = []
    try:
        for size in args.sizes:
            states = [VadState.initial() for _ in range(size)]
            times = []
            for k in range(args.ticks):
                end = window + (k * step) % (audio.size - window - step) + step
                requests = [DiarizeRequest(k, end - step, step, audio[end - step : end].copy(),
                                           audio[end - window : end].copy(), states[b]) for b in range(size)]
                t0 = time.perf_counter()
                runtime._process(requests)
                times.append(time.perf_counter() - t0)
            tick_s = float(np.median(times[5:]))
            rows.append({"sessions": size, "tick_ms_median": round(tick_s * 1e3, 1),
                         "inference_rtf_per_session": round(tick_s / size / config.step_s, 4)})
    finally:
        runtime.close()
    print(json.dumps({"rows": rows, "step_s": config.step_s, "machine": note}, indent=1))


if __name__ == "__main__":
    main()
