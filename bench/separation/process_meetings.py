"""Overlap SI-SDRi through the product path on two-talker meetings of one split's actors, at several settings.

    python -m bench.separation.process_meetings --split valid [--corpus DIR] [--setting NAME=FLAGS ...]
                                                [--only K ...] [--pair X+Y ...] [--turns-s 40]
                                                [--out DIR] [--results FILE]

Each meeting (bench.separation.corpus_meetings: alternating single-talker turns of two actors of the split, three
overlaps of held-out speech at -5 / 0 / +5 dB) is written as a WAV and run through `rtsep process --separator
convtasnet` once per setting, a setting being extra command-line flags (e.g. ``budget0.5="--adapt-budget-rtf
0.5"``, ``unadapted="--adapt-steps 0"``). `rtsep process` diarizes the meeting and, with adaptation, fine-tunes on
the turns its diarizer finds. Scores at 8 kHz on each overlap: PIT SI-SDRi of separated/source_<k>.wav. Prints
(and appends to ``--results``) one JSON line per run and a summary per setting (mean over the overlaps, median
wall time, the machine's load average). Settings run in turn meeting by meeting, so that their wall times are
side by side.
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
import soxr

from bench.separation.corpus_meetings import CORPUS_RATE_HZ, DEFAULT_CORPUS, Meeting, split_meetings
from rtsep.separate.losses import pit_si_sdr_improvement

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SETTINGS = ["unadapted=--adapt-steps 0", "budget0.25=--adapt-budget-rtf 0.25",
                    "budget0.5=--adapt-budget-rtf 0.5", "budget1=--adapt-budget-rtf 1.0"]


def run(meeting: Meeting, setting: str, flags: list[str], out: Path) -> dict:
    folder = out / meeting.name / setting
    folder.mkdir(parents=True, exist_ok=True)
    wav = out / meeting.name / "meeting.wav"
    if not wav.exists():
        sf.write(str(wav), meeting.audio, CORPUS_RATE_HZ, subtype="FLOAT")
    cmd = [sys.executable, "-m", "rtsep", "process", str(wav), "--out", str(folder / "out"), "--quiet",
           "--separator", "convtasnet", *flags]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with open(folder / "process.log", "w") as log:
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       stdout=subprocess.DEVNULL, stderr=log)
    wall_s = time.perf_counter() - started
    est = []
    for k in range(2):  # written at the session's rate (16 kHz here), scored at the corpus rate
        audio, rate = sf.read(str(folder / "out" / "separated" / f"source_{k}.wav"), dtype="float32")
        est.append(audio if rate == CORPUS_RATE_HZ else soxr.resample(audio, rate, CORPUS_RATE_HZ))
    n = min(len(x) for x in est)
    est = np.stack([x[:n] for x in est])
    scores = {}
    for t in meeting.tests:
        n = min(t["end"], est.shape[1]) - t["start"]
        mix = meeting.audio[t["start"] : t["start"] + n]
        scores[f"{t['snr_db']:+.0f}dB"] = pit_si_sdr_improvement(mix, est[:, t["start"] : t["start"] + n],
                                                                 t["sources"][:, :n])[1]
    info_path = folder / "out" / "separated" / "sources.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    adaptation = info.get("adaptation") or {}
    return {"meeting": meeting.name, "setting": setting, "flags": flags,
            "si_sdri_db": float(np.mean(list(scores.values()))), "by_snr": scores,
            "meeting_s": round(meeting.duration_s, 2), "process_wall_s": round(wall_s, 1), "load_avg_1min": load,
            "adaptation": {k: adaptation.get(k) for k in ("steps", "planned_steps", "budget_s", "seconds",
                                                          "skipped", "stopped_early", "loss_first_db",
                                                          "loss_last_db")},
            "speeds": info.get("ensemble_speeds")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", choices=["valid", "test"], required=True)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--setting", action="append", default=None,
                   help="NAME=FLAGS, repeatable (default: unadapted and three adaptation budgets)")
    p.add_argument("--only", type=int, nargs="+", default=None, help="these meetings of the split only")
    p.add_argument("--pair", action="append", default=None,
                   help="X+Y: corpus speakers of the split instead of the split's PAIRS (repeatable)")
    p.add_argument("--turns-s", type=float, default=40.0, help="single-talker turns per meeting")
    p.add_argument("--out", type=Path, default=Path("/tmp/rtsep-process-meetings"))
    p.add_argument("--results", type=Path, default=None, help="append the JSON lines here")
    args = p.parse_args()
    settings = [(s.split("=", 1)[0], shlex.split(s.split("=", 1)[1])) for s in (args.setting or DEFAULT_SETTINGS)]
    pairs = [tuple(x.split("+", 1)) for x in args.pair] if args.pair else None
    meetings = split_meetings(args.split, args.corpus, turns_s=args.turns_s, pairs=pairs)
    if args.only is not None:
        meetings = [meetings[k] for k in args.only]
    rows = []
    for meeting in meetings:
        for name, flags in settings:
            row = run(meeting, name, flags, args.out)
            rows.append(row)
            line = json.dumps(row)
            print(line, flush=True)
            if args.results is not None:
                with open(args.results, "a") as f:
                    f.write(line + "\n")
    for name, _ in settings:
        mine = [r for r in rows if r["setting"] == name]
        overlaps = [v for r in mine for v in r["by_snr"].values()]
        summary = {"summary": name, "split": args.split, "meetings": len(mine), "overlaps": len(overlaps),
                   "si_sdri_db_mean": round(float(np.mean(overlaps)), 2),
                   "si_sdri_db_median": round(float(np.median(overlaps)), 2),
                   "process_wall_s_median": float(np.median([r["process_wall_s"] for r in mine])),
                   "load_avg_1min_median": float(np.median([r["load_avg_1min"] for r in mine]))}
        line = json.dumps(summary)
        print(line, flush=True)
        if args.results is not None:
            with open(args.results, "a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
