"""Which fillets characters sound like the same actor: speaker-encoder (resemblyzer GE2E) centroids per character.

    python -m training.actors [--min-clips 4] [--out /work/runs/real/actors.json]

For each dub, every character with at least ``--min-clips`` clips gets the mean of its clips' unit embeddings
(clips of 1 s or more, at 16 kHz, one thread); the cosine similarity of every pair of centroids is printed, and
each character is listed with its nearest other character. The actor table of training/splits.json was written
from this output (characters whose centroids are close are one actor; a part whose clips are too few to tell is
left out of the corpus). Run once; the recipe itself reads only splits.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from training.voices import FILLETS_DUBS, decode, fillets_clips, trim_silence

log = logging.getLogger("training.actors")


def centroids(dub: str, min_clips: int, encoder) -> dict[str, tuple[np.ndarray, int, float]]:
    """character -> (unit centroid, clips used, spread: mean cosine of the clips to their centroid)."""
    out = {}
    for character, paths in sorted(fillets_clips(dub).items()):
        if len(paths) < min_clips:
            continue
        embs = []
        for path in paths:
            audio = trim_silence(decode(path, 16000), 16000)
            if len(audio) < 16000:
                continue
            with torch.inference_mode():
                embs.append(encoder(torch.from_numpy(audio)[None])[0].numpy())
        if len(embs) < min(min_clips, 3):
            continue
        e = np.stack(embs)
        c = e.mean(0)
        c /= np.linalg.norm(c) + 1e-9
        out[character] = (c, len(embs), float((e @ c).mean()))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.actors", description=__doc__.split("\n")[0])
    p.add_argument("--min-clips", type=int, default=4)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    from rtsep.diarize.embedding import load_speaker_encoder

    encoder = load_speaker_encoder()
    report = {}
    for dub in FILLETS_DUBS:
        cents = centroids(dub, args.min_clips, encoder)
        names = list(cents)
        mat = np.stack([cents[n][0] for n in names])
        sim = mat @ mat.T
        print(f"\n== {dub}: {len(names)} characters")
        for i, name in enumerate(names):
            order = [j for j in np.argsort(-sim[i]) if j != i][:3]
            near = ", ".join(f"{names[j]} {sim[i, j]:.2f}" for j in order)
            print(f"{name:10s} clips {cents[name][1]:4d} spread {cents[name][2]:.2f} | m {sim[i, names.index('m')]:.2f}"
                  f" v {sim[i, names.index('v')]:.2f} | nearest {near}")
        report[dub] = {"characters": names, "clips": [cents[n][1] for n in names],
                       "spread": [cents[n][2] for n in names], "similarity": np.round(sim, 3).tolist()}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
