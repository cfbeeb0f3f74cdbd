"""What a separation tick costs when sessions run on adapted models: one shared batch, the adapted sessions' weights
stacked and passed to one streaming call (ConvTasNet.stream's ``params``: batched matmuls, per-item slopes, gains and
taps; what the runtime does), or one call per adapted model.

    python -m bench.adapted_batching [--sessions 1 4 8 16] [--ticks 30] [--step-s 0.1]

The shipped Conv-TasNet, one torch thread, ``--step-s`` steps of noise-like input; each adapted model is the
shipped one with its weights perturbed (the cost does not depend on the values). The three ways are timed in
turn, tick by tick, so that a busy machine weighs on them alike; medians over ``--ticks`` ticks after warm-up.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from bench.common import machine_note
from rtsep.separate.convtasnet import ConvTasNetSeparator, default_checkpoint_path, load_convtasnet


def _perturbed(model, seed: int):
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen) * p.abs().mean())
    return other.eval()


def measure(sessions: int, ticks: int, step_s: float) -> dict:
    model = load_convtasnet(default_checkpoint_path())
    step = int(step_s * model.config.sample_rate_hz) // model.config.hop_samples * model.config.hop_samples
    shared = ConvTasNetSeparator(model, step_samples=step)
    stacked = ConvTasNetSeparator(model, step_samples=step)
    shared_states = [shared.new_state() for _ in range(sessions)]
    adapted_states = [stacked.new_state() for _ in range(sessions)]
    own = [_perturbed(model, k) for k in range(sessions)]
    for state, m in zip(adapted_states, own, strict=True):
        stacked.adopt(state, m)
    loop_states = [m.new_state() for m in own]
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"shared_batch": [], "adapted_stacked": [], "adapted_one_call_each": []}
    with torch.inference_mode():
        for tick in range(ticks + 3):
            x = 0.1 * torch.randn(sessions, step, generator=gen)
            runs = {
                "shared_batch": lambda: shared.process(x, shared_states),
                "adapted_stacked": lambda: stacked.process(x, adapted_states),
                "adapted_one_call_each": lambda: [m.stream(x[i:i + 1], [loop_states[i]]) for i, m in enumerate(own)],
            }
            for name, run in runs.items():
                started = time.perf_counter()
                run()
                if tick >= 3:  # warm-up ticks (the first stacks the weights)
                    times[name].append(time.perf_counter() - started)
    row = {"sessions": sessions, "step_s": step / model.config.sample_rate_hz}
    for name, values in times.items():
        row[f"{name}_ms"] = round(1000 * statistics.median(values), 2)
    row["stacked_vs_one_call_each"] = round(row["adapted_one_call_each_ms"] / row["adapted_stacked_ms"], 2)
    row["stacked_vs_shared"] = round(row["adapted_stacked_ms"] / row["shared_batch_ms"], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--step-s", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    note = machine_note()
    rows = [measure(n, args.ticks, args.step_s) for n in args.sessions]
    print(json.dumps({"rows": rows, "machine": note}, indent=1))


if __name__ == "__main__":
    main()
