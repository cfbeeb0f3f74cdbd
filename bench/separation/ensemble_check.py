"""What averaging several passes of the adapted separator buys on the product path's material.

    python bench/separation/ensemble_check.py --materials DIR --adapted DIR [--recipe base] [--norm-memory-s 16]
        [--speeds 3 5 7] [--no-wide] [--shifts 2 4] [--combined N ...] [--flip-rev] [--meetings NAME ...]

For every meeting of ``purity.py --export-material DIR`` whose adapted model ``adapt_sweep.py --save-adapted``
kept (``<recipe>_<meeting>.safetensors``), the whole meeting is separated causally (as `rtsep process` does, with
the norm memory it uses) once plainly and then by ensembles, and scored (PIT SI-SDRi) on the inserted overlap:

* ``speed<N>``: rtsep.separate.ensemble (rtsep process's ``offline_ensemble`` = N): N passes at playback speeds
  spread over +-8 % (the adaptation's speed perturbation), channels aligned to the pass nearest speed 1 per 1 s block;
* ``speed<N>w``: the same over +-12 %;
* ``shift<N>``: N passes with the input delayed by k * hop / N samples (k = 0..N-1), i.e. the encoder's frames
  falling at other points of the signal, aligned and averaged the same way;
* ``flip2`` (``--flip-rev``): the plain pass and the pass over the sign-flipped input (its outputs flipped
  back): the learned encoder's rectified filters see another signal;
* ``rev2`` (``--flip-rev``): the plain pass and a pass over the time-reversed input (its outputs reversed back):
  each sample then gets an estimate from its past and one from its future (offline only);
* ``speed<N>shift2`` and, with ``--flip-rev``, ``speed<N>flip`` / ``speed<N>rev`` (``--combined N``): every speed
  pass of ``speed<N>`` made of a plain and a half-hop-shifted / a flipped / a reversed pass (2N passes), against
  ``speed<2N>`` (as many passes, speeds only).

Prints one JSON line per meeting, then the means and how many meetings each ensemble raised.
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

from norm_memory import adapted_meetings, overlap_si_sdri, print_means

from rtsep.separate.adapt import separate_offline
from rtsep.separate.ensemble import align_blocks, ensemble_speeds, separate_ensemble


def shifted(model, audio: np.ndarray, delay: int) -> np.ndarray:
    """Sources of ``audio`` delayed by ``delay`` samples, on the original time axis."""
    return separate_offline(model, np.concatenate([np.zeros(delay, np.float32), audio]))[:, delay:]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--materials", type=Path, required=True)
    p.add_argument("--adapted", type=Path, required=True)
    p.add_argument("--recipe", default="base")
    p.add_argument("--norm-memory-s", type=float, default=16.0)
    p.add_argument("--speeds", type=int, nargs="+", default=[3, 5, 7])
    p.add_argument("--shifts", type=int, nargs="*", default=[2, 4])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--combined", type=int, nargs="*", default=[],
                   help="N: also speed<N>shift2 and its control speed<2N> (with --flip-rev speed<N>flip, speed<N>rev)")
    p.add_argument("--flip-rev", action="store_true", help="also the sign-flipped and time-reversed passes")
    p.add_argument("--no-wide", action="store_true", help="leave out the +-12 %% speed ensembles")
    p.add_argument("--meetings", nargs="+", default=None, help="these meetings only")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, data, model in adapted_meetings(args.materials, args.adapted, args.recipe, args.norm_memory_s):
        if args.meetings is not None and name not in args.meetings:
            continue
        rate = model.config.sample_rate_hz
        meeting = np.asarray(data["meeting"], np.float32)

        def run(audio: np.ndarray, m=model) -> np.ndarray:
            return separate_offline(m, audio)

        plain = run(meeting)
        outputs = {"plain": plain}
        for n in args.speeds:
            outputs[f"speed{n}"] = separate_ensemble(run, meeting, rate, ensemble_speeds(n, 0.08))
            if not args.no_wide:
                outputs[f"speed{n}w"] = separate_ensemble(run, meeting, rate, ensemble_speeds(n, 0.12))
        for n in args.shifts:
            hop = model.config.hop_samples
            members = [plain] + [align_blocks(plain, shifted(model, meeting, k * hop // n), rate) for k in range(1, n)]
            outputs[f"shift{n}"] = sum(members) / n

        def flipped(audio: np.ndarray, m=model) -> np.ndarray:
            return -separate_offline(m, -audio)

        def half_shift(audio: np.ndarray, m=model) -> np.ndarray:
            return shifted(m, audio, m.config.hop_samples // 2)

        def pair(other):
            def run_pair(audio: np.ndarray) -> np.ndarray:
                first = run(audio)
                return (first + align_blocks(first, other(audio), rate)) / 2
            return run_pair

        def reversed_(audio: np.ndarray, m=model) -> np.ndarray:
            return separate_offline(m, np.ascontiguousarray(audio[::-1]))[:, ::-1]

        if args.flip_rev:
            outputs["flip2"] = pair(flipped)(meeting)
            outputs["rev2"] = pair(reversed_)(meeting)
        for n in args.combined:
            outputs[f"speed{n}shift2"] = separate_ensemble(pair(half_shift), meeting, rate, ensemble_speeds(n, 0.08))
            if f"speed{2 * n}" not in outputs:
                outputs[f"speed{2 * n}"] = separate_ensemble(run, meeting, rate, ensemble_speeds(2 * n, 0.08))
            if args.flip_rev:
                outputs[f"speed{n}flip"] = separate_ensemble(pair(flipped), meeting, rate, ensemble_speeds(n, 0.08))
                outputs[f"speed{n}rev"] = separate_ensemble(pair(reversed_), meeting, rate, ensemble_speeds(n, 0.08))
        row = {"meeting": name, **{key: overlap_si_sdri(data, out) for key, out in outputs.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = print_means(rows, 3)
    if rows:
        print(json.dumps({"raised": {k: int(sum(r[k] > r["plain"] for r in rows)) for k in keys if k != "plain"}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
