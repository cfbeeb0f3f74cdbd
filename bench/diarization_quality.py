"""DER of the live and the final timeline on the pyannote sample (real two-talker speech, evaluation only),
and the real-time factor of `rtsep process` on it.

    python -m bench.diarization_quality [--runs 3] [--config FILE] [--wav FILE --rttm FILE]

DER: pyannote.metrics, collar ±0.25 s around reference boundaries (collar=0.5 in pyannote's convention),
overlapping speech scored (skip_overlap=False).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.common import add_audio_args, audio_paths, machine_note
from rtsep.compose import process_file
from rtsep.config import load_config
from rtsep.demo import diarization_error_rate
from rtsep.runtime.diarization import DiarizationRuntime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--config")
    add_audio_args(parser)
    args = parser.parse_args()
    config = load_config(args.config, env={}).pipeline
    wav, rttm = audio_paths(args)
    reference = rttm.read_text()
    note = machine_note()
    runtime = DiarizationRuntime(config.runtime, config.diarization)
    elapsed, result = [], None
    try:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as out:
                t0 = time.perf_counter()
                result = asyncio.run(process_file(wav, Path(out), config, runtime))
                elapsed.append(time.perf_counter() - t0)
    finally:
        runtime.close()
    report = {
        "input": str(wav),
        "speakers_found": result.speakers,
        "live": diarization_error_rate(reference, result.live),
        "final": diarization_error_rate(reference, result.final),
        "process_rtf_median": round(statistics.median(elapsed) / result.duration_s, 4),
        "process_rtf_runs": [round(e / result.duration_s, 4) for e in elapsed],
        "machine": note,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
