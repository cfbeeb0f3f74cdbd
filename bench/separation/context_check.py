"""Check: does a long real-speech context before a mixture change the (adapted) separator's figure?

    python bench/separation/context_check.py [--folds 5] [--check-folds 1 3]

For each checked fold (as bench/separation/adapt.py: adapt with the default recipe on the other 4 parts of each
talker's single-talker speech), the held-out remixes (-5/0/+5 dB) are separated alone and after 12 s of the
talkers' adaptation speech + 1 s of silence, streamed as one signal; prints mean SI-SDRi for both, for the
shipped and the adapted model (JSON lines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapt import fold_split
from eval import RATE_HZ, SNRS_DB, remix, single_talker_streams

from rtsep.separate.adapt import AdaptConfig, adapt_convtasnet, separate_offline
from rtsep.separate.convtasnet import default_checkpoint_path, load_convtasnet
from rtsep.separate.losses import pit_si_sdr_improvement


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--check-folds", type=int, nargs="+", default=[1, 3])
    args = p.parse_args()
    torch.set_num_threads(1)
    streams = single_talker_streams()
    base = load_convtasnet(default_checkpoint_path())
    second = 4 * RATE_HZ
    for fold in args.check_folds:
        parts = [fold_split(s, args.folds, fold) for s in streams]
        adapted, _ = adapt_convtasnet(base, {"A": parts[0][0], "B": parts[1][0]}, AdaptConfig())
        context = np.concatenate([parts[0][0][:second], parts[1][0][:second], parts[0][0][second : 2 * second],
                                  np.zeros(RATE_HZ, np.float32)])  # 12 s of the talkers, then 1 s of silence
        for name, model in (("shipped", base), ("adapted", adapted)):
            alone, after = [], []
            for snr in SNRS_DB:
                mix, src = remix(parts[0][1], parts[1][1], snr)
                alone.append(pit_si_sdr_improvement(mix, separate_offline(model, mix), src)[1])
                out = separate_offline(model, np.concatenate([context, mix]))[:, -len(mix) :]
                after.append(pit_si_sdr_improvement(mix, out, src)[1])
            print(json.dumps({"fold": fold, "model": name, "alone_db": round(float(np.mean(alone)), 2),
                              "after_context_db": round(float(np.mean(after)), 2)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
