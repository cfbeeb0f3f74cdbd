"""Does periodicity (rtsep.separate.periodicity) tell overlapped speech from one talker's clean speech in the turns
that in-session adaptation gets? Two tables over the 15 meetings of process_remix.py (``conversation-single``):

    python bench/separation/periodicity_check.py [--out DIR] [--filters 0 0.65]

1. ``pieces``: every diarized single-talker span (as `rtsep process` finds them, no filter) cut into 0.5 s pieces,
   each labelled by the truth at 10 ms (clean: one talker; overlap: the sample's own overlaps; test: the inserted,
   scored overlap); per label the percentiles of the pieces' periodic share and how many fall under each threshold.
   The threshold to try is read off clean against the sample's own overlaps, not the scored one.
2. ``two_voice``: for each ``--filters`` setting of min_periodic_share (with the embedding filter at rtsep's default),
   how much of the inserted overlap the filter keeps, and of that how much holds both voices within 15 dB of each
   other (10 ms frames of the true sources): what the adaptation would wrongly learn as one voice.
Diarization is cached in DIR/<meeting>/out, as purity.py does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval import SNRS_DB
from process_remix import RATE_HZ
from purity import STEP_S, diarized_meeting

from rtsep.diarize.embedding import load_speaker_encoder
from rtsep.separate.periodicity import frame_periodicity, periodic_share
from rtsep.separate.purity import PurityConfig, PurityFilter

PIECE_S = 0.5
THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8)


def pieces(audio: np.ndarray, spans: dict, truth: np.ndarray, inserted: np.ndarray) -> list[tuple[str, float]]:
    """(label, periodic share) of each 0.5 s piece of the spans (a piece's label: what most of its frames are)."""
    count = truth.sum(0)
    out = []
    for items in spans.values():
        for a, b in items:
            start = a
            while start + PIECE_S <= b + 1e-6:
                frames = np.arange(int(start / STEP_S), min(int((start + PIECE_S) / STEP_S), truth.shape[1]))
                label = ("test" if inserted[frames].mean() > 0.5 else
                         "overlap" if (count[frames] >= 2).mean() > 0.5 else "clean")
                share = periodic_share(*frame_periodicity(
                    audio[int(start * RATE_HZ) : int((start + PIECE_S) * RATE_HZ)], RATE_HZ))
                if share is not None:
                    out.append((label, share))
                start += PIECE_S
    return out


def two_voice_seconds(kept: dict, test: dict) -> tuple[float, float]:
    """(seconds of the inserted overlap in ``kept``, of that with both true sources within 15 dB)."""
    hop = int(STEP_S * RATE_HZ)
    sources = test["sources"]
    n = sources.shape[1] // hop
    energy = (sources[:, : n * hop].reshape(2, n, hop) ** 2).sum(2) + 1e-10
    both = np.abs(10 * np.log10(energy[0] / energy[1])) < 15
    mask = np.zeros(n, bool)
    for items in kept.values():
        for a, b in items:
            i0, i1 = int((a * RATE_HZ - test["start"]) / hop), int((b * RATE_HZ - test["start"]) / hop)
            mask[max(0, i0) : max(0, min(n, i1))] = True
    return float(mask.sum() * STEP_S), float((mask & both).sum() * STEP_S)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/rtsep-purity"))
    p.add_argument("--filters", type=float, nargs="+", default=[0.0, 0.65])
    args = p.parse_args()
    encoder = load_speaker_encoder()
    filters = {share: PurityFilter(PurityConfig(min_periodic_share=share), encoder) for share in args.filters}
    labelled, kept_s = [], {share: [0.0, 0.0] for share in filters}
    for fold in range(5):
        for snr in SNRS_DB:
            name = f"fold{fold}_{snr:+.0f}dB"
            audio, truth, tests, inserted, spans = diarized_meeting(args.out / name, 5, fold, (snr,))
            labelled += pieces(audio, spans, truth, inserted)
            row = {"meeting": name}
            for share, purity in filters.items():
                kept, both = two_voice_seconds(purity.filter(audio, RATE_HZ, spans), tests[0])
                kept_s[share][0] += kept
                kept_s[share][1] += both
                row[f"kept_test_s@{share:g}"], row[f"two_voice_s@{share:g}"] = round(kept, 2), round(both, 2)
            print(json.dumps(row), flush=True)
    table = {}
    for label in ("clean", "overlap", "test"):
        shares = np.array([s for lab, s in labelled if lab == label])
        table[label] = {"pieces": int(shares.size),
                        "p5_10_25_50_75": np.percentile(shares, [5, 10, 25, 50, 75]).round(3).tolist(),
                        "under": {f"{t:g}": int((shares < t).sum()) for t in THRESHOLDS}}
    print(json.dumps({"pieces": table}))
    print(json.dumps({"two_voice": {f"{k:g}": {"kept_test_s": round(v[0], 2), "two_voice_s": round(v[1], 2)}
                                    for k, v in kept_s.items()}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
