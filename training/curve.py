"""The validation curve (SI-SDRi against training CPU-hours) of one or more training states, as a table and a figure.

    python -m training.curve training/state/tfmask.pt training/state/convtasnet.pt [--plot curve.png] [--every 2]

Reads the ``history`` a state of training.train carries (one point per validation, the untrained model first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.curve", description=__doc__.split("\n")[0])
    p.add_argument("states", type=Path, nargs="+")
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--every", type=int, default=1, help="print every n-th point (and the last and best)")
    args = p.parse_args(argv)
    curves = {}
    for path in args.states:
        state = torch.load(path, map_location="cpu", weights_only=False)
        label = f"{state['arch']} ({sum(v.numel() for v in state['model'].values()) / 1e6:.2f} M)"
        rows = state["history"]
        curves[label] = rows
        best = max(rows, key=lambda r: r["valid_si_sdri_db"])
        print(f"\n{path}: {label}, step {state['step']}, {state['cpu_s'] / 3600:.2f} CPU-h")
        print("| step | CPU-h | valid SI-SDRi dB | -5 / 0 / +5 dB |")
        print("| ---: | ---: | ---: | --- |")
        for i, r in enumerate(rows):
            if i % args.every and r is not rows[-1] and r is not best:
                continue
            snr = " / ".join(f"{r.get(f'valid_si_sdri_db@{s}dB', float('nan')):.2f}" for s in ("-5", "+0", "+5"))
            mark = " (best)" if r is best else ""
            print(f"| {r['step']} | {r['cpu_h']:.3f} | {r['valid_si_sdri_db']:.2f}{mark} | {snr} |")
    if args.plot is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, rows in curves.items():  # the untrained point (far below 0 dB) is left to the table
            trained = [r for r in rows if r["step"] > 0]
            ax.plot([r["cpu_h"] for r in trained], [r["valid_si_sdri_db"] for r in trained], marker="o", ms=3,
                    label=label)
        ax.set_xlabel("training CPU-hours (one thread)")
        ax.set_ylabel("valid SI-SDRi (dB)")
        ax.set_title("Held-out actors, fully overlapped 2-4 s, -5/0/+5 dB")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nwrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
