"""Seconds per adaptation step (forward, PIT SI-SNR loss, backward, Adam) of the shipped Conv-TasNet, plain and
through torch.compile, as rtsep.separate.adapt runs them: median over timed steps after warm-up, one line of JSON
per setting. The first compiled call (tracing + inductor; ~100 s cold, less with inductor's cache) is reported
apart as ``first_s``.

    python -m bench.separation.adapt_step_speed --threads 1 2 --batch-size 4 [--steps 8] [--kinds plain compiled]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch

from rtsep.separate.adapt import _compiled_training_loss, _training_loss
from rtsep.separate.convtasnet import default_checkpoint_path, load_convtasnet


def time_steps(loss_of, model, batch: int, segment: int, steps: int) -> dict:
    model = copy.deepcopy(model).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    mixes, sources = torch.randn(batch, segment, generator=gen), torch.randn(batch, 2, segment, generator=gen)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        loss_of(model, mixes, sources).backward()
        optimiser.step()

    started = time.perf_counter()
    step()
    first_s = time.perf_counter() - started
    step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"first_s": round(first_s, 2), "step_s_median": round(float(np.median(times)), 4)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch-size", type=int, nargs="+", default=[4])
    p.add_argument("--segment-s", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--kinds", nargs="+", choices=["plain", "compiled"], default=["plain", "compiled"])
    args = p.parse_args()
    model = load_convtasnet(str(default_checkpoint_path()))
    segment = int(args.segment_s * model.config.sample_rate_hz)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch in args.batch_size:
            for name in args.kinds:
                loss_of = _training_loss if name == "plain" else _compiled_training_loss()
                row = {"threads": threads, "batch_size": batch, "segment_s": args.segment_s, "step": name}
                row.update(time_steps(loss_of, model, batch, segment, args.steps))
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
