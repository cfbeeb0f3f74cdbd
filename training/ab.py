"""Decide an A/B of training runs forked from one state, at equal training CPU, on the validation set.

    python -m training.ab --fork-step 23333 A=/work/runs/real/convtasnet/metrics.jsonl \
        B=/work/runs/real/ab-kokoro/metrics.jsonl [--last 3] [--margin-db 0.1] [--min-cpu-h 0.5]

Each run is its trainer's ``metrics.jsonl`` (one line per validation; lines at or before the fork step are
ignored). The runs are compared at the smallest training CPU-hours since the fork that all of them reached: per run,
the mean validation SI-SDRi of the averaged weights (``ema_valid_si_sdri_db``) and of the raw weights over its last
``--last`` validations at or before that point. The first run is the baseline; another run is *adopted* iff its
averaged mean beats the baseline's by at least ``--margin-db`` and its raw mean is not below the baseline's. Below
``--min-cpu-h`` since the fork nothing is decided. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def load_points(path: Path, fork_step: int) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted((r for r in rows if r["step"] > fork_step), key=lambda r: r["cpu_h"])


def decide(runs: dict[str, list[dict]], fork_cpu_h: float, last: int = 3, margin_db: float = 0.1,
           min_cpu_h: float = 0.5, tolerance_cpu_h: float = 0.01) -> dict:
    """``runs``: name -> validation points after the fork (the first name is the baseline). Points up to
    ``tolerance_cpu_h`` past the common CPU count as reached (runs validating at the same interval end a few CPU-seconds
    apart; the interval is 0.083 CPU-h)."""
    names = list(runs)
    if len(names) < 2 or any(len(points) < last for points in runs.values()):
        return {"decided": False, "why": f"every run needs {last} validations after the fork"}
    common_cpu_h = min(points[-1]["cpu_h"] for points in runs.values())
    summary = {}
    for name, points in runs.items():
        upto = [p for p in points if p["cpu_h"] <= common_cpu_h + tolerance_cpu_h][-last:]
        if len(upto) < last:
            return {"decided": False, "why": f"{name} has fewer than {last} validations by {common_cpu_h:.3f} CPU-h"}
        summary[name] = {"steps": [p["step"] for p in upto], "cpu_h": [round(p["cpu_h"], 3) for p in upto],
                         "average_db": round(sum(p["ema_valid_si_sdri_db"] for p in upto) / last, 3),
                         "raw_db": round(sum(p["valid_si_sdri_db"] for p in upto) / last, 3)}
    since_fork = common_cpu_h - fork_cpu_h
    out = {"common_cpu_h": round(common_cpu_h, 3), "cpu_h_since_fork": round(since_fork, 3), "runs": summary,
           "baseline": names[0]}
    if since_fork < min_cpu_h:
        return out | {"decided": False, "why": f"only {since_fork:.2f} CPU-h since the fork (< {min_cpu_h})"}
    base = summary[names[0]]
    adopted = [n for n in names[1:] if summary[n]["average_db"] - base["average_db"] >= margin_db
               and summary[n]["raw_db"] >= base["raw_db"]]
    winner = max(adopted, key=lambda n: summary[n]["average_db"]) if adopted else names[0]
    return out | {"decided": True, "adopted": adopted, "continue": winner}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ab", description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="NAME=metrics.jsonl, the baseline first")
    p.add_argument("--fork-step", type=int, required=True)
    p.add_argument("--fork-cpu-h", type=float, default=None, help="default: read from the baseline's history")
    p.add_argument("--last", type=int, default=3)
    p.add_argument("--margin-db", type=float, default=0.1)
    p.add_argument("--min-cpu-h", type=float, default=0.5)
    p.add_argument("--tolerance-cpu-h", type=float, default=0.01,
                   help="a validation this far past the common CPU still counts (default 36 CPU-s)")
    args = p.parse_args(argv)
    runs, fork_cpu_h = {}, args.fork_cpu_h
    for spec in args.runs:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"{spec!r}: expected NAME=metrics.jsonl")
        runs[name] = load_points(Path(path), args.fork_step)
        if fork_cpu_h is None:
            at_fork = [json.loads(line) for line in Path(path).read_text().splitlines()
                       if line.strip() and json.loads(line)["step"] == args.fork_step]
            fork_cpu_h = at_fork[0]["cpu_h"] if at_fork else None
    if fork_cpu_h is None:
        p.error("the fork step is not in the baseline's metrics: give --fork-cpu-h")
    print(json.dumps(decide(runs, fork_cpu_h, args.last, args.margin_db, args.min_cpu_h, args.tolerance_cpu_h),
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
