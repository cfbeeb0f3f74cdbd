"""Robustness of the live and final timelines to where the audio starts: the pyannote sample delayed by
0–200 ms (leading silence), each scored against the reference (shifted back). A diarizer whose live
clustering depends on one lucky alignment shows up here.

    python -m bench.diarization_shift [--shifts-ms 0 5 20 50 100 150 200] [--config FILE] [--wav FILE --rttm FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.common import add_audio_args, audio_paths, machine_note
from rtsep.compose import process_file
from rtsep.config import load_config
from rtsep.demo import diarization_error_rate
from rtsep.runtime.diarization import DiarizationRuntime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shifts-ms", type=int, nargs="+", default=[0, 5, 20, 50, 100, 150, 200])
    parser.add_argument("--config")
    add_audio_args(parser)
    args = parser.parse_args()
    note = machine_note()
    config = load_config(args.config, env={}).pipeline
    wav, rttm = audio_paths(args)
    reference = rttm.read_text()
    audio, rate = sf.read(str(wav), dtype="float32")
    runtime = DiarizationRuntime(config.runtime, config.diarization)
    rows = []
    try:
        for shift_ms in args.shifts_ms:
            delayed = np.concatenate([np.zeros(shift_ms * rate // 1000, np.float32), audio])[: audio.size]
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "delayed.wav"
                sf.write(str(path), delayed, rate)
                result = asyncio.run(process_file(path, Path(tmp) / "out", config, runtime))
            row = {"shift_ms": shift_ms}
            for kind in ("live", "final"):
                timeline = getattr(result, kind)
                for s in timeline["segments"]:
                    s["start_s"] -= shift_ms / 1000
                    s["end_s"] -= shift_ms / 1000
                row[f"{kind}_der"] = diarization_error_rate(reference, timeline)["der"]
                row[f"{kind}_speakers"] = len({s["speaker"] for s in timeline["segments"]})
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    finally:
        runtime.close()
    summary = {f"{k}_der_{f.__name__}": round(f(r[f"{k}_der"] for r in rows), 4)
               for k in ("live", "final") for f in (statistics.mean, max)}
    print(json.dumps({"rows": rows, "summary": summary, "machine": note}, indent=1))


if __name__ == "__main__":
    main()
