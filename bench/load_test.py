"""Soak test: N concurrent sessions paced in real time for several minutes against one real server.
Reports dropped steps, frame/label latency per session, and the server's memory over time.

    python -m bench.load_test [--sessions 8] [--minutes 3] [--wav FILE --rttm FILE]
    python -m bench.load_test --replicas 2 [--separator none] ...   # replicas behind nginx, one PostgreSQL

Bounded: each client streams a --minutes long recording (the pyannote sample, or --wav, repeated) and stops.
With ``--replicas N``, N ``rtsep serve --store postgresql://...`` replicas on one real PostgreSQL serve behind a
real nginx (round-robin, WebSocket upgrade; tests/replicas.py), and the clients connect to the proxy: the
capacity of N replicas, each session counted as held when it completed without a dropped step (no ``gap``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from rtsep_client import stream_file

from bench.common import add_audio_args, audio_paths, machine_note, metric_value, pct, rtsep_server

CONFIG_TOML = '[runtime]\noverflow = "drop"\n'  # a step the server cannot keep up with is dropped, and counted


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def soak(ws_url: str, wav: Path, n: int, out: Path, pids: list[int]) -> tuple[list, list]:
    memory: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def rss() -> float:  # of all the servers together
        return round(sum(rss_mib(pid) for pid in pids), 1)

    async def sample_memory() -> None:
        while True:
            memory.append((round(time.monotonic() - t0, 1), rss()))
            await asyncio.sleep(5)

    sampler = asyncio.create_task(sample_memory())
    results = await asyncio.gather(*(stream_file(wav, ws_url, out / f"s{i}", speed=1.0) for i in range(n)),
                                   return_exceptions=True)
    sampler.cancel()
    memory.append((round(time.monotonic() - t0, 1), rss()))
    return results, memory


def _behind_nginx(tmp_path: Path, args: argparse.Namespace, long_wav: Path) -> tuple[list, list, str, list[str]]:
    """N replicas on one PostgreSQL behind nginx; returns (results, memory, metrics text, served-by upstreams)."""
    from tests.postgres import run_postgres
    from tests.replicas import run_nginx, start_replica, stop

    config = tmp_path / "bench.toml"
    config.write_text(CONFIG_TOML)
    flags = ["--config", str(config), "--max-sessions", str(args.sessions)]
    if args.separator:
        flags += ["--separator", args.separator]
    with run_postgres() as pg:
        url = pg.create_database("load")
        replicas = []
        try:
            for k in range(args.replicas):
                replicas.append(start_replica(tmp_path / "replicas", url, f"r{k}", *flags))
            with run_nginx(tmp_path, [r.port for r in replicas]) as proxy:
                results, memory = asyncio.run(soak(proxy.ws_url, long_wav, args.sessions, tmp_path,
                                                   [r.proc.pid for r in replicas]))
                metrics = "\n".join(httpx.get(f"http://127.0.0.1:{r.port}/metrics").text for r in replicas)
                served_by = proxy.upstreams("/v1/stream")
        finally:
            for r in replicas:
                stop(r.proc)
    return results, memory, metrics, served_by


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--replicas", type=int, default=0,
                        help="0: one server on its SQLite data dir (no proxy); N >= 1: N replicas on one "
                             "PostgreSQL behind nginx")
    parser.add_argument("--separator", default=None, help="the servers' --separator (default: theirs)")
    parser.add_argument("--server-cwd", type=Path, default=None,
                        help="without --replicas: run the server from another checkout of rtsep, to compare versions")
    add_audio_args(parser)
    args = parser.parse_args()
    note = machine_note()
    sample, _ = audio_paths(args)
    audio, rate = sf.read(str(sample), dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        long_wav = tmp_path / "long.wav"
        repeats = int(np.ceil(args.minutes * 60 / (audio.size / rate)))
        sf.write(str(long_wav), np.tile(audio, repeats)[: int(args.minutes * 60 * rate)], rate)
        served_by: list[str] = []
        if args.replicas >= 1:
            results, memory, metrics, served_by = _behind_nginx(tmp_path, args, long_wav)
        else:
            extra = ["--separator", args.separator] if args.separator else []
            with rtsep_server(tmp_path / "data", "--max-sessions", str(args.sessions), *extra,
                              config_toml=CONFIG_TOML, server_cwd=args.server_cwd) as (base, proc):
                results, memory = asyncio.run(soak(base.replace("http", "ws") + "/v1/stream", long_wav,
                                                   args.sessions, tmp_path, [proc.pid]))
                metrics = httpx.get(base + "/metrics").text
    ok = [r for r in results if not isinstance(r, BaseException)]
    frame_p95 = [pct(r.frame_latency_s, 95) for r in ok if r.frame_latency_s]
    source_p95 = [pct(r.source_frame_latency_s, 95) for r in ok if r.source_frame_latency_s]
    label_p95 = [pct(r.label_latency_s, 95) for r in ok if r.label_latency_s]
    rss = [m for _, m in memory]
    warm = rss[len(rss) // 4:] if len(rss) >= 4 else rss
    held = [r for r in ok if not any(e["type"] == "gap" for e in r.events)]
    report = {
        "sessions": args.sessions, "minutes": args.minutes, "replicas": args.replicas, "separator": args.separator,
        "completed": len(ok), "errors": [repr(r) for r in results if isinstance(r, BaseException)][:3],
        "held_without_a_dropped_step": len(held),
        "sessions_per_replica": {u: served_by.count(u) for u in sorted(set(served_by))},
        "dropped_steps": metric_value(metrics, "rtsep_dropped_frames_total"),
        "frame_p95_s_median": round(statistics.median(frame_p95), 3) if frame_p95 else None,
        "frame_p95_s_worst": round(max(frame_p95), 3) if frame_p95 else None,
        "source_frame_p95_s_median": round(statistics.median(source_p95), 3) if source_p95 else None,
        "source_frame_p95_s_worst": round(max(source_p95), 3) if source_p95 else None,
        "label_p95_s_median": round(statistics.median(label_p95), 3) if label_p95 else None,
        "server_rss_mib_start_end_max": [rss[0], rss[-1], max(rss)],
        "server_rss_mib_growth_after_warmup": round(warm[-1] - warm[0], 1),
        "memory_samples": memory,
        "machine": note,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
