"""What the Wiener post-filter (rtsep.separate.postfilter) does to the adapted separator's sources.

    python bench/separation/postfilter_check.py --materials DIR --adapted DIR [--recipe base] [--ensemble 10]
        [--windows-ms 16 32 64 128] [--powers 1 2] [--base CHECKPOINT] [--meetings NAME ...]
    python bench/separation/postfilter_check.py --time-s 34 600 3600     # the default filter's seconds per file

For every meeting of ``purity.py --export-material DIR`` whose adapted model ``adapt_sweep.py --save-adapted``
kept (``<recipe>_<meeting>.safetensors``), the meeting is separated as `rtsep process` does (``--ensemble``
passes at playback speeds +-8 %, norm memory 16 s), then post-filtered with each STFT window (hop a quarter of
it) and mask power; everything is scored (PIT SI-SDRi) on the inserted overlap. Columns: ``ens`` (no filter),
``w<ms>p<power>`` (filtered). ``--base``: the same for an unadapted checkpoint (columns ``base``,
``base_w<ms>p<power>``): does the filter help sources that are not yet separated?

Prints one JSON line per meeting, then the means, medians and how many meetings each column raised over its
unfiltered column. ``--time-s``: instead, the default filter's wall time on two sources of noise that long at
8 kHz (median of 3, one thread) and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from norm_memory import adapted_meetings, overlap_si_sdri, print_means

from rtsep.separate.adapt import separate_offline
from rtsep.separate.convtasnet import load_convtasnet
from rtsep.separate.ensemble import ensemble_speeds, separate_ensemble
from rtsep.separate.postfilter import WienerConfig, wiener_postfilter


def time_filter(lengths_s: list[float], rate: int = 8000) -> int:
    rng = np.random.default_rng(0)
    for seconds in lengths_s:
        sources = (0.1 * rng.standard_normal((2, int(seconds * rate)))).astype(np.float32)
        mixture = sources.sum(0) + 0.01 * rng.standard_normal(sources.shape[1]).astype(np.float32)
        walls = []
        for _ in range(3):
            start = time.perf_counter()
            wiener_postfilter(mixture, sources, rate)
            walls.append(time.perf_counter() - start)
        print(json.dumps({"file_s": seconds, "wall_s_median": round(float(np.median(walls)), 3),
                          "rtf": round(float(np.median(walls)) / seconds, 5),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--materials", type=Path)
    p.add_argument("--adapted", type=Path)
    p.add_argument("--recipe", default="base")
    p.add_argument("--norm-memory-s", type=float, default=16.0)
    p.add_argument("--ensemble", type=int, default=10)
    p.add_argument("--windows-ms", type=float, nargs="+", default=[16.0, 32.0, 64.0, 128.0])
    p.add_argument("--powers", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--base", type=Path, help="also an unadapted checkpoint (e.g. the shipped one)")
    p.add_argument("--meetings", nargs="+", default=None, help="these meetings only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--time-s", type=float, nargs="+", help="time the default filter on files this long instead")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.time_s:
        return time_filter(args.time_s)
    if args.materials is None or args.adapted is None:
        p.error("--materials and --adapted are needed (or --time-s)")
    base = load_convtasnet(args.base, args.norm_memory_s) if args.base is not None else None
    rows = []
    for name, data, model in adapted_meetings(args.materials, args.adapted, args.recipe, args.norm_memory_s):
        if args.meetings is not None and name not in args.meetings:
            continue
        rate = model.config.sample_rate_hz
        meeting = np.asarray(data["meeting"], np.float32)
        outputs = {}
        for prefix, m in (("ens", model), ("base", base)):
            if m is None:
                continue
            sources = separate_ensemble(lambda x, m=m: separate_offline(m, x), meeting, rate,
                                        ensemble_speeds(args.ensemble, 0.08))
            outputs[prefix] = sources
            for ms in args.windows_ms:
                for power in args.powers:
                    config = WienerConfig(window_s=ms / 1000, hop_s=ms / 4000, power=power)
                    key = f"w{ms:g}p{power:g}" if prefix == "ens" else f"base_w{ms:g}p{power:g}"
                    outputs[key] = wiener_postfilter(meeting, sources, rate, config)
        row = {"meeting": name, **{key: overlap_si_sdri(data, out) for key, out in outputs.items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    keys = print_means(rows, 3)
    if rows:
        print(json.dumps({"median": {k: round(float(np.median([r[k] for r in rows])), 3) for k in keys}}))
        reference = {k: "base" if k.startswith("base") else "ens" for k in keys}
        print(json.dumps({"raised": {k: int(sum(r[k] > r[reference[k]] for r in rows)) for k in keys
                                     if k not in ("ens", "base")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
