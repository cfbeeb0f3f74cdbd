"""Per-speaker tracks of `rtsep process`: the final-speaker tracks (tracks/) against the live ones (tracks/live/).

For each meeting folder (mix.wav, ref.rttm, refs/<talker>.wav: each talker's own signal as it is in the mix), runs
`rtsep process mix.wav --separator none` (diarization only: the tracks are the gated input) and scores, for every
reference talker, the SI-SDR over the whole meeting of the track that matches them best, in each track set; beside
it the same renderer (rtsep.stream.render) gating the mix by the reference timeline (perfect diarization). Also:
tracks per set against talkers, and the share of final speakers whose name is a live speaker's.

    python -m bench.final_tracks --meetings /work/runs/meetings/test --limit 8 --out bench/results/final_tracks.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from rtsep.stream.render import render_speakers


def si_sdr_db(estimate: np.ndarray, reference: np.ndarray) -> float:
    n = min(estimate.size, reference.size)
    e = estimate[:n].astype(np.float64) - estimate[:n].mean()
    r = reference[:n].astype(np.float64) - reference[:n].mean()
    energy = float(r @ r)
    if energy == 0:
        return float("nan")
    target = (e @ r) / energy * r
    noise = e - target
    return float(10 * np.log10(max(float(target @ target), 1e-12) / max(float(noise @ noise), 1e-12)))


def best_match_db(tracks: dict[str, np.ndarray], refs: dict[str, np.ndarray]) -> dict[str, float]:
    return {talker: max((si_sdr_db(t, ref) for t in tracks.values()), default=float("nan"))
            for talker, ref in refs.items()}


def read_folder(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(str(p), dtype="float32")[0] for p in sorted(folder.glob("*.wav"))}


def rttm_segments(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, duration = float(f[3]), float(f[4])
            out.append({"speaker": f[7], "start_s": start, "end_s": start + duration})
    return out


def run_meeting(folder: Path, out: Path) -> dict:
    began = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "rtsep", "process", str(folder / "mix.wav"), "--out", str(out),
                          "--quiet", "--separator", "none"], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{folder.name}: rtsep process failed: {run.stderr[-2000:]}")
    wall_s = time.monotonic() - began
    report = json.loads(run.stdout)
    mix, rate = sf.read(str(folder / "mix.wav"), dtype="float32")
    refs = read_folder(folder / "refs")
    final, live = read_folder(out / "tracks"), read_folder(out / "tracks" / "live")
    perfect = render_speakers(mix, rate, rttm_segments(folder / "ref.rttm"))
    scores = {"final": best_match_db(final, refs), "live": best_match_db(live, refs),
              "perfect_gating": best_match_db(perfect, refs)}
    names_kept = sum(1 for s in report["speakers"] if s in report["live_speakers"])
    return {
        "meeting": folder.name, "talkers": len(refs), "final_tracks": len(final), "live_tracks": len(live),
        "final_names_that_are_live_names": f"{names_kept}/{len(report['speakers'])}",
        "median_best_si_sdr_db": {k: round(float(np.nanmedian(list(v.values()))), 2) for k, v in scores.items()},
        "best_si_sdr_db": {k: {t: round(x, 2) for t, x in v.items()} for k, v in scores.items()},
        "process_wall_s": round(wall_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meetings", type=Path, required=True, help="a split folder (its meetings in sub-folders)")
    parser.add_argument("--limit", type=int, default=0, help="the first N meetings (0: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-final-tracks"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    folders = sorted(p for p in args.meetings.iterdir() if (p / "mix.wav").exists())
    if args.limit:
        folders = folders[: args.limit]
    rows = []
    for folder in folders:
        row = run_meeting(folder, args.work / folder.name)
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("meeting", "talkers", "final_tracks", "live_tracks",
                                              "final_names_that_are_live_names", "median_best_si_sdr_db")}),
              file=sys.stderr, flush=True)  # progress; the report (stdout) is one JSON document
    summary = {kind: round(float(np.median([r["median_best_si_sdr_db"][kind] for r in rows])), 2)
               for kind in ("final", "live", "perfect_gating")}
    extra = {
        "meetings": len(rows),
        "median_over_meetings_db": summary,
        "final_minus_live_db_median": round(float(np.median(
            [r["median_best_si_sdr_db"]["final"] - r["median_best_si_sdr_db"]["live"] for r in rows])), 2),
        "tracks_per_talker": {"final": round(sum(r["final_tracks"] for r in rows) / sum(r["talkers"] for r in rows), 2),
                              "live": round(sum(r["live_tracks"] for r in rows) / sum(r["talkers"] for r in rows), 2)},
    }
    report = {"load_average_at_start": load_at_start, **extra, "rows": rows}
    print(json.dumps(report, indent=1))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
