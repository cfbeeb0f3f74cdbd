"""Attribution settings (rtsep.stream.attribution) over a split of meetings: choose on dev, then report on test.

    python -m bench.attribution_sweep cache --meetings /work/runs/meetings/dev \
        --config bench/configs/convtasnet-unadapted.toml --cache /work/runs/attrib/dev-unadapted [--limit N]
    python -m bench.attribution_sweep sweep --meetings /work/runs/meetings/dev \
        --cache /work/runs/attrib/dev-unadapted [--out bench/results/attribution-dev-unadapted.jsonl]
    python -m bench.attribution_sweep compare BEFORE.jsonl AFTER.jsonl   # two bench.meeting_eval runs, per talker

``cache`` runs ``rtsep process`` (rtsep.compose.process_file, the config's separator, ``[attribution]`` as
configured) once per meeting and keeps what the attribution starts from: the final timeline and the separated
sources (separated/source_<k>.wav). ``sweep`` then renders the final speaker tracks from the mixture, the sources
and the timeline with each setting of a small grid (the same functions ``rtsep process`` uses:
rtsep.stream.attribution.attribute, rtsep.stream.render.iter_attributed; no loudness normalisation: SI-SDR does
not see one gain per track), scores them with rtsep.evaluate.score_tracks against the reference talkers, and
prints, per setting, the median (over talkers) SI-SDR inside the overlaps and over the meeting, beside the gated
input (the tracks without sources), perfect gating and the mixture.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import shutil
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import REPO, machine_note
from bench.meeting_eval import gated_by_reference
from rtsep.compose import build_adaptive, build_diarization, build_separation, process_file
from rtsep.config import load_config
from rtsep.evaluate import Track, read_rttm, read_tracks, read_wav, score_tracks
from rtsep.stream.attribution import AttributionConfig, attribute
from rtsep.stream.render import iter_attributed, iter_speakers, segment_spans

log = logging.getLogger("bench.attribution_sweep")

GRID = {
    "solo": ("input", "overlap", "source"),
    "min_similarity": (0.5, 0.65),
    "min_margin": (0.0, 0.03),
    "solo_other_share": (0.05, 0.1, 0.2),
}


def cache(args: argparse.Namespace) -> int:
    overrides = {} if args.separator == "default" else {"separator": {"name": args.separator}}
    app = load_config(args.config, overrides=overrides, env={})
    config = app.pipeline
    index = json.loads((args.meetings / "index.json").read_text())
    runtime = build_diarization(config)
    adaptive = build_adaptive(config, app.offline)
    separation = None if adaptive is not None else build_separation(config)
    args.cache.mkdir(parents=True, exist_ok=True)
    try:
        for entry in index["meetings"][: args.limit]:
            folder = args.meetings / entry["id"]
            target = args.cache / entry["id"]
            if (target / "timeline.json").exists():
                continue
            with tempfile.TemporaryDirectory(prefix="attrib-") as out:
                asyncio.run(process_file(folder / "mix.wav", Path(out), config, runtime, separation=separation,
                                         adaptive=adaptive))
                target.mkdir(exist_ok=True)
                for name in sorted((Path(out) / "separated").glob("source_*.wav")):
                    shutil.copy(name, target / name.name)
                for name in ("attribution.json",):
                    if (Path(out) / "tracks" / name).exists():
                        shutil.copy(Path(out) / "tracks" / name, target / name)
                shutil.copy(Path(out) / "timeline.json", target / "timeline.json")
            log.info("%s cached", entry["id"])
    finally:
        runtime.close()
        if separation is not None:
            separation.close()
    return 0


class MemoEncoder:
    """The speaker encoder (resemblyzer, as rtsep's diarizer loads it), with each window's embedding kept."""

    def __init__(self) -> None:
        from rtsep.diarize.embedding import load_speaker_encoder

        self.encoder = load_speaker_encoder().eval()
        self.memo: dict[bytes, np.ndarray] = {}

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        keys = [hashlib.blake2b(w.tobytes(), digest_size=16).digest() for w in windows]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        if todo:
            with torch.inference_mode():
                out = self.encoder(torch.from_numpy(np.ascontiguousarray(windows[todo]))).numpy()
            for i, e in zip(todo, out, strict=True):
                self.memo[keys[i]] = e
        return np.stack([self.memo[k] for k in keys]) if keys else np.zeros((0, 256), np.float32)


def _median(values: list[float | None]) -> float | None:
    ranked = [-math.inf if v is None else v for v in values]
    if not ranked:
        return None
    m = statistics.median(ranked)
    return round(m, 3) if math.isfinite(m) else None


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(statistics.fmean(finite), 3) if finite else None


def _paired(values: list[float | None], baseline: list[float | None]) -> list[float]:
    return [v - b for v, b in zip(values, baseline, strict=True) if v is not None and b is not None]


def _scores(scored: dict[str, Any]) -> dict[str, list[float | None]]:
    rows = scored["references"]
    return {"overlap": [r.get("overlap_si_sdr_db") for r in rows if r.get("overlap_s")],
            "meeting": [r.get("si_sdr_db") for r in rows]}


def sweep(args: argparse.Namespace) -> int:
    logging.getLogger("rtsep").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    embed = MemoEncoder()
    meetings = sorted(p for p in args.cache.iterdir() if (p / "timeline.json").exists())[: args.limit]
    settings = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    # solo_other_share only matters with solo = overlap
    settings = [s for s in settings if s["solo"] == "overlap" or s["solo_other_share"] == GRID["solo_other_share"][0]]
    base = AttributionConfig()
    results: dict[str, dict[str, list]] = {}
    counts: dict[str, dict[str, int]] = {}
    for cached in meetings:
        folder = args.meetings / cached.name
        reference = next(iter(read_rttm(folder / "ref.rttm").values()))
        refs = read_tracks(folder / "refs")
        mix = read_wav(folder / "mix.wav")
        rate = mix.rate_hz
        timeline = json.loads((cached / "timeline.json").read_text())
        segments = timeline.get("segments", [])
        sources = np.stack([read_wav(p).audio for p in sorted(cached.glob("source_*.wav"))])
        total = mix.audio.size
        sources = np.pad(sources, ((0, 0), (0, max(0, total - sources.shape[1]))))[:, :total].astype(np.float32)
        rows = {"mixture": {"overlap": [], "meeting": []}}
        perfect = score_tracks(refs, gated_by_reference(mix, reference, sorted(refs)), mix, reference)
        rows["perfect_gating"] = _scores(perfect)
        rows["mixture"]["overlap"] = [r.get("overlap_mixture_si_sdr_db") for r in perfect["references"]
                                      if r.get("overlap_s")]
        rows["mixture"]["meeting"] = [r.get("mixture_si_sdr_db") for r in perfect["references"]]
        if not segments:
            none = {"overlap": [None] * len(rows["mixture"]["overlap"]), "meeting": [None] * len(refs)}
            rows["gated_input"] = none
            for s in settings:
                rows[json.dumps(s)] = none
        else:
            gated = {spk: Track(t, rate) for spk, t in iter_speakers(mix.audio, rate, segments, 0.01)}
            rows["gated_input"] = _scores(score_tracks(refs, gated, mix, reference))
            for s in settings:
                config = dataclasses.replace(base, **s)
                attribution = attribute(mix.audio, sources, rate, segment_spans(segments, rate), config, embed)
                key = json.dumps(s)
                for reason, n in attribution.summary().items():
                    counts.setdefault(key, {}).setdefault(reason, 0)
                    counts[key][reason] += n
                tracks = {spk: Track(t, rate) for spk, t in
                          iter_attributed(mix.audio, sources, rate, segments, attribution, 0.01, config.crossfade_s)}
                rows[key] = _scores(score_tracks(refs, tracks, mix, reference))
        for key, value in rows.items():
            for part in ("overlap", "meeting"):
                results.setdefault(key, {"overlap": [], "meeting": []})[part] += value[part]
        log.info("%s: %s", cached.name, {k: _median(v["overlap"]) for k, v in list(rows.items())[:3]})
    note = machine_note()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out_path = args.out or REPO / "bench" / "results" / f"attribution-{args.cache.name}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    with out_path.open("w") as f:
        for key, value in results.items():
            row = {"setting": key, "overlap_median_db": _median(value["overlap"]),
                   "meeting_median_db": _median(value["meeting"]),
                   "overlap_mean_db": _mean(value["overlap"]), "meeting_mean_db": _mean(value["meeting"]),
                   # per talker, this setting's tracks minus the gated input's (where both are defined)
                   "overlap_vs_gated_median_db": _median(_paired(value["overlap"], results["gated_input"]["overlap"])),
                   "meeting_vs_gated_median_db": _median(_paired(value["meeting"], results["gated_input"]["meeting"])),
                   "talkers": len(value["meeting"]),
                   "overlap_talkers": len(value["overlap"]), "decisions": counts.get(key),
                   "meetings": len(meetings), "cache": str(args.cache), "date": started, "machine": note}
            f.write(json.dumps(row) + "\n")
            lines.append(row)
    print(f"\n{len(meetings)} meetings of {args.cache}, {started}, {note}; medians over talkers (dB)\n")
    print("| setting | in overlaps: median / mean | vs gated input (paired median) | over the meeting: median / mean "
          "| vs gated input | decisions |\n|---|---|---|---|---|---|")
    for row in lines:
        print(f"| {row['setting']} | {row['overlap_median_db']} / {row['overlap_mean_db']} | "
              f"{row['overlap_vs_gated_median_db']} | {row['meeting_median_db']} / {row['meeting_mean_db']} | "
              f"{row['meeting_vs_gated_median_db']} | {row['decisions'] or ''} |")
    return 0


def compare(args: argparse.Namespace) -> int:
    """Two bench.meeting_eval result files of the same split and timelines: per talker, the tracks' SI-SDR of the
    second minus the first's (inside the overlaps and over the meeting), medians and means."""
    def talkers(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("kind") == "meeting" and row.get("tracks"):
                for ref in row["tracks"]["per_reference"]:
                    out[(row["id"], ref["reference"])] = {**ref, "der": row["final"]["der"]}
        return out

    before, after = talkers(args.before), talkers(args.after)
    same = [k for k in before if k in after and before[k]["der"] == after[k]["der"]]
    print(f"{len(same)} talkers in both with the same final DER (the same timeline) of {len(after)}")
    for key, name in (("overlap_si_sdr_db", "in overlaps"), ("si_sdr_db", "over the meeting")):
        diffs = [after[k][key] - before[k][key] for k in same
                 if after[k].get(key) is not None and before[k].get(key) is not None]
        if diffs:
            print(f"{name}: {len(diffs)} talkers, paired median {statistics.median(diffs):+.2f} dB, mean "
                  f"{statistics.fmean(diffs):+.2f} dB, better for {sum(d > 0.05 for d in diffs)}, worse for "
                  f"{sum(d < -0.05 for d in diffs)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.attribution_sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cache", help="run rtsep process once per meeting, keep the timeline and the sources")
    p.add_argument("--meetings", required=True, type=Path)
    p.add_argument("--cache", required=True, type=Path)
    p.add_argument("--config")
    p.add_argument("--separator", default="default")
    p.add_argument("--limit", type=int)
    p = sub.add_parser("sweep", help="score the attribution settings on the cached meetings")
    p.add_argument("--meetings", required=True, type=Path)
    p.add_argument("--cache", required=True, type=Path)
    p.add_argument("--limit", type=int)
    p.add_argument("--out", type=Path)
    p = sub.add_parser("compare", help="per talker: two bench.meeting_eval runs' tracks, paired")
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    return {"cache": cache, "sweep": sweep, "compare": compare}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
