"""Does the cumulative layer norm's memory of the whole session cost the adapted separator on long input?

    python bench/separation/norm_memory.py --materials DIR --adapted DIR [--memory-s 2 4 8] [--recipe base]

For every meeting of ``purity.py --export-material DIR`` whose adapted model ``adapt_sweep.py --save-adapted``
kept (``<recipe>_<meeting>.safetensors``), the inserted overlap is separated (a) alone, (b) where it is in the
meeting (one causal pass from the start, as `rtsep process` does), (c) in the meeting with the cLN statistics
decaying with a memory of M seconds (each frame's weight falls by e every M s; the model was trained with
plain cumulative statistics on 2-3 s segments), (d) from C seconds before it (the state started fresh there).
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

from rtsep.separate import convtasnet
from rtsep.separate.convtasnet import load_convtasnet
from rtsep.separate.losses import pit_si_sdr_improvement

FRAMES_PER_S = 500  # hop 2 ms at 8 kHz


def leaky_forward(memory_frames: float):
    """CumulativeLayerNorm.forward with exponentially decaying statistics (whole input at once, no state)."""
    def forward(self, x, stats=None):
        assert stats is None
        channels, frames = x.shape[2], x.shape[1]
        t = torch.arange(frames, device=x.device, dtype=torch.float64)
        up, down = torch.exp(t / memory_frames), torch.exp(-t / memory_frames)
        sums = torch.stack((x.sum(2), (x * x).sum(2)), dim=2).double()
        sums = (sums * up[None, :, None]).cumsum(1) * down[None, :, None]
        counts = ((up * channels).cumsum(0) * down)[None]
        mean = sums[:, :, 0] / counts
        scale = (sums[:, :, 1] / counts - mean * mean).clamp_min(0.0).add(self.eps).rsqrt()
        y = (x - mean.float().unsqueeze(2)) * scale.float().unsqueeze(2)
        return torch.addcmul(self.bias, y, self.gain), None
    return forward


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
    plain = convtasnet.CumulativeLayerNorm.forward
    rows = []
    for path in sorted(args.materials.glob("*.npz")):
        weights = args.adapted / f"{args.recipe}_{path.stem}.safetensors"
        if not weights.exists():
            continue
        data = np.load(path)
        model = load_convtasnet(weights)
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
            convtasnet.CumulativeLayerNorm.forward = leaky_forward(m * FRAMES_PER_S)
            try:
                full_m = separate(model, meeting)
                score(f"in_meeting_memory_{m:g}s", lambda a, s, f=full_m: cut(f, a, s))
                score(f"alone_memory_{m:g}s", lambda a, s: separate(model, s.sum(0)))
            finally:
                convtasnet.CumulativeLayerNorm.forward = plain
        rows.append({"meeting": path.stem, **cases})
        print(json.dumps(rows[-1]), flush=True)
    if rows:
        keys = [k for k in rows[0] if k != "meeting"]
        print(json.dumps({"meetings": len(rows), **{k: round(float(np.mean([r[k] for r in rows])), 2) for k in keys}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
