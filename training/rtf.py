"""Streaming real-time factor of a separator at its live step, one thread: CPU seconds per second of audio.

    python -m training.rtf --arch tfmask [--checkpoint PATH] [--step-samples 64] [--seconds 20] [--sessions 1]

Streams ``--seconds`` of noise through ``StreamingSeparator.process`` step by step (``--sessions`` sessions
batched per call, as the runtime does) and reports CPU time (the process's, so other load on a shared machine
does not count) and wall time per audio second, the per-call median, the step and the algorithmic latency.
Without a checkpoint a randomly initialised model of the default config is timed (the cost does not depend on
the weights).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.rtf", description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=["tfmask", "convtasnet"], required=True)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--step-samples", type=int, default=None, help="default: the live step (tfmask: one hop; "
                   "convtasnet: the 10 ms operating point)")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--sessions", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.arch == "tfmask":
        from rtsep.separate.tfmask import TFMaskConfig, TFMaskNet, TFMaskSeparator, load_tfmask

        model = load_tfmask(args.checkpoint) if args.checkpoint else TFMaskNet(TFMaskConfig())
        sep = TFMaskSeparator(model, step_samples=args.step_samples)
    else:
        from rtsep.separate.convtasnet import (
            ConvTasNet,
            ConvTasNetConfig,
            ConvTasNetSeparator,
            load_convtasnet,
            low_latency_step_samples,
        )

        model = load_convtasnet(args.checkpoint) if args.checkpoint else ConvTasNet(ConvTasNetConfig())
        sep = ConvTasNetSeparator(model, step_samples=args.step_samples or low_latency_step_samples(model.config))
    step = sep.spec.step_samples
    calls = int(args.seconds * sep.spec.sample_rate_hz / step)
    states = [sep.new_state() for _ in range(args.sessions)]
    chunks = torch.from_numpy(0.1 * np.random.default_rng(0).standard_normal((calls, args.sessions, step))
                              .astype(np.float32))
    for i in range(min(50, calls)):  # warm-up
        sep.process(chunks[i], states)
    per_call = []
    c0, w0 = time.process_time(), time.perf_counter()
    for i in range(calls):
        t = time.perf_counter()
        sep.process(chunks[i], states)
        per_call.append(time.perf_counter() - t)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    audio_s = calls * step / sep.spec.sample_rate_hz
    print(json.dumps({"arch": args.arch, "parameters": sum(q.numel() for q in model.parameters()),
                      "step_samples": step, "sessions": args.sessions,
                      "algorithmic_latency_ms": round(1000 * sep.spec.algorithmic_latency_s, 2),
                      "cpu_rtf_per_session": round(cpu / audio_s / args.sessions, 4),
                      "wall_rtf_per_session": round(wall / audio_s / args.sessions, 4),
                      "median_call_ms": round(1000 * float(np.median(per_call)), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
