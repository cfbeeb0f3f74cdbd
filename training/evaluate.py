"""Score separator checkpoints (either architecture) on the real-voice corpus's fixed sets and the pyannote remix.

    python -m training.evaluate CHECKPOINT... --corpus DIR [--sets valid,pyannote] [--out results.jsonl]

Sets: ``valid`` and ``test`` (training.corpus: fully overlapped 2-4 s mixtures of held-out actors at -5 / 0 / +5
dB; ``test`` is for the headline figures only, never to choose), and ``pyannote``: the 3 s remixes of the pyannote
sample's two talkers (bench/separation/eval.py ``real``; evaluation-only data). Each line: SI-SDRi (best
permutation, mean over mixtures, and per SNR), one offline causal pass per batch of equal-length mixtures, one
thread. The untrained figure of a set is 0 dB by definition; the oracle ratio-mask bound of the corpus sets is in
DIR/sets.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def load_any(path: Path) -> torch.nn.Module:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        fmt = (f.metadata() or {}).get("format")
    if fmt == "rtsep-tfmask":
        from rtsep.separate.tfmask import load_tfmask

        return load_tfmask(path)
    from rtsep.separate.convtasnet import load_convtasnet

    return load_convtasnet(path)


def pyannote_items() -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    try:
        from bench.separation.eval import SNRS_DB, real_sets
    except ImportError as exc:
        raise SystemExit(f"the pyannote remix comes from bench/separation/eval.py (run from the repo root): {exc}")
    items = real_sets()["real"]
    snrs = np.array([SNRS_DB[i % len(SNRS_DB)] for i in range(len(items))])
    return items, snrs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--sets", default="valid,pyannote")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from training.mixing import load_eval_set
    from training.train import validate

    sets = {}
    for name in args.sets.split(","):
        if name in ("valid", "test"):
            sets[name] = (load_eval_set(args.corpus / f"{name}.npz"), np.load(args.corpus / f"{name}.npz")["snr_db"])
        elif name == "pyannote":
            sets[name] = pyannote_items()
        else:
            p.error(f"unknown set {name!r}")
    for path in args.checkpoints:
        model = load_any(path)
        row = {"checkpoint": str(path), "parameters": sum(q.numel() for q in model.parameters())}
        for name, (items, snrs) in sets.items():
            scores = validate(model, items, snrs)
            row[name] = {k.replace("valid_", ""): round(v, 3) for k, v in scores.items()}
        print(json.dumps(row))
        if args.out is not None:
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
