"""Does the cumulative layer norm's memory of the whole session cost the adapted separator on long input?

    python bench/separation/norm_memory.py --materials DIR --adapted DIR [--memory-s 2 4 8] [--recipe base]

For every meeting of ``purity.py --export-material DIR`` whose adapted model ``adapt_sweep.py --save-adapted``
kept (``<recipe>_<meeting>.safetensors``), the inserted overlap is separated (a) alone, (b) where it is in the
meeting (one causal pass from the start, as `rtsep process` does), (c) in the meeting with the cLN statistics
decaying with a memory of M seconds (ConvTasNetConfig.norm_memory_s: each frame's weight falls by e every M s; the
model was adapted with plain cumulative statistics on 2 s segments), (d) from C seconds before it (the state
started fresh there).
Prints PIT SI-SDRi per meeting and the means (JSON).
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

from rtsep.separate.convtasnet import load_convtasnet, with_norm_memory
from rtsep.separate.losses import pit_si_sdr_improvement


def adapted_meetings(materials: Path, adapted: Path, recipe: str, norm_memory_s: float | None = None):
    """(name, material, adapted model) for every meeting of ``materials`` whose ``<recipe>_<name>.safetensors``
    is in ``adapted``; the model runs with ``norm_memory_s`` (None: the checkpoint's)."""
    for path in sorted(materials.glob("*.npz")):
        weights = adapted / f"{recipe}_{path.stem}.safetensors"
        if weights.exists():
            yield path.stem, np.load(path), load_convtasnet(weights, norm_memory_s)


def overlap_si_sdri(data, out: np.ndarray) -> float:
    """Mean PIT SI-SDRi of ``out`` (sources of the whole meeting of an export-material file ``data``) on the
    meeting's inserted overlaps, rounded to 0.001 dB."""
    scores = [pit_si_sdr_improvement(src.sum(0), out[:, start : start + src.shape[1]], src)[1]
              for start, src in zip(data["test_start"], data["test_sources"], strict=True)]
    return round(float(np.mean(scores)), 3)


def print_means(rows: list[dict], digits: int) -> list[str]:
    """Print the mean of every column over ``rows`` (one dict per meeting) as JSON; returns the columns."""
    keys = [k for k in rows[0] if k != "meeting"] if rows else []
    if rows:
        print(json.dumps({"meetings": len(rows), **{k: round(float(np.mean([r[k] for r in rows])), digits)
                                                    for k in keys}}))
    return keys


def separate(model, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(np.ascontiguousarray(audio, np.float32))[None])[0].numpy()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--materials", type=Path, required=True)
    p.add_argument("--adapted", type=Path, required=True)
    p.add_argument("--recipe", default="base")
    p.add_argument("--memory-s", type=float, nargs="+", default=[2.0, 4.0, 8.0])
    p.add_argument("--context-s", type=float, nargs="+", default=[3.0, 6.0])
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name, data, model in adapted_meetings(args.materials, args.adapted, args.recipe):
        meeting = data["meeting"]
        cases = {}

        def score(name: str, run) -> None:
            vals = []
            for start, src in zip(data["test_start"], data["test_sources"], strict=True):
                out = run(start, src)
                vals.append(pit_si_sdr_improvement(src.sum(0), out, src)[1])
            cases[name] = round(float(np.mean(vals)), 2)

        def cut(audio_out, start, src):
            return audio_out[:, start : start + src.shape[1]]

        score("alone", lambda a, s: separate(model, s.sum(0)))
        full = separate(model, meeting)
        score("in_meeting", lambda a, s: cut(full, a, s))
        for c in args.context_s:
            back = int(c * 8000)
            score(f"from_{c:g}s_before", lambda a, s, b=back: separate(model, meeting[max(0, a - b) : a + s.shape[1]])
                  [:, -s.shape[1] :])
        for m in args.memory_s:
            remembering = with_norm_memory(model, m)
            full_m = separate(remembering, meeting)
            score(f"in_meeting_memory_{m:g}s", lambda a, s, f=full_m: cut(f, a, s))
            score(f"alone_memory_{m:g}s", lambda a, s, r=remembering: separate(r, s.sum(0)))
        rows.append({"meeting": name, **cases})
        print(json.dumps(rows[-1]), flush=True)
    print_means(rows, 2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
