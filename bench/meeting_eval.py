"""The product over a split of synthetic meetings (bench.meetings), scored by rtsep.evaluate, per condition.

    python -m bench.meeting_eval --meetings /work/runs/meetings/test [--separator none|convtasnet|...]
        [--config FILE] [--tag NAME] [--no-sample] [--limit N]

Each meeting's mix.wav goes through ``rtsep.compose.process_file`` (what ``rtsep process`` runs, with the
runtimes loaded once for the whole split) with the given config (default ``--separator none``: diarization and
speaker-gated tracks). Scored with rtsep.evaluate (nothing hand-written here): the final and the live timeline's
DER (collar ±0.25 s, overlap scored) with missed / false alarm / confusion, JER, the speaker count; each
reference talker's best-matching per-speaker track (Hungarian on SI-SDR) over the meeting and inside the
overlaps where they speak, beside perfect gating (the mixture gated by the reference RTTM, per talker) and the
mixture itself; with a separator, its separated/ sources too. The pyannote sample is processed as one more row
(DER only: it has no reference tracks).

JSON lines (one per meeting, then one per condition and one overall) go to
``bench/results/meetings-<split>-<tag>.jsonl``; a markdown table per condition is printed for bench/RESULTS.md.
A talker's SI-SDR is undefined where no track was matched to them (fewer tracks than talkers) or their track is
silent where it is scored: it counts as -inf in the medians (the worst rank) and is left out of the means, and
``silent_tracks`` counts those talkers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, machine_note
from rtsep.compose import build_adaptive, build_diarization, build_separation, process_file
from rtsep.config import load_config
from rtsep.diarize.timeline import annotation_from_json
from rtsep.evaluate import (
    Track,
    activity_mask,
    read_rttm,
    read_tracks,
    read_wav,
    score_diarization,
    score_tracks,
)

log = logging.getLogger("bench.meeting_eval")

TRACK_KEYS = ("si_sdr_db", "overlap_si_sdr_db")


def gated_by_reference(mix: Track, reference, names: list[str]) -> dict[str, Track]:
    """Perfect gating: the mixture kept where the reference RTTM says each talker speaks, silent elsewhere."""
    out = {}
    for name in names:
        mask = activity_mask(reference, mix.audio.size, mix.rate_hz, name) > 0
        out[name] = Track(np.where(mask, mix.audio, 0.0).astype(np.float32), mix.rate_hz)
    return out


def _track_summary(scored: dict[str, Any]) -> dict[str, Any]:
    rows = scored["references"]
    out: dict[str, Any] = {"per_reference": [{k: r.get(k) for k in ("reference", "track", *TRACK_KEYS,
                                                                    "mixture_si_sdr_db",
                                                                    "overlap_mixture_si_sdr_db", "overlap_s")}
                                             for r in rows]}
    for key in TRACK_KEYS:
        values = [r.get(key) for r in rows if not (key.startswith("overlap") and not r.get("overlap_s"))]
        out[key] = _values(values)
    out["silent_tracks"] = sum(r.get("si_sdr_db") is None for r in rows)
    out["unmatched_references"] = len(scored["unmatched_references"])
    return out


def _values(values: list[float | None]) -> list[float]:
    """Per-talker values with undefined (silent) ones as -inf."""
    return [-math.inf if v is None else float(v) for v in values]


def score_meeting(folder: Path, result, separated: bool) -> dict[str, Any]:
    meta = json.loads((folder / "meta.json").read_text())
    reference = next(iter(read_rttm(folder / "ref.rttm").values()))
    row: dict[str, Any] = {"id": meta["id"], "condition": meta["condition"]["name"],
                           "talkers": len(meta["talkers"]), "duration_s": meta["duration_s"],
                           "overlap_share": meta["overlap_share"]}
    for kind, timeline in (("final", result.final), ("live", result.live)):
        hyp = annotation_from_json({**timeline, "uri": meta["id"]})
        row[kind] = score_diarization([(meta["id"], reference, hyp)])["files"][0]
    refs = read_tracks(folder / "refs")
    mix = read_wav(folder / "mix.wav")
    tracks_dir = next((p.parent for p in result.files if p.parent.name == "tracks" and p.suffix == ".wav"), None)
    if tracks_dir is not None:
        row["tracks"] = _track_summary(score_tracks(refs, read_tracks(tracks_dir), mix, reference))
    else:
        row["tracks"] = None  # no speech found: no track
    row["perfect_gating"] = _track_summary(score_tracks(refs, gated_by_reference(mix, reference, sorted(refs)),
                                                        mix, reference))
    row["mixture"] = {key: _values([r.get(key.replace("_si_sdr", "_mixture_si_sdr") if key.startswith("overlap")
                                      else "mixture_si_sdr_db") for r in row["perfect_gating"]["per_reference"]
                                     if not (key.startswith("overlap") and not r.get("overlap_s"))])
                      for key in TRACK_KEYS}
    if separated:
        sources = [p for p in result.files if p.parent.name == "separated" and p.suffix == ".wav"]
        row["separated"] = (_track_summary(score_tracks(refs, read_tracks(sources[0].parent), mix, reference))
                            if sources else None)
    return row


def _stats(values: list[float]) -> dict[str, float | None]:
    finite = [v for v in values if math.isfinite(v)]
    return {"median": _r(statistics.median(values)) if values else None,
            "mean": _r(statistics.fmean(finite)) if finite else None, "n": len(values)}


def _r(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def summarise(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "summary", "group": name, "meetings": len(rows)}
    for kind in ("final", "live"):
        for key in ("der", "missed", "false_alarm", "confusion", "jer", "speaker_count_error"):
            out[f"{kind}_{key}"] = _stats([float(r[kind][key]) for r in rows if r[kind][key] is not None])
    out["final_speaker_count_exact"] = sum(r["final"]["speaker_count_error"] == 0 for r in rows)
    for part in ("tracks", "perfect_gating", "mixture", "separated"):
        present = [r[part] for r in rows if r.get(part) is not None]
        if not present and part == "separated":
            continue
        for key in TRACK_KEYS:
            # a meeting without any track: each of its talkers counts as undefined (-inf)
            values = [v for r in rows for v in (r[part][key] if r.get(part) is not None else
                                                [-math.inf] * r["talkers"])]
            out[f"{part}_{key}"] = _stats(values)
        if part not in ("mixture",):
            out[f"{part}_silent_tracks"] = sum(p["silent_tracks"] for p in present)
    return out


def pooled_der(rows: list[dict[str, Any]], kind: str) -> float | None:
    """DER over all the meetings' speech together (missed + false alarm + confusion seconds / speech seconds)."""
    speech = sum(r[kind]["speech_s"] for r in rows)
    errors = sum(r[kind]["der"] * r[kind]["speech_s"] for r in rows)
    return round(errors / speech, 4) if speech else None


def _pct(stat: dict) -> str:
    return "-" if stat["median"] is None else (f"{100 * stat['median']:.1f}" +
                                               (f" / {100 * stat['mean']:.1f}" if stat["mean"] is not None else ""))


def _db(stat: dict | None) -> str:
    if stat is None or stat["n"] == 0:
        return "-"
    med = "-inf" if stat["median"] is None else f"{stat['median']:.1f}"
    return med + (f" / {stat['mean']:.1f}" if stat["mean"] is not None else "")


def table(summaries: list[dict[str, Any]], sample: dict[str, Any] | None) -> str:
    head = ("| group | meetings | final DER % | miss / FA / conf % (median) | live DER % | JER % | spk err "
            "| exact | track SI-SDR dB | in overlaps | perfect gating | gating in overlaps | mixture in overlaps |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for s in summaries:
        comps = " / ".join(f"{100 * s[f'final_{k}']['median']:.1f}" for k in ("missed", "false_alarm", "confusion"))
        lines.append(
            f"| {s['group']} | {s['meetings']} | {_pct(s['final_der'])} | {comps} | {_pct(s['live_der'])} "
            f"| {_pct(s['final_jer'])} | {s['final_speaker_count_error']['median']:+.0f} / "
            f"{s['final_speaker_count_error']['mean']:+.2f} | {s['final_speaker_count_exact']}/{s['meetings']} "
            f"| {_db(s.get('tracks_si_sdr_db'))} | {_db(s.get('tracks_overlap_si_sdr_db'))} "
            f"| {_db(s.get('perfect_gating_si_sdr_db'))} | {_db(s.get('perfect_gating_overlap_si_sdr_db'))} "
            f"| {_db(s.get('mixture_overlap_si_sdr_db'))} |")
    if sample is not None:
        f, live = sample["final"], sample["live"]
        lines.append(f"| pyannote sample (30 s, 2 talkers) | 1 | {100 * f['der']:.1f} | {100 * f['missed']:.1f} / "
                     f"{100 * f['false_alarm']:.1f} / {100 * f['confusion']:.1f} | {100 * live['der']:.1f} "
                     f"| {100 * f['jer']:.1f} | {f['speaker_count_error']:+d} | {int(f['speaker_count_error'] == 0)}/1 "
                     "| - | - | - | - | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.meeting_eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--meetings", required=True, type=Path, help="a split built by `python -m bench.meetings`")
    parser.add_argument("--config", help="a TOML config file (rtsep's sections)")
    parser.add_argument("--separator", default="none", help="the separator (default none; 'default': the config's)")
    parser.add_argument("--tag", default=None, help="name of the result file (default: the separator)")
    parser.add_argument("--limit", type=int, help="only the first N meetings (smoke tests)")
    parser.add_argument("--no-sample", action="store_true", help="leave out the pyannote sample row")
    parser.add_argument("--out", type=Path, help="the JSON lines file (default bench/results/meetings-...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = {} if args.separator == "default" else {"separator": {"name": args.separator}}
    app = load_config(args.config, overrides=overrides, env={})
    config = app.pipeline
    index = json.loads((args.meetings / "index.json").read_text())
    meetings = index["meetings"][: args.limit]
    tag = args.tag or (args.separator if args.separator != "default" else str(config.separator.name))
    out_path = args.out or REPO / "bench" / "results" / f"meetings-{index['split']}-{tag}.jsonl"
    note = machine_note()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    runtime = build_diarization(config)
    adaptive = build_adaptive(config, app.offline)
    separation = None if adaptive is not None else build_separation(config)
    separated = config.separator.name is not None
    rows: list[dict[str, Any]] = []
    sample_row = None
    try:
        for entry in meetings:
            folder = args.meetings / entry["id"]
            with tempfile.TemporaryDirectory(prefix="meeting-eval-") as out:
                t0 = time.perf_counter()
                result = asyncio.run(process_file(folder / "mix.wav", Path(out), config, runtime,
                                                  separation=separation, adaptive=adaptive))
                seconds = time.perf_counter() - t0
                row = score_meeting(folder, result, separated)
            row["process_s"] = round(seconds, 2)
            row["rtf"] = round(seconds / result.duration_s, 4)
            rows.append(row)
            log.info("%s %-9s %d talkers: final DER %.1f %% live %.1f %% found %d (rtf %.3f)", row["id"],
                     row["condition"], row["talkers"], 100 * row["final"]["der"], 100 * row["live"]["der"],
                     row["final"]["hyp_speakers"], row["rtf"])
        if not args.no_sample:
            from rtsep.demo import sample_paths

            wav, rttm = sample_paths()
            with tempfile.TemporaryDirectory(prefix="meeting-eval-") as out:
                result = asyncio.run(process_file(wav, Path(out), config, runtime, separation=separation,
                                                  adaptive=adaptive))
            reference = next(iter(read_rttm(rttm).values()))
            sample_row = {"id": "pyannote-sample"}
            for kind, timeline in (("final", result.final), ("live", result.live)):
                hyp = annotation_from_json({**timeline, "uri": reference.uri})
                sample_row[kind] = score_diarization([(reference.uri, reference, hyp)])["files"][0]
    finally:
        runtime.close()
        if separation is not None:
            separation.close()
    conditions = sorted({r["condition"] for r in rows}, key=lambda c: [m["condition"] for m in meetings].index(c))
    summaries = [summarise([r for r in rows if r["condition"] == c], c) for c in conditions]
    overall = summarise(rows, "all")
    overall["final_der_pooled"] = pooled_der(rows, "final")
    overall["live_der_pooled"] = pooled_der(rows, "live")
    summaries.append(overall)
    by_talkers = [summarise([r for r in rows if r["talkers"] == n], f"{n} talkers")
                  for n in sorted({r["talkers"] for r in rows})]
    run = {"split": index["split"], "separator": config.separator.name, "config": args.config, "date": started,
           "machine": note, "command": "python -m bench.meeting_eval " + " ".join(argv or sys.argv[1:])}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as f:
        for row in rows:
            f.write(json.dumps(_clean({"kind": "meeting", **run, **row})) + "\n")
        if sample_row is not None:
            f.write(json.dumps(_clean({"kind": "sample", **run, **sample_row})) + "\n")
        for s in [*summaries, *by_talkers]:
            f.write(json.dumps(_clean({**run, **s})) + "\n")
    print(f"\n{run['split']} split, separator {config.separator.name}, {started}, {note}; "
          f"medians / means over meetings (DER %) and over talkers (SI-SDR dB)\n")
    print(table(summaries, sample_row))
    print()
    print(table(by_talkers, None))
    print(f"\npooled DER over the split: final {100 * overall['final_der_pooled']:.1f} %, "
          f"live {100 * overall['live_der_pooled']:.1f} %; rtf median "
          f"{statistics.median(r['rtf'] for r in rows):.3f}; results in {out_path}")
    return 0


def _clean(value):
    """JSON has no infinity: an undefined SI-SDR (-inf in the medians) is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


if __name__ == "__main__":
    sys.exit(main())
