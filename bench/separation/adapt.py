"""Experiment: in-session adaptation (rtsep.separate.adapt) with oracle turns, cross-validated in time.

    python -m bench.separation.adapt --checkpoint CKPT [--steps 150] [--lr 3e-4] [--folds 5]

The single-talker speech of the pyannote sample (evaluation data; found through sample.rttm as in eval.py) is
split in time into ``folds`` parts per talker. For each fold, the model is adapted on the other parts of both
talkers and tested on remixes of the held-out part (-5/0/+5 dB), so no test audio is seen while adapting.
Prints SI-SDRi before and after, per fold and overall (JSON); ``after_consistent`` scores the same adapted model
with its outputs projected to sum to the mixture. The product path (diarized turns, through
``rtsep process``) is measured by bench/separation/process_remix.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from bench.separation.eval import SNRS_DB, model_separate, remix, score, single_talker_streams
from rtsep.separate.adapt import AdaptConfig, adapt_convtasnet
from rtsep.separate.convtasnet import load_convtasnet

RATE_HZ = 8000


def fold_split(stream: np.ndarray, folds: int, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """(everything but part ``fold``, part ``fold``) of ``stream`` cut into ``folds`` equal parts in time."""
    edges = np.linspace(0, len(stream), folds + 1).astype(int)
    a, b = edges[fold], edges[fold + 1]
    return np.concatenate([stream[:a], stream[b:]]), stream[a:b]


def mixture_consistent(separate):
    """``separate`` with its estimates made to sum to the mixture (the residual shared equally): a per-sample
    projection, as causal as the model."""
    def run(mix: np.ndarray) -> np.ndarray:
        estimates = separate(mix)
        return estimates + (mix - estimates.sum(0)) / len(estimates)

    return run


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=AdaptConfig.learning_rate, help="default: rtsep's")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--segment-s", type=float, default=2.0)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only-fold", type=int, default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--speed-perturb", type=float, default=AdaptConfig.speed_perturb, help="default: rtsep's")
    p.add_argument("--average-last", type=float, default=AdaptConfig.average_last, help="default: rtsep's")
    p.add_argument("--level-ratio-db", type=float, default=AdaptConfig.level_ratio_db, help="default: rtsep's")
    p.add_argument("--device", type=str, default="cpu")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=AdaptConfig.compile,
                   help="the training step through torch.compile (default: rtsep's)")
    p.add_argument("--streams", type=Path, help="the talkers' speech from --export-streams (no pyannote needed)")
    p.add_argument("--export-streams", type=Path, help="write the two talkers' single-talker speech as NPZ, exit")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.export_streams is not None:
        np.savez(args.export_streams, *single_talker_streams())
        return 0
    if args.streams is not None:
        data = np.load(args.streams)
        streams = [data[f"arr_{i}"] for i in range(len(data.files))]
    else:
        streams = single_talker_streams()
    if args.checkpoint is None:
        p.error("--checkpoint is required")
    base = load_convtasnet(args.checkpoint).to(args.device)
    config = AdaptConfig(steps=args.steps, learning_rate=args.lr, batch_size=args.batch_size, segment_s=args.segment_s,
                         speed_perturb=args.speed_perturb, average_last=args.average_last,
                         level_ratio_db=args.level_ratio_db, compile=args.compile)
    rows = []
    for fold in range(args.folds) if args.only_fold is None else [args.only_fold]:
        parts = [fold_split(s, args.folds, fold) for s in streams]
        test = {"real-heldout": [remix(parts[0][1], parts[1][1], snr) for snr in SNRS_DB]}
        before = score(test, model_separate(base))["real-heldout"]
        adapted, report = adapt_convtasnet(base, {"A": parts[0][0], "B": parts[1][0]}, config)
        after = score(test, model_separate(adapted))["real-heldout"]
        consistent = score(test, mixture_consistent(model_separate(adapted)))["real-heldout"]
        rows.append({"fold": fold, "before": before, "after": after, "after_consistent": consistent,
                     "report": report.as_dict()})
        print(json.dumps(rows[-1]), flush=True)
    summary = {
        "checkpoint": str(args.checkpoint), "config": config.__dict__, "folds": args.folds,
        "before_db": float(np.mean([r["before"]["si_sdri_db"] for r in rows])),
        "after_db": float(np.mean([r["after"]["si_sdri_db"] for r in rows])),
        "after_consistent_db": float(np.mean([r["after_consistent"]["si_sdri_db"] for r in rows])),
        **{f"after_db@{snr:+.0f}dB": float(np.mean([r["after"][f"si_sdri_db@{snr:+.0f}dB"] for r in rows]))
           for snr in SNRS_DB},
        "adapt_s_median": float(np.median([r["report"]["seconds"] for r in rows])),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
