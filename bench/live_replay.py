"""The live diarizer replayed over recorded model outputs: many live settings tried in minutes, not hours.

    python -m bench.live_replay capture --meetings /work/runs/meetings/dev --out /work/runs/live-replay/dev
    python -m bench.live_replay sweep --meetings /work/runs/meetings/dev --cache /work/runs/live-replay/dev \
        --set live_hangover_frames=5,7 --set clustering.split_distance=0.33,0.4 [--limit N]

``capture`` runs each meeting through ``rtsep.compose.process_file`` (what ``rtsep process`` and
``bench.meeting_eval`` run, ``--separator none``) and records every :class:`StepAnalysis` the session core pushes
into its :class:`OnlineDiarizer` (silero's frame probabilities and the resemblyzer embedding of each step): those
depend only on the audio and the runtime's settings (``vad_onset``, the embedding window and buffer), not on the
online diarizer's. ``sweep`` replays the sans-I/O :class:`OnlineDiarizer` over the recorded steps with each
combination of the given settings (``DiarizationConfig`` fields; ``clustering.X`` for ``ClusteringConfig``), builds
the live timeline from its closed turns exactly as the session core does, and scores it with ``rtsep.evaluate``
(DER collar ±0.25 s, overlap scored). The capture also stores the live DER of the real run, and the replay with the
capture's own settings must reproduce it (checked: ``sweep`` prints the difference).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rtsep.diarize.online import (
    DiarizationConfig,
    OnlineDiarizer,
    SegmentClosed,
    SpeakerStarted,
    SpeakerStopped,
    StepAnalysis,
    speaker_name,
)


def capture(meetings: Path, out: Path, config_path: str | None, limit: int | None) -> None:
    from bench.meeting_eval import score_meeting
    from rtsep.compose import build_diarization, process_file
    from rtsep.config import load_config

    app = load_config(config_path, overrides={"separator": {"name": "none"}}, env={})
    config = app.pipeline
    index = json.loads((meetings / "index.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    recorded: list[StepAnalysis] = []
    original_push = OnlineDiarizer.push

    def recording_push(self, step):  # the bench's tap on the core's input to the diarizer
        recorded.append(step)
        return original_push(self, step)

    runtime = build_diarization(config)
    OnlineDiarizer.push = recording_push
    try:
        for entry in index["meetings"][:limit]:
            recorded.clear()
            folder = meetings / entry["id"]
            with tempfile.TemporaryDirectory(prefix="live-replay-") as tmp:
                result = asyncio.run(process_file(folder / "mix.wav", Path(tmp), config, runtime))
                row = score_meeting(folder, result, separated=False)
            dim = next((s.embedding.size for s in recorded if s.embedding is not None), 256)
            np.savez_compressed(
                out / f"{entry['id']}.npz",
                step_index=np.array([s.step_index for s in recorded]),
                start_sample=np.array([s.start_sample for s in recorded]),
                valid_samples=np.array([s.valid_samples for s in recorded]),
                speech_probs=np.stack([s.speech_probs for s in recorded]).astype(np.float32),
                has_embedding=np.array([s.embedding is not None for s in recorded]),
                embeddings=np.stack([s.embedding if s.embedding is not None else np.zeros(dim, np.float32)
                                     for s in recorded]).astype(np.float32),
                embedding_speech_s=np.array([s.embedding_speech_s for s in recorded]),
            )
            (out / f"{entry['id']}.json").write_text(json.dumps({"live": row["live"], "final": row["final"],
                                                                 "config": config_path}))
            print(f"{entry['id']}: {len(recorded)} steps, live DER {100 * row['live']['der']:.1f} %", flush=True)
    finally:
        OnlineDiarizer.push = original_push
        runtime.close()


def load_steps(path: Path) -> list[StepAnalysis]:
    data = np.load(path)
    return [StepAnalysis(int(data["step_index"][i]), int(data["start_sample"][i]), int(data["valid_samples"][i]),
                         data["speech_probs"][i], data["embeddings"][i] if data["has_embedding"][i] else None,
                         float(data["embedding_speech_s"][i]))
            for i in range(len(data["step_index"]))]


class _Replayed:
    """The clustering's answers of an earlier replay with the same clustering settings, in order: what the
    diarizer asks of its clustering does not depend on its own settings when the runtime measured each
    window's speech (``embedding_speech_s`` >= 0), so only the cheap turn logic runs again."""

    def __init__(self, answers: list[tuple[int | None, int]]) -> None:
        self._answers = iter(answers)
        self.num_speakers = 0

    def assign(self, embedding: np.ndarray, speech_ratio: float) -> int | None:
        label, self.num_speakers = next(self._answers)
        return label


_ANSWERS: dict[tuple, list[tuple[int | None, int]]] = {}


def replay(steps: list[StepAnalysis], config: DiarizationConfig,
           key: str = "") -> tuple[list[tuple[int, int, int]], dict[str, list[float]]]:
    """The live timeline's closed turns (start_sample, end_sample, speaker), as the session core collects them,
    and the decision delays: audio seconds from each turn's start / end to the end of the step whose analysis
    reports it (the algorithmic part of the label and turn-end latency; the server adds its processing)."""
    diarizer = OnlineDiarizer(config)
    memo = (key, config.clustering)
    measured = all(s.embedding is None or s.embedding_speech_s >= 0 for s in steps)
    if measured and memo in _ANSWERS:
        diarizer.clustering = _Replayed(_ANSWERS[memo])
    elif measured:
        clustering, answers = diarizer.clustering, []
        original = clustering.assign

        def recording(embedding, speech_ratio):
            label = original(embedding, speech_ratio)
            answers.append((label, clustering.num_speakers))
            return label

        clustering.assign = recording
        _ANSWERS[memo] = answers
    segments = []
    delays: dict[str, list[float]] = {"start": [], "end": []}

    def collect(events, step_end: int | None) -> None:
        for event in events:
            if isinstance(event, SegmentClosed):
                segments.append((event.start_sample, event.end_sample, event.speaker))
            elif step_end is not None and isinstance(event, SpeakerStarted | SpeakerStopped):
                kind = "start" if isinstance(event, SpeakerStarted) else "end"
                delays[kind].append((step_end - event.sample) / config.sample_rate_hz)

    for step in steps:
        collect(diarizer.push(step), step.start_sample + config.step_samples)
    collect(diarizer.finish(), None)
    return segments, delays


def configured(base: DiarizationConfig, settings: dict[str, Any]) -> DiarizationConfig:
    top = {k: v for k, v in settings.items() if not k.startswith("clustering.")}
    clus = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("clustering.")}
    return replace(base, **top, clustering=replace(base.clustering, **clus))


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def score(meetings: Path, ids: list[str], timelines: dict[str, list], rate_hz: int) -> dict[str, Any]:
    from rtsep.diarize.timeline import annotation_from_segments
    from rtsep.evaluate import read_rttm, score_diarization

    pairs = []
    for mid in ids:
        reference = next(iter(read_rttm(meetings / mid / "ref.rttm").values()))
        hyp = annotation_from_segments([(s / rate_hz, e / rate_hz, speaker_name(k)) for s, e, k in timelines[mid]],
                                       mid)
        pairs.append((mid, reference, hyp))
    return score_diarization(pairs)


def sweep(meetings: Path, cache: Path, sets: list[str], limit: int | None, base_path: str | None,
          out: Path | None) -> None:
    from rtsep.config import load_config

    base = load_config(base_path, env={}).pipeline.diarization
    index = json.loads((meetings / "index.json").read_text())
    ids = [m["id"] for m in index["meetings"][:limit]]
    steps = {mid: load_steps(cache / f"{mid}.npz") for mid in ids}
    recorded = {mid: json.loads((cache / f"{mid}.json").read_text())["live"] for mid in ids}
    grid = [(name, [_value(v) for v in values.split(",")]) for name, values in (s.split("=", 1) for s in sets)]
    names = [g[0] for g in grid]
    print("| " + " | ".join(names) + " | live DER pooled | missed | FA | confusion | live speakers (mean err) |"
          " start / end delay p95, end max (s) | replay - capture (base) |")
    print("|" + "---|" * (len(names) + 7))
    rows = []
    for combo in itertools.product(*[g[1] for g in grid]) if grid else [()]:
        settings = dict(zip(names, combo))
        config = configured(base, settings)
        replayed = {mid: replay(steps[mid], config, mid) for mid in ids}
        timelines = {mid: r[0] for mid, r in replayed.items()}
        start = [d for r in replayed.values() for d in r[1]["start"]]
        end = [d for r in replayed.values() for d in r[1]["end"]]
        delays = {"start_p95_s": round(float(np.percentile(start, 95)), 3) if start else None,
                  "end_p95_s": round(float(np.percentile(end, 95)), 3) if end else None,
                  "end_max_s": round(max(end), 3) if end else None}
        scored = score(meetings, ids, timelines, config.sample_rate_hz)
        total, files = scored["total"], scored["files"]
        check = "-"
        if not settings:
            check = f"{max(abs(f['der'] - recorded[f['file']]['der']) for f in files):.4f}"
        count_err = float(np.mean([f["speaker_count_error"] for f in files]))
        print(f"| {' | '.join(str(v) for v in combo)}{' | ' if combo else ''}{100 * total['der']:.1f} "
              f"| {100 * total['missed']:.1f} | {100 * total['false_alarm']:.1f} | {100 * total['confusion']:.1f} "
              f"| {np.mean([f['hyp_speakers'] for f in files]):.2f} ({count_err:+.2f}) "
              f"| {delays['start_p95_s']} / {delays['end_p95_s']}, {delays['end_max_s']} | {check} |", flush=True)
        rows.append({"settings": settings, "total": total, "files": files, "decision_delays": delays})
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("a") as f:
            for row in rows:
                f.write(json.dumps({"split": index["split"], "base": base_path, **row}) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.live_replay", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("capture", help="record the diarizer's input over a split")
    cap.add_argument("--meetings", required=True, type=Path)
    cap.add_argument("--out", required=True, type=Path)
    cap.add_argument("--config", help="a TOML config file (the runtime's settings must match the sweep's base)")
    cap.add_argument("--limit", type=int)
    sw = sub.add_parser("sweep", help="replay the live diarizer with settings over a captured split")
    sw.add_argument("--meetings", required=True, type=Path)
    sw.add_argument("--cache", required=True, type=Path)
    sw.add_argument("--set", action="append", default=[], help="NAME=V1,V2,... (repeatable; the grid's axes)")
    sw.add_argument("--config", help="a TOML config file for the base settings")
    sw.add_argument("--limit", type=int)
    sw.add_argument("--out", type=Path, help="append the rows as JSON lines here")
    args = parser.parse_args(argv)
    if args.command == "capture":
        capture(args.meetings, args.out, args.config, args.limit)
    else:
        sweep(args.meetings, args.cache, args.set, args.limit, args.config, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
