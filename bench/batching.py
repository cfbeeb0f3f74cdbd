"""Cost of one batched inference tick of the diarization runtime versus the number of sessions in it.

    python -m bench.batching [--sizes 1 4 8 16] [--ticks 40] [--wav FILE --rttm FILE]

Calls the runtime's batch function directly (no server, no event loop) on real speech from the sample.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import soundfile as sf

from bench.common import add_audio_args, audio_paths, machine_note
from rtsep.diarize.online import DiarizationConfig
from rtsep.diarize.vad import VadState
from rtsep.runtime.diarization import DiarizationRuntime, DiarizeRequest, RuntimeConfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--ticks", type=int, default=40, help="timed after 5 of warm-up")
    add_audio_args(parser)
    args = parser.parse_args()
    note = machine_note()
    audio, _ = sf.read(str(audio_paths(args)[0]), dtype="float32")
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
