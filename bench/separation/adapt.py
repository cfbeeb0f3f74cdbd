"""Experiment: fine-tune the separator within a session on mixtures of that session's own single-talker turns.

    python bench/separation/adapt.py --checkpoint CKPT [--steps 150] [--adapt-fraction 0.6]

Simulates what a live session could do (issue 4, "widen the approach"): the diarizer finds turns where exactly
one talker speaks; the separator is fine-tuned, in memory, on remixes of those turns. Here the single-talker
speech of the pyannote sample (evaluation data; found through sample.rttm as in eval.py) is split in time:
each talker's first ``adapt-fraction`` is the adaptation material, the rest builds the test mixtures (2 s
segments, every pair, -5/0/+5 dB), so no test audio is seen while adapting. Prints SI-SDRi before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval import SNRS_DB, model_separate, remix, score, single_talker_streams

from rtsep.separate.convtasnet import load_convtasnet
from rtsep.separate.losses import pit_si_snr_loss

RATE_HZ = 8000


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--segment-s", type=float, default=2.0)
    p.add_argument("--adapt-fraction", type=float, default=0.6)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    streams = single_talker_streams()
    cut = [int(len(s) * args.adapt_fraction) for s in streams]
    adapt = [s[:c] for s, c in zip(streams, cut, strict=True)]
    test = [s[c:] for s, c in zip(streams, cut, strict=True)]
    seg = int(args.segment_s * RATE_HZ)
    pieces = [[t[i : i + seg] for i in range(0, len(t) - seg + 1, seg)] for t in test]
    test_set = {"real-heldout-time": [remix(a, b, snr) for a in pieces[0] for b in pieces[1] for snr in SNRS_DB]}

    model = load_convtasnet(args.checkpoint)
    before = score(test_set, model_separate(model))

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    started = time.perf_counter()
    for _ in range(args.steps):
        mixes, sources = [], []
        for _ in range(args.batch_size):
            a = adapt[0][(o := rng.integers(0, len(adapt[0]) - seg)) : o + seg]
            b = adapt[1][(o := rng.integers(0, len(adapt[1]) - seg)) : o + seg]
            mix, src = remix(a * rng.uniform(0.5, 1.5), b, float(rng.uniform(-5, 5)))
            mixes.append(mix)
            sources.append(src)
        est = model(torch.from_numpy(np.stack(mixes)))
        loss = pit_si_snr_loss(est, torch.from_numpy(np.stack(sources)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    adapt_s = time.perf_counter() - started
    model.eval()
    after = score(test_set, model_separate(model))
    print(json.dumps({"checkpoint": str(args.checkpoint), "steps": args.steps, "adapt_audio_s": [len(a) / RATE_HZ for a in adapt],
                      "test_audio_s": [len(t) / RATE_HZ for t in test], "adapt_cpu_s": round(adapt_s, 1),
                      "before": before, "after": after}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
