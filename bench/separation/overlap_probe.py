"""Probe: can the separator itself tell leaked overlap from clean speech in the adaptation's turns, cross-fitted?

    python bench/separation/overlap_probe.py [--steps 150] [--meetings fold1_+0dB fold3_-5dB ...] [--out DIR]

For each process_remix meeting (diarized as in purity.py, cached in DIR, default /tmp/rtsep-purity), each talker's
purity-filtered turns are cut in two halves of equal speech. A copy of the shipped model is adapted on one half
(``--steps``, rtsep's other adaptation defaults) and separates the meeting; every 0.5 s window (every 0.1 s) of
the *other* half is scored by the energy of its weaker output relative to its stronger (dB; the span's louder
output counts as the talker's). Then the halves swap. Clean single-talker windows should score low and windows of
the inserted test overlap high; prints the percentiles of both (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import soxr
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval import SNRS_DB
from process_remix import RATE_HZ
from purity import STEP_S, diarize, meeting_truth

from rtsep.separate.adapt import AdaptConfig, adapt_convtasnet, gather_speech, separate_offline, single_talker_spans
from rtsep.separate.convtasnet import load_convtasnet
from rtsep.separate.purity import PurityFilter

MODEL_RATE_HZ = 8000
WINDOW_S, HOP_S = 0.5, 0.1


def halves(spans: dict[str, list[tuple[float, float]]]) -> list[dict[str, list[tuple[float, float]]]]:
    """Each talker's spans cut at the middle of their speech: (first half, second half)."""
    out: list[dict] = [{}, {}]
    for spk, items in spans.items():
        total, done = sum(b - a for a, b in items), 0.0
        for a, b in items:
            cut = a + max(0.0, min(b - a, total / 2 - done))
            if cut > a:
                out[0].setdefault(spk, []).append((a, cut))
            if cut < b:
                out[1].setdefault(spk, []).append((cut, b))
            done += b - a
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--meetings", nargs="*", default=None, help="default: all 15 (fold<f>_<snr>dB)")
    p.add_argument("--out", type=Path, default=Path("/tmp/rtsep-purity"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    names = args.meetings or [f"fold{f}_{snr:+.0f}dB" for f in range(5) for snr in SNRS_DB]
    base = load_convtasnet(REPO / "rtsep/separate/weights/convtasnet_8k.safetensors")
    purity = PurityFilter()
    scores: dict[str, list[float]] = {"clean": [], "overlap": [], "test": []}
    for name in names:
        fold, snr = int(name[4]), float(name.split("_")[1][:-2])
        audio, truth, tests = meeting_truth(5, fold, (snr,))
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        wav = folder / "meeting.wav"
        if not wav.exists():
            import soundfile as sf

            sf.write(str(wav), audio, RATE_HZ, subtype="FLOAT")
        spans = purity.filter(audio, RATE_HZ, single_talker_spans(diarize(wav, folder / "out")))
        at_model_rate = soxr.resample(audio, RATE_HZ, MODEL_RATE_HZ).astype(np.float32)
        test0, test1 = tests[0]["start"] / RATE_HZ, tests[0]["end"] / RATE_HZ
        count = truth.sum(0)
        parts = halves(spans)
        for judged in (0, 1):
            detector, report = adapt_convtasnet(base, gather_speech(at_model_rate, MODEL_RATE_HZ, parts[1 - judged]),
                                                AdaptConfig(steps=args.steps))
            if report.skipped:
                print(json.dumps({"meeting": name, "half": judged, "skipped": report.skipped}), flush=True)
                continue
            est = separate_offline(detector, at_model_rate).astype(np.float64)
            for items in parts[judged].values():
                for a, b in items:
                    own = int(np.argmax((est[:, int(a * MODEL_RATE_HZ) : int(b * MODEL_RATE_HZ)] ** 2).sum(1)))
                    for w0 in np.arange(a, max(a, b - WINDOW_S) + 1e-6, HOP_S):
                        energy = (est[:, int(w0 * MODEL_RATE_HZ) : int((w0 + WINDOW_S) * MODEL_RATE_HZ)] ** 2).sum(1)
                        ratio_db = 10 * np.log10((energy[1 - own] + 1e-9) / (energy[own] + 1e-9))
                        centre = w0 + WINDOW_S / 2
                        frame = min(int(centre / STEP_S), truth.shape[1] - 1)
                        kind = "test" if test0 <= centre < test1 else "overlap" if count[frame] >= 2 else "clean"
                        if count[frame] or kind == "test":
                            scores[kind].append(float(ratio_db))
            print(json.dumps({"meeting": name, "half": judged, "loss_last_db": report.loss_last_db}), flush=True)
    summary = {kind: {"windows": len(v), "ratio_db_p10_25_50_75_90": np.percentile(v, [10, 25, 50, 75, 90]).round(1)
                      .tolist()} for kind, v in scores.items() if v}
    for threshold in (-6.0, -3.0):
        summary[f"dropped_at_{threshold:+.0f}dB"] = {kind: f"{sum(1 for r in v if r > threshold)}/{len(v)}"
                                                     for kind, v in scores.items() if v}
    print(json.dumps({"steps": args.steps, "meetings": names, **summary}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
