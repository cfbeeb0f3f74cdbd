"""Sweep adaptation recipes on the reference turns: many `bench.separation.adapt --only-fold K` runs side by side.

    python -m bench.separation.adapt_sweep --streams STREAMS.npz --out SWEEP.jsonl [--jobs 14] [--device cuda] \
        --recipe 'name|--checkpoint CKPT --steps 300' [--recipe ...]

Each recipe is bench.separation.adapt's options; it runs on every fold (5) as its own process (one CPU thread
each; on a GPU machine the small adaptation batches leave the GPU mostly idle, so many processes share it).
Every fold's result is appended to ``--out`` as it finishes; at the end a table (mean over folds, per fold) is printed.
Made for a lent GPU machine with 16 cores, where 15 folds adapt at once.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=Path, help="adapt.py --streams (folds)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--recipe", action="append", required=True, help="'name|adapt.py options'")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--jobs", type=int, default=14)
    p.add_argument("--device", type=str, default="cpu")
    args = p.parse_args()
    recipes = dict(r.split("|", 1) for r in args.recipe)
    jobs = [(name, fold) for fold in range(args.folds) for name in recipes]

    def run(job: tuple[str, int]) -> None:
        name, fold = job
        where = ["--folds", str(args.folds), "--only-fold", str(fold)]
        streams = ["--streams", str(args.streams)] if args.streams else []
        cmd = [sys.executable, "-m", "bench.separation.adapt", *streams, "--device", args.device, *where,
               *shlex.split(recipes[name])]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
        row = {"recipe": name, "fold": fold, "rc": done.returncode}
        if lines and "after" in lines[0]:
            row.update(before=lines[0]["before"]["si_sdri_db"], after=lines[0]["after"]["si_sdri_db"],
                       seconds=lines[0]["report"]["seconds"], loss_last_db=lines[0]["report"]["loss_last_db"])
        else:
            row["error"] = done.stderr[-500:]
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, jobs))
    rows = [json.loads(x) for x in args.out.read_text().splitlines() if x.strip()]
    for name in recipes:
        mine = sorted((r for r in rows if r["recipe"] == name and "after" in r), key=lambda r: str(r["fold"]))
        if mine:
            folds = " / ".join(f"{r['after']:.2f}" for r in mine)
            print(f"{name:28s} {np.mean([r['after'] for r in mine]):6.2f}  ({folds})  "
                  f"{np.median([r['seconds'] for r in mine]):.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
