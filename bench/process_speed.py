"""Wall time of `rtsep process` with its defaults (separation on) against the same command with `--separator none`,
run alternately (side by side in time, so that the machine's load hits both alike), on the 30 s pyannote sample and
on a 10-minute meeting of real voices.

    python -m bench.process_speed [--runs 3] [--wav FILE] [--meeting-s 600] [--meeting-runs 1] [--flags "..."]
                                  [--out DIR] [--results FILE]

The meeting: two validation actors of the real-voice corpus (bench.separation.corpus_meetings: fillets-nl-m and
fillets-nl-v, alternating turns, an overlap every minute or so), 8 kHz. Prints one JSON line per run (wall time,
real-time factor, the adaptation's report, the load average before it) and a summary: the median wall time of each
command per file, the ratio of the medians and the median of the per-pair ratios. ``--flags``: extra flags of the
separating command (e.g. "--adapt-budget-rtf 0 --adapt-compile" for the fixed recipe).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from bench.common import REPO
from bench.separation.corpus_meetings import CORPUS_RATE_HZ, DEFAULT_CORPUS, build_meeting, utterances


def sample_path() -> Path:
    import pyannote.audio

    return Path(pyannote.audio.__file__).parent / "sample" / "sample.wav"


def process(path: Path, out: Path, flags: list[str]) -> dict:
    cmd = [sys.executable, "-m", "rtsep", "process", str(path), "--out", str(out), "--quiet", *flags]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       stdout=subprocess.DEVNULL, stderr=log)
    wall_s = time.perf_counter() - started
    info_path = out / "separated" / "sources.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return {"wall_s": round(wall_s, 2), "load_avg_1min": load, "adaptation": info.get("adaptation"),
            "ensemble_speeds": info.get("ensemble_speeds")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=int, default=3, help="pairs of runs on the 30 s sample")
    p.add_argument("--wav", type=Path, default=None, help="instead of the 30 s pyannote sample")
    p.add_argument("--meeting-s", type=float, default=600.0, help="0: no meeting")
    p.add_argument("--meeting-runs", type=int, default=1, help="pairs of runs on the meeting")
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--flags", default="", help="extra flags of the separating command")
    p.add_argument("--out", type=Path, default=Path("/tmp/rtsep-process-speed"))
    p.add_argument("--results", type=Path, default=None, help="append the JSON lines here")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    files = [("sample", args.wav or sample_path(), args.runs)]
    if args.meeting_s > 0:
        meeting = build_meeting("meeting", utterances(args.corpus, "fillets-nl-m", "valid"),
                                utterances(args.corpus, "fillets-nl-v", "valid"), turns_s=args.meeting_s * 0.95,
                                overlaps=max(1, round(args.meeting_s / 60)), seed=0,
                                speakers=("fillets-nl-m", "fillets-nl-v"))
        path = args.out / "meeting.wav"
        sf.write(str(path), meeting.audio, CORPUS_RATE_HZ, subtype="FLOAT")
        files.append(("meeting", path, args.meeting_runs))
    commands = {"default": shlex.split(args.flags), "none": ["--separator", "none"]}
    lines = []

    def emit(row: dict) -> None:
        line = json.dumps(row)
        lines.append(row)
        print(line, flush=True)
        if args.results is not None:
            with open(args.results, "a") as f:
                f.write(line + "\n")

    for label, path, runs in files:
        duration_s = sf.info(str(path)).duration
        pairs = []
        for run in range(runs):
            pair = {}
            order = ["none", "default"] if run % 2 == 0 else ["default", "none"]  # alternate who goes first
            for command in order:
                row = process(path, args.out / f"{label}-{command}-{run}", commands[command])
                row.update({"file": label, "duration_s": round(duration_s, 2), "command": command, "run": run,
                            "flags": commands[command], "rtf": round(row["wall_s"] / duration_s, 4)})
                emit(row)
                pair[command] = row["wall_s"]
            pairs.append(pair)
        default = [q["default"] for q in pairs]
        none = [q["none"] for q in pairs]
        emit({"summary": label, "duration_s": round(duration_s, 2), "runs": runs, "flags": commands["default"],
              "default_wall_s_median": float(np.median(default)), "none_wall_s_median": float(np.median(none)),
              "ratio_of_medians": round(float(np.median(default) / np.median(none)), 2),
              "median_pair_ratio": round(float(np.median([d / n for d, n in zip(default, none, strict=True)])), 2),
              "default_rtf_median": round(float(np.median(default)) / duration_s, 4),
              "none_rtf_median": round(float(np.median(none)) / duration_s, 4)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
