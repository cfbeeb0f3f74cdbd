"""Settings of the final timeline swept over a split of synthetic meetings, from captured session records.

    python -m bench.final_sweep capture --meetings /work/runs/meetings/dev --cache /work/runs/finalcache/dev
    python -m bench.final_sweep sweep --meetings /work/runs/meetings/dev --cache /work/runs/finalcache/dev \\
        --set final_min_gap_s=0,0.5,1.0 [--set final_min_duration_on_s=0,0.2] [--out FILE]

``capture`` runs each meeting through ``rtsep.compose.process_file`` once (what ``rtsep process`` and
``bench.meeting_eval`` run, default config or ``--config``) and keeps what the final timeline is made from (the
step records, the live labels, the live turns) in one pickle per meeting. ``sweep`` re-makes the final timeline
with :func:`rtsep.diarize.offline.final_segments` for every combination of the ``--set`` values (fields of
DiarizationConfig) and scores it with rtsep.evaluate (the meeting_eval scoring: DER at collar 0.25 s, overlap
scored). Only the final timeline changes, so a sweep of many settings costs seconds per setting instead of a
full run; the chosen defaults are then checked with ``bench.meeting_eval`` itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import pickle
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from rtsep.diarize.timeline import annotation_from_segments
from rtsep.evaluate import read_rttm, score_diarization

log = logging.getLogger("bench.final_sweep")


def capture(meetings: Path, cache: Path, config_path: str | None, limit: int | None) -> None:
    import rtsep.driver as driver
    from rtsep.compose import build_diarization, process_file
    from rtsep.config import load_config

    app = load_config(config_path, overrides={"separator": {"name": "none"}}, env={})
    config = app.pipeline
    captured: list[tuple] = []
    original = driver.final_segments

    def keeping(records, embedding_labels, diar, max_speakers, live_segments=()):
        captured.append((list(records), dict(embedding_labels), max_speakers, list(live_segments)))
        return original(records, embedding_labels, diar, max_speakers, live_segments)

    driver.final_segments = keeping
    cache.mkdir(parents=True, exist_ok=True)
    index = json.loads((meetings / "index.json").read_text())
    runtime = build_diarization(config)
    try:
        for entry in index["meetings"][:limit]:
            captured.clear()
            with tempfile.TemporaryDirectory(prefix="final-sweep-") as out:
                t0 = time.perf_counter()
                asyncio.run(process_file(meetings / entry["id"] / "mix.wav", Path(out), config, runtime))
            records, labels, max_speakers, live = captured[-1]
            with (cache / f"{entry['id']}.pkl").open("wb") as f:
                pickle.dump({"records": records, "labels": labels, "max_speakers": max_speakers, "live": live,
                             "config": config.diarization}, f)
            log.info("%s captured (%.0f s)", entry["id"], time.perf_counter() - t0)
    finally:
        driver.final_segments = original
        runtime.close()


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"none": None, "true": True, "false": False}.get(text.lower(), text)


def score_setting(meetings: Path, cached: dict[str, dict], changes: dict[str, Any]) -> dict[str, Any]:
    from rtsep.diarize.offline import final_segments

    rows = []
    t0 = time.perf_counter()
    for meeting_id, data in cached.items():
        diar = replace(data["config"], **changes)
        segments = final_segments(data["records"], data["labels"], diar, data["max_speakers"], data["live"])
        rate = diar.sample_rate_hz
        hyp = annotation_from_segments([(s / rate, e / rate, f"S{k}") for s, e, k in segments], meeting_id)
        reference = next(iter(read_rttm(meetings / meeting_id / "ref.rttm").values()))
        meta = json.loads((meetings / meeting_id / "meta.json").read_text())
        row = score_diarization([(meeting_id, reference, hyp)])["files"][0]
        rows.append({**row, "condition": meta["condition"]["name"]})
    seconds = time.perf_counter() - t0
    speech = sum(r["speech_s"] for r in rows)
    pooled = {k: sum(r[k] * r["speech_s"] for r in rows) / speech for k in ("der", "missed", "false_alarm",
                                                                            "confusion")}
    by_condition = {}
    for condition in dict.fromkeys(r["condition"] for r in rows):
        part = [r for r in rows if r["condition"] == condition]
        s = sum(r["speech_s"] for r in part)
        by_condition[condition] = round(sum(r["der"] * r["speech_s"] for r in part) / s, 4)
    return {"changes": changes, "meetings": len(rows), **{f"pooled_{k}": round(v, 4) for k, v in pooled.items()},
            "speaker_count_exact": sum(r["speaker_count_error"] == 0 for r in rows),
            "speaker_count_mae": round(sum(abs(r["speaker_count_error"]) for r in rows) / len(rows), 3),
            "by_condition": by_condition, "final_timeline_s": round(seconds, 2),
            "per_meeting": {r["file"]: round(r["der"], 4) for r in rows}}


def sweep(meetings: Path, cache: Path, settings: list[str], out: Path | None) -> None:
    from rtsep.diarize.online import DiarizationConfig

    known = {f.name for f in fields(DiarizationConfig)}
    grid: dict[str, list[Any]] = {}
    for item in settings:
        name, _, values = item.partition("=")
        if name not in known:
            raise SystemExit(f"--set: DiarizationConfig has no field {name!r}")
        grid[name] = [_value(v) for v in values.split(",")]
    cached = {}
    for path in sorted(cache.glob("*.pkl")):
        with path.open("rb") as f:
            cached[path.stem] = pickle.load(f)
    if not cached:
        raise SystemExit(f"no captured meetings in {cache}")
    results = []
    for combo in itertools.product(*grid.values()) if grid else [()]:
        changes = dict(zip(grid, combo))
        result = score_setting(meetings, cached, changes)
        results.append(result)
        print(f"{json.dumps(changes)}: DER {100 * result['pooled_der']:.1f} % (miss {100 * result['pooled_missed']:.1f}"
              f" / FA {100 * result['pooled_false_alarm']:.1f} / conf {100 * result['pooled_confusion']:.1f}),"
              f" exact {result['speaker_count_exact']}/{result['meetings']}, count MAE {result['speaker_count_mae']}"
              f" [{result['final_timeline_s']} s]", flush=True)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            for result in results:
                f.write(json.dumps(result) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.final_sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="run each meeting once and keep its final timeline's inputs")
    cap.add_argument("--meetings", required=True, type=Path)
    cap.add_argument("--cache", required=True, type=Path)
    cap.add_argument("--config", help="a TOML config file (rtsep's sections)")
    cap.add_argument("--limit", type=int)
    sw = sub.add_parser("sweep", help="re-make and score the final timeline for each setting")
    sw.add_argument("--meetings", required=True, type=Path)
    sw.add_argument("--cache", required=True, type=Path)
    sw.add_argument("--set", action="append", default=[], help="FIELD=V1,V2,... (DiarizationConfig fields)")
    sw.add_argument("--out", type=Path, help="append the results as JSON lines")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "capture":
        capture(args.meetings, args.cache, args.config, args.limit)
    else:
        sweep(args.meetings, args.cache, args.set, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
