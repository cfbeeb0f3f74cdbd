"""Print the training curve of a run as a markdown table (from RUN/eval.jsonl, written by eval.py --watch).

    python -m training.curve /work/runs/sep/run [--every 3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--every", type=int, default=1, help="print every n-th checkpoint (and the last and best)")
    args = p.parse_args()
    rows = [json.loads(line) for line in (args.run / "eval.jsonl").read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: r["step"])
    best = max(rows, key=lambda r: r["real"]["si_sdri_db"]) if rows else None
    print("| step | trained h | real remix SI-SDRi dB (-5 / 0 / +5) | real long | held-out synthetic |")
    print("| ---: | ---: | --- | ---: | ---: |")
    for i, r in enumerate(rows):
        if i % args.every and r is not rows[-1] and r is not best:
            continue
        real = r["real"]
        by_snr = " / ".join(f"{real.get(f'si_sdri_db@{s}dB', float('nan')):.2f}" for s in ("-5", "+0", "+5"))
        mark = " **best real**" if r is best else ""
        synthetic = r.get("synthetic", {}).get("si_sdri_db", float("nan"))
        print(f"| {r['step']} | {r['trained_h']:.2f} | {real['si_sdri_db']:.2f} ({by_snr}){mark} | "
              f"{r['real-long']['si_sdri_db']:.2f} | {synthetic:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
