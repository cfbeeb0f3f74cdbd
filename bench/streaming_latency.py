"""Label latency and per-frame latency of a live session on loopback, and concurrent-session capacity.

    python -m bench.streaming_latency latency [--runs 3] [--speed 1.0] [--config TOML] [--server-cwd CHECKOUT]
                                              [--wav FILE --rttm FILE]
    python -m bench.streaming_latency capacity [--sessions 4 8 12 16] [--seconds 30] [--wav FILE --rttm FILE]

latency: a real `rtsep serve` and the reference client streaming the pyannote sample paced in real time
(20 ms frames). Label latency = arrival of a `speaker started` event minus the moment the client had sent
the audio at the event's time; turn-end latency = the same for a `speaker stopped` event (a live turn's end is
known only after the live hangover: the label of the frames after its last speech arrives then); frame latency =
arrival of a per-speaker audio frame minus the moment the client had sent its last sample, for every frame and
separately for the gated speaker tracks and for the separated sources (tracks announced with kind "source").
Medians over runs of the per-run p50/p95.

capacity: N clients stream the sample at once, paced in real time, against one server whose overflow
policy is `drop`; a level holds when no step was dropped and every session's frame latency p95 stays
under 1 s (i.e. nothing falls behind real time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import soundfile as sf
from rtsep_client import stream_file

from bench.common import add_audio_args, audio_paths, cpu_seconds, machine_note, metric_value, pct, rtsep_server


def _median(values) -> float | None:
    present = [v for v in values if v is not None]  # e.g. no source frames with --separator none
    return round(statistics.median(present), 3) if present else None


def latency(args: argparse.Namespace) -> dict:
    wav, _ = audio_paths(args)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        extra = ["--config", args.config] if args.config else []
        with rtsep_server(tmp_path / "data", *extra, server_cwd=args.server_cwd) as (base, _):
            for i in range(args.runs):
                result = asyncio.run(stream_file(wav, base.replace("http", "ws") + "/v1/stream",
                                                 tmp_path / f"run{i}", speed=args.speed))
                runs.append({
                    "label_p50_s": pct(result.label_latency_s, 50), "label_p95_s": pct(result.label_latency_s, 95),
                    "frame_p50_s": pct(result.frame_latency_s, 50), "frame_p95_s": pct(result.frame_latency_s, 95),
                    "speaker_frame_p50_s": pct(result.speaker_frame_latency_s, 50),
                    "speaker_frame_p95_s": pct(result.speaker_frame_latency_s, 95),
                    "source_frame_p50_s": pct(result.source_frame_latency_s, 50),
                    "source_frame_p95_s": pct(result.source_frame_latency_s, 95),
                    "turn_end_p50_s": pct(result.turn_end_latency_s, 50),
                    "turn_end_p95_s": pct(result.turn_end_latency_s, 95),
                    "labels": len(result.label_latency_s), "frames": len(result.frame_latency_s),
                    "source_frames": len(result.source_frame_latency_s),
                    "turn_ends": len(result.turn_end_latency_s),
                })
            metrics = httpx.get(base + "/metrics").text
    keys = ("label_p50_s", "label_p95_s", "frame_p50_s", "frame_p95_s", "speaker_frame_p50_s", "speaker_frame_p95_s",
            "source_frame_p50_s", "source_frame_p95_s", "turn_end_p50_s", "turn_end_p95_s")
    summary = {k: _median(r[k] for r in runs) for k in keys}
    summary["server_processing_latency_mean_s"] = round(
        metric_value(metrics, "rtsep_processing_latency_seconds_sum")
        / max(metric_value(metrics, "rtsep_processing_latency_seconds_count"), 1), 4)
    summary["server_rtf_gauge"] = round(metric_value(metrics, "rtsep_real_time_factor"), 4)
    return {"runs": runs, "median": summary, "speed": args.speed, "config": args.config,
            "server_cwd": str(args.server_cwd) if args.server_cwd else None}


async def _capacity_level(ws_url: str, wav: Path, n: int, out: Path, speed: float) -> list:
    tasks = [stream_file(wav, ws_url, out / f"s{n}-{i}", speed=speed) for i in range(n)]
    return await asyncio.gather(*tasks, return_exceptions=True)


def capacity(args: argparse.Namespace) -> dict:
    wav, _ = audio_paths(args)
    levels = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        audio, rate = sf.read(str(wav), dtype="float32")
        clip = tmp_path / "clip.wav"
        sf.write(str(clip), audio[: int(args.seconds * rate)], rate)
        toml = '[runtime]\noverflow = "drop"\n'
        if args.device:
            toml += f'device = "{args.device}"\n'
        for n in args.sessions:
            with rtsep_server(tmp_path / f"data{n}", "--max-sessions", str(n), config_toml=toml) as (base, proc):
                server_cpu0, client_cpu0, wall0 = cpu_seconds(proc.pid), time.process_time(), time.monotonic()
                results = asyncio.run(_capacity_level(base.replace("http", "ws") + "/v1/stream", clip, n,
                                                      tmp_path, 1.0))
                wall = time.monotonic() - wall0
                server_cpu = (cpu_seconds(proc.pid) - server_cpu0) / wall
                client_cpu = (time.process_time() - client_cpu0) / wall
                metrics = httpx.get(base + "/metrics").text
            errors = [repr(r) for r in results if isinstance(r, BaseException)]
            ok = [r for r in results if not isinstance(r, BaseException)]
            p95s = [pct(r.frame_latency_s, 95) for r in ok if r.frame_latency_s]
            source_p95s = [pct(r.source_frame_latency_s, 95) for r in ok if r.source_frame_latency_s]
            label_p95s = [pct(r.label_latency_s, 95) for r in ok if r.label_latency_s]
            dropped = metric_value(metrics, "rtsep_dropped_frames_total")
            level = {
                "sessions": n, "errors": errors[:3], "dropped_steps": dropped,
                "frame_p95_s_worst": round(max(p95s), 3) if p95s else None,
                "frame_p95_s_median": round(statistics.median(p95s), 3) if p95s else None,
                "source_frame_p95_s_worst": round(max(source_p95s), 3) if source_p95s else None,
                "source_frame_p95_s_median": round(statistics.median(source_p95s), 3) if source_p95s else None,
                "label_p95_s_median": round(statistics.median(label_p95s), 3) if label_p95s else None,
                "rtf_gauge": round(metric_value(metrics, "rtsep_real_time_factor"), 4),
                "server_cpu_cores": round(server_cpu, 2),  # CPU-seconds per second, all threads
                "clients_cpu_cores": round(client_cpu, 2),  # the bench's own clients, same machine
            }
            level["holds"] = not errors and dropped == 0 and bool(p95s) and max(p95s) < 1.0
            levels.append(level)
            print(json.dumps(level), file=sys.stderr)
    held = [lv["sessions"] for lv in levels if lv["holds"]]
    return {"levels": levels, "max_sessions_held": max(held) if held else 0, "seconds": args.seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--speed", type=float, default=1.0)
    p.add_argument("--config", help="TOML passed to rtsep serve --config")
    p.add_argument("--server-cwd", type=Path, default=None,
                   help="run the server from another checkout of rtsep, to compare versions side by side")
    add_audio_args(p)
    p = sub.add_parser("capacity")
    p.add_argument("--sessions", type=int, nargs="+", default=[4, 8, 12, 16])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--device", help="inference device of the server (cpu, cuda)")
    add_audio_args(p)
    args = parser.parse_args()
    note = machine_note()
    report = latency(args) if args.mode == "latency" else capacity(args)
    report["machine"] = note
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
