"""Choose the overlap-aware final timeline's settings on a split of synthetic meetings (bench.meetings).

    python -m bench.overlap_sweep capture --meetings /work/runs/meetings/dev --cache /work/runs/overlap/cache-dev
    python -m bench.overlap_sweep sweep --meetings /work/runs/meetings/dev --cache /work/runs/overlap/cache-dev \\
        [--weights FILE] [--thresholds 0.3 0.4 0.5 0.6 0.7] [--methods nearest centroid hybrid] [--max-gaps 1 2 3]

``capture`` runs each meeting once through ``rtsep.compose.process_file`` (what ``rtsep process`` runs, the
default config, ``[overlap]`` off) and keeps what the final timeline is made from: the step records (VAD,
embeddings), the live labels and turns (a pickle per meeting). ``sweep`` scores the overlap detector on each
meeting's mix.wav (frame precision / recall / F1 of P(2+) >= threshold against the reference RTTM's overlapped
speech) and re-makes the final timeline from the capture (rtsep.diarize.offline.final_segments, the call the
driver makes) without and with a second speaker for each threshold x method (x ``max_gap_s``, how near in time
the second speaker must speak, where ``--max-gaps`` is given; the setting is then named
``method@threshold/gap<s>``), scored by rtsep.evaluate (DER,
collar 0.25 s, overlap scored). The final clustering is deterministic, so a capture plus a sweep gives what
``bench.meeting_eval`` with that ``[overlap]`` config would (checked by one such run in bench/RESULTS.md).
Results: ``bench/results/overlap-sweep-<split>.jsonl`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, machine_note
from rtsep import driver as driver_module
from rtsep.compose import build_diarization, process_file
from rtsep.config import load_config
from rtsep.diarize.offline import final_segments
from rtsep.diarize.overlap import OverlapConfig, overlap_regions
from rtsep.diarize.timeline import annotation_from_segments
from rtsep.evaluate import overlap_regions_of, read_rttm, read_wav, score_diarization, score_overlap_detection
from rtsep.stream.turns import speaker_name

log = logging.getLogger("bench.overlap_sweep")


def capture(meetings: Path, cache: Path, config_path: str | None, limit: int | None) -> None:
    app = load_config(config_path, overrides={"separator": {"name": "none"}, "overlap": {"enabled": False}}, env={})
    config = app.pipeline
    index = json.loads((meetings / "index.json").read_text())
    cache.mkdir(parents=True, exist_ok=True)
    runtime = build_diarization(config)
    captured: list[tuple] = []
    original = driver_module.final_segments

    def recording(records, labels, diar, max_speakers, live, overlaps=()):
        captured.append((list(records), dict(labels), list(live), max_speakers))
        return original(records, labels, diar, max_speakers, live, overlaps)

    driver_module.final_segments = recording
    try:
        for entry in index["meetings"][:limit]:
            folder = meetings / entry["id"]
            captured.clear()
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="overlap-sweep-") as out:
                asyncio.run(process_file(folder / "mix.wav", Path(out), config, runtime))
            if not captured:
                raise RuntimeError(f"{entry['id']}: the final timeline was not made")
            records, labels, live, max_speakers = captured[-1]
            with (cache / f"{entry['id']}.pkl").open("wb") as f:
                pickle.dump({"records": records, "labels": labels, "live": live, "max_speakers": max_speakers,
                             "diarization": config.diarization}, f)
            log.info("%s captured (%.1f s)", entry["id"], time.perf_counter() - t0)
    finally:
        driver_module.final_segments = original
        runtime.close()


def _timeline(segments: list[tuple[int, int, int]], rate_hz: int, uri: str):
    return annotation_from_segments([(s / rate_hz, e / rate_hz, speaker_name(k)) for s, e, k in segments], uri)


def sweep(meetings: Path, cache: Path, weights: str | None, thresholds: list[float], methods: list[str],
          out_path: Path, limit: int | None, argv: list[str], max_gaps: list[float] | None = None) -> None:
    import torch

    from rtsep.runtime.overlap import OverlapDetector

    torch.set_num_threads(1)
    detector = OverlapDetector.load(weights)
    index = json.loads((meetings / "index.json").read_text())
    settings: dict[str, dict[str, list]] = {}  # name -> {"pairs": [(uri, ref, hyp)], "detection": [...]}
    detector_cpu_s = audio_s = 0.0
    rows: list[dict[str, Any]] = []
    for entry in index["meetings"][:limit]:
        folder = meetings / entry["id"]
        data = pickle.loads((cache / f"{entry['id']}.pkl").read_bytes())
        diar = data["diarization"]
        rate = diar.sample_rate_hz
        reference = next(iter(read_rttm(folder / "ref.rttm").values()))
        mix = read_wav(folder / "mix.wav")
        if mix.rate_hz != rate:
            raise RuntimeError(f"{folder}/mix.wav is at {mix.rate_hz} Hz, the diarizer's rate is {rate} Hz")
        duration_s = mix.audio.size / rate
        t0 = time.process_time()
        probability = detector.overlap_probability(mix.audio, rate)
        detector_cpu_s += time.process_time() - t0
        audio_s += duration_s
        frame = round(detector.frame_s * rate)
        base = final_segments(data["records"], data["labels"], dataclasses.replace(diar, overlap=OverlapConfig()),
                              data["max_speakers"], data["live"])
        uri = entry["id"]
        named = {"off": (base, None)}
        for threshold in thresholds:
            cfg = OverlapConfig(enabled=True, threshold=threshold)
            regions = overlap_regions(probability, frame, threshold, round(cfg.min_duration_s * rate),
                                      round(cfg.merge_gap_s * rate))
            detected_s = [(a / rate, b / rate) for a, b in regions]
            for method in methods:
                for gap_s in max_gaps or [cfg.max_gap_s]:
                    setting = dataclasses.replace(cfg, method=method, max_gap_s=gap_s)
                    with_second = final_segments(data["records"], data["labels"],
                                                 dataclasses.replace(diar, overlap=setting),
                                                 data["max_speakers"], data["live"], regions)
                    name = f"{method}@{threshold:g}" + (f"/gap{gap_s:g}" if max_gaps else "")
                    named[name] = (with_second, detected_s)
        for name, (segments, detected_s) in named.items():
            hyp = _timeline(segments, rate, uri)
            slot = settings.setdefault(name, {"pairs": [], "detector": [], "timeline": []})
            slot["pairs"].append((uri, reference, hyp))
            slot["timeline"].append(score_overlap_detection(reference, overlap_regions_of(hyp), duration_s))
            if detected_s is not None:
                slot["detector"].append(score_overlap_detection(reference, detected_s, duration_s))
        log.info("%s: %d settings", uri, len(named))
    note = machine_note()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    run = {"split": index["split"], "weights": str(weights or "shipped"), "date": time.strftime("%Y-%m-%d %H:%M UTC",
           time.gmtime()), "machine": note, "command": "python -m bench.overlap_sweep " + " ".join(argv),
           "detector_rtf": round(detector_cpu_s / audio_s, 4) if audio_s else None}
    print(f"\n{index['split']} split, {len(settings['off']['pairs'])} meetings, {run['date']}, {note}; detector CPU "
          f"{detector_cpu_s:.1f} s for {audio_s:.0f} s of audio (RTF {run['detector_rtf']})\n")
    print("| setting | DER % (pooled) | missed % | false alarm % | confusion % | detector P / R / F1 "
          "| timeline overlap P / R / F1 |")
    print("|---|---:|---:|---:|---:|---|---|")
    with out_path.open("w") as f:
        for name, slot in settings.items():
            total = score_diarization(slot["pairs"])["total"]
            row = {**run, "setting": name, "der": total["der"], "missed": total["missed"],
                   "false_alarm": total["false_alarm"], "confusion": total["confusion"],
                   "detector": _pooled(slot["detector"]), "timeline_overlap": _pooled(slot["timeline"])}
            rows.append(row)
            f.write(json.dumps(row) + "\n")
            print(f"| {name} | {100 * row['der']:.1f} | {100 * row['missed']:.1f} | {100 * row['false_alarm']:.1f} "
                  f"| {100 * row['confusion']:.1f} | {_prf(row['detector'])} | {_prf(row['timeline_overlap'])} |")
    print(f"\nresults in {out_path}")


def _pooled(scores: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Precision / recall / F1 over all meetings' frames together."""
    if not scores:
        return None
    hits = sum(s["hits_s"] for s in scores)
    found = sum(s["detected_overlap_s"] for s in scores)
    truth = sum(s["reference_overlap_s"] for s in scores)
    p = hits / found if found else None
    r = hits / truth if truth else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else None
    return {"precision": p, "recall": r, "f1": f1, "reference_overlap_s": round(truth, 2),
            "detected_overlap_s": round(found, 2)}


def _prf(score: dict[str, Any] | None) -> str:
    if score is None:
        return "-"
    return " / ".join("-" if score[k] is None else f"{100 * score[k]:.0f}" for k in ("precision", "recall", "f1"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m bench.overlap_sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture")
    cap.add_argument("--meetings", required=True, type=Path)
    cap.add_argument("--cache", required=True, type=Path)
    cap.add_argument("--config", help="a TOML config file (rtsep's sections); [overlap] is switched off")
    cap.add_argument("--limit", type=int)
    sw = sub.add_parser("sweep")
    sw.add_argument("--meetings", required=True, type=Path)
    sw.add_argument("--cache", required=True, type=Path)
    sw.add_argument("--weights", help="the detector's safetensors (default: the shipped one)")
    sw.add_argument("--thresholds", type=float, nargs="+", default=[0.3, 0.4, 0.5, 0.6, 0.7])
    sw.add_argument("--methods", nargs="+", default=["nearest", "centroid", "hybrid"])
    sw.add_argument("--max-gaps", type=float, nargs="+",
                    help="[overlap] max_gap_s values to try (default: the config's, not named in the settings)")
    sw.add_argument("--limit", type=int)
    sw.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.command == "capture":
        capture(args.meetings, args.cache, args.config, args.limit)
    else:
        split = json.loads((args.meetings / "index.json").read_text())["split"]
        out = args.out or REPO / "bench" / "results" / f"overlap-sweep-{split}.jsonl"
        sweep(args.meetings, args.cache, args.weights, args.thresholds, args.methods, out, args.limit, argv,
              args.max_gaps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
