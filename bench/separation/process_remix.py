"""Real-speech remix through the product path: `rtsep process --separator convtasnet` on meetings built from the
pyannote sample's single-talker turns, scored by PIT SI-SDRi on their overlapped parts.

    python -m bench.separation.process_remix [--layout L] [--only-fold F ...] [--snrs-db -5 0 5]
                                             [--adapt-steps N] [--adapt-batch-size B]
                                             [--adapt-min-similarity S] [--adapt-min-periodicity P]
                                             [--ensemble N] [--no-wiener] [--flags "..."] [--jobs 2] [--out DIR]

Each talker's single-talker speech of the pyannote sample (evaluation data, never trained on; found through
sample.rttm as in eval.py) is cut into ``folds`` parts in time; part ``f`` of both talkers is the test speech of
fold ``f``, remixed at -5 / 0 / +5 dB. ``--layout``:
- ``conversation-single`` (default): the sample's own conversation with part ``f`` muted and ONE remix inserted
  near its middle (1 s of silence around it): three meetings per fold, one per level ratio. A real meeting does
  not repeat the same overlapped passage; three copies of it in one file form a tight cluster of their own,
  which the diarizer takes for a third talker.
- ``conversation``: as above with all three remixes in one meeting (near ¼, ½, ¾).
- ``interleaved`` / ``end``: the other parts as alternating turns of about 2 s, the three remixes after each
  quarter of the turns or all at the end.
`rtsep process` diarizes each meeting and writes separated/source_<k>.wav; with ``--adapt-steps`` > 0 the
separator is first fine-tuned on the turns the diarizer finds (rtsep.separate.adapt) — so what it adapts on is
what a user's file gives it, and the overlapped test speech is never a clean training target. Scores are taken
at the model rate (8 kHz) on each overlapped part: SI-SDRi of the best permutation. Prints one JSON line per
meeting and a summary (mean and median over the overlapped parts, mean per level ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bench.separation.adapt import fold_split
from bench.separation.eval import SNRS_DB, remix, single_talker_regions, single_talker_streams
from rtsep.separate.losses import pit_si_sdr_improvement

REPO = Path(__file__).resolve().parents[2]
RATE_HZ = 16000
SCORE_RATE_HZ = 8000
TURN_S, GAP_S, TEST_GAP_S = 2.0, 0.25, 1.0


def build_meeting(adapt: list[np.ndarray], test: list[np.ndarray], layout: str) -> tuple[np.ndarray, list[dict]]:
    """(meeting audio, test parts: {"start", "end", "snr_db", "sources" (2, n)}) at RATE_HZ. ``layout``: "end"
    puts the three overlaps after all the turns; "interleaved" puts one after each quarter of the turns, as
    overlaps come in a conversation."""
    turn, gap = int(TURN_S * RATE_HZ), np.zeros(int(GAP_S * RATE_HZ), np.float32)
    turns = [[x[i : i + turn] for i in range(0, len(x), turn)] for x in adapt]
    sequence = [t[k] for k in range(max(len(t) for t in turns)) for t in turns if k < len(t)]
    mixes = [(snr, *remix(test[0], test[1], snr)) for snr in SNRS_DB]
    if layout == "end":
        slots = {len(sequence): mixes}
    else:
        slots = {round(len(sequence) * (i + 1) / (len(mixes) + 1)): [m] for i, m in enumerate(mixes)}
    pieces: list[np.ndarray] = []
    tests, position = [], 0
    for index in range(len(sequence) + 1):
        for snr, mix, sources in slots.get(index, []):
            silence = np.zeros(int(TEST_GAP_S * RATE_HZ), np.float32)
            tests.append({"start": position + silence.size, "end": position + silence.size + len(mix),
                          "snr_db": snr, "sources": sources})
            pieces += [silence, mix, silence]
            position += 2 * silence.size + len(mix)
        if index < len(sequence):
            pieces += [sequence[index], gap]
            position += len(sequence[index]) + gap.size
    return np.concatenate(pieces).astype(np.float32), tests


def build_conversation(folds: int, fold: int, snrs_db: tuple = SNRS_DB) -> tuple[np.ndarray, list[dict]]:
    """The pyannote sample's own conversation with fold ``fold`` of each talker's single-talker speech muted,
    and the remixes of those muted parts (at each of ``snrs_db``) inserted at the ends of single-talker turns
    evenly spread through it (three: near a quarter, half and three quarters of the way; one: near half), with
    1 s of silence around each. (audio, test parts)."""
    audio, regions = single_talker_regions(RATE_HZ)
    audio = audio.copy()
    held_out = []
    for mine in regions:  # the fold, in the talker's concatenated single-talker speech -> original samples
        lengths = np.array([b - a for a, b in mine])
        edges = np.linspace(0, lengths.sum(), folds + 1).astype(int)
        lo, hi, offset, pieces = edges[fold], edges[fold + 1], 0, []
        for a, b in mine:
            x0, x1 = max(lo - offset, 0), min(hi - offset, b - a)
            if x0 < x1:
                pieces.append(audio[a + x0 : a + x1].copy())
                audio[a + x0 : a + x1] = 0.0
            offset += b - a
        held_out.append(np.concatenate(pieces))
    ends = sorted(b for mine in regions for _, b in mine)
    quarters = [(i + 1) / (len(snrs_db) + 1) for i in range(len(snrs_db))]
    points = sorted({min(ends, key=lambda e: abs(e - len(audio) * q)) for q in quarters})
    mixes = [remix(held_out[0], held_out[1], snr) + (snr,) for snr in snrs_db]
    silence = np.zeros(int(TEST_GAP_S * RATE_HZ), np.float32)
    pieces, tests, previous, shift = [], [], 0, 0
    for point, (mix, sources, snr) in zip(points + [points[-1]] * (len(mixes) - len(points)), mixes, strict=True):
        pieces += [audio[previous:point], silence, mix, silence]
        start = point + shift + silence.size
        tests.append({"start": start, "end": start + len(mix), "snr_db": snr, "sources": sources})
        shift += 2 * silence.size + len(mix)
        previous = point
    pieces.append(audio[previous:])
    return np.concatenate(pieces).astype(np.float32), tests


def to_score_rate(x: np.ndarray) -> np.ndarray:
    return soxr.resample(np.asarray(x, np.float32).T, RATE_HZ, SCORE_RATE_HZ).T


def run_meeting(args: argparse.Namespace, name: str, audio: np.ndarray, tests: list[dict], test_s: float) -> dict:
    """`rtsep process` on one meeting, scored on its overlapped parts."""
    folder = args.out / name
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "meeting.wav"
    sf.write(str(wav), audio, RATE_HZ, subtype="FLOAT")
    cmd = [sys.executable, "-m", "rtsep", "process", str(wav), "--out", str(folder / "out"), "--quiet",
           "--separator", "convtasnet", "--adapt-threads", str(max(1, (os.cpu_count() or 1) // args.jobs))]
    if args.adapt_steps is not None:
        cmd += ["--adapt-steps", str(args.adapt_steps)]
    if args.adapt_batch_size is not None:
        cmd += ["--adapt-batch-size", str(args.adapt_batch_size)]
    if args.checkpoint:
        cmd += ["--separator-checkpoint", str(args.checkpoint)]
    if args.adapt_min_similarity is not None:
        cmd += ["--adapt-min-similarity", str(args.adapt_min_similarity)]
    if args.adapt_min_periodicity is not None:
        cmd += ["--adapt-min-periodicity", str(args.adapt_min_periodicity)]
    if args.ensemble is not None:
        cmd += ["--ensemble", str(args.ensemble)]
    if args.wiener is not None:
        cmd += ["--wiener" if args.wiener else "--no-wiener"]
    cmd += shlex.split(args.flags)
    started = time.perf_counter()
    with open(folder / "process.log", "w") as log:
        subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                       stdout=subprocess.DEVNULL, stderr=log)
    wall_s = time.perf_counter() - started
    est = np.stack([sf.read(str(folder / "out" / "separated" / f"source_{k}.wav"), dtype="float32")[0]
                    for k in range(2)])
    scores = {}
    for t in tests:
        piece = to_score_rate(est[:, t["start"] : t["end"]])
        refs = to_score_rate(t["sources"])
        mix = to_score_rate(audio[t["start"] : t["end"]])
        n = min(piece.shape[1], refs.shape[1], len(mix))
        scores[f"{t['snr_db']:+.0f}dB"] = pit_si_sdr_improvement(mix[:n], piece[:, :n], refs[:, :n])[1]
    info_path = folder / "out" / "separated" / "sources.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    return {"meeting": name, "si_sdri_db": float(np.mean(list(scores.values()))), "by_snr": scores,
            "meeting_s": round(len(audio) / RATE_HZ, 2), "test_s": round(test_s, 2),
            "process_wall_s": round(wall_s, 1), "adaptation": info.get("adaptation"), "sources": info.get("sources")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--only-fold", type=int, nargs="+", default=None, help="these folds only (default: all)")
    p.add_argument("--adapt-steps", type=int, default=None, help="default: rtsep's (by device)")
    p.add_argument("--adapt-min-similarity", type=float, default=None, help="default: rtsep's")
    p.add_argument("--adapt-min-periodicity", type=float, default=None, help="default: rtsep's")
    p.add_argument("--adapt-batch-size", type=int, default=None, help="default: rtsep's (by device)")
    p.add_argument("--checkpoint", type=Path, help="default: the shipped checkpoint")
    p.add_argument("--ensemble", type=int, default=None, help="passes at playback speeds +-8 %% (default: rtsep's)")
    p.add_argument("--wiener", action=argparse.BooleanOptionalAction, default=None,
                   help="the Wiener post-filter (default: rtsep's)")
    p.add_argument("--out", type=Path, default=Path("/tmp/rtsep-process-remix"))
    p.add_argument("--flags", default="", help="more flags of `rtsep process` (e.g. \"--adapt-budget-rtf 0\")")
    p.add_argument("--snrs-db", type=float, nargs="+", default=list(SNRS_DB),
                   help="level ratios of the inserted remixes (conversation-single: one meeting each)")
    p.add_argument("--layout", choices=["conversation-single", "conversation", "interleaved", "end"],
                   default="conversation-single")
    p.add_argument("--jobs", type=int, default=1, help="meetings at once (each adapts on cores / jobs threads)")
    args = p.parse_args()
    streams = single_talker_streams(rate_hz=RATE_HZ)
    meetings = []  # (name, audio, tests, test_s)
    for fold in range(args.folds) if args.only_fold is None else args.only_fold:
        parts = [fold_split(s, args.folds, fold) for s in streams]
        test_s = len(parts[0][1]) / RATE_HZ
        if args.layout == "conversation-single":
            for snr in args.snrs_db:
                meetings.append((f"fold{fold}_{snr:+.0f}dB", *build_conversation(args.folds, fold, (snr,)), test_s))
        elif args.layout == "conversation":
            meetings.append((f"fold{fold}", *build_conversation(args.folds, fold), test_s))
        else:
            audio, tests = build_meeting([a for a, _ in parts], [t for _, t in parts], args.layout)
            meetings.append((f"fold{fold}", audio, tests, test_s))
    rows = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(lambda m: run_meeting(args, *m), meetings):
            rows.append(row)
            print(json.dumps(row), flush=True)
    by_snr = {}
    for r in rows:
        for key, value in r["by_snr"].items():
            by_snr.setdefault(key, []).append(value)
    mixtures = [v for r in rows for v in r["by_snr"].values()]
    summary = {"flags": args.flags, "adapt_steps": args.adapt_steps, "adapt_batch_size": args.adapt_batch_size,
               "adapt_min_similarity": args.adapt_min_similarity,
               "adapt_min_periodicity": args.adapt_min_periodicity, "ensemble": args.ensemble, "wiener": args.wiener,
               "layout": args.layout, "checkpoint": str(args.checkpoint or "shipped"), "meetings": len(rows),
               "mixtures": len(mixtures), "si_sdri_db_mean": float(np.mean(mixtures)),
               "si_sdri_db_median": float(np.median(mixtures)),
               **{f"si_sdri_db@{key}": float(np.mean(v)) for key, v in sorted(by_snr.items())},
               "process_wall_s_median": float(np.median([r["process_wall_s"] for r in rows]))}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
