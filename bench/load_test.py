"""Soak test: N concurrent sessions paced in real time for several minutes against one real server.
Reports dropped steps, frame/label latency per session, the server's memory over time, and the CPU time of the
server and of the clients per second of session audio. The clients run in a process of their own (bench.clients).

    python -m bench.load_test [--sessions 8] [--minutes 3] [--wav FILE --rttm FILE]
    python -m bench.load_test --replicas 2 [--separator none] ...   # replicas behind nginx, one PostgreSQL
    python -m bench.load_test ... [--config TOML] [--deflate]            # server settings; WebSocket deflate on
    python -m bench.load_test ... --speed 2 --overflow backpressure    # CPU per session-second, not real time

Bounded: each client streams a --minutes long recording (the pyannote sample, or --wav, repeated) and stops.
With ``--replicas N``, N ``rtsep serve --store postgresql://...`` replicas on one real PostgreSQL serve behind a
real nginx (round-robin, WebSocket upgrade; tests/replicas.py), and the clients connect to the proxy: the
capacity of N replicas, each session counted as held when it completed without a dropped step (no ``gap``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from bench.common import REPO, add_audio_args, audio_paths, cpu_seconds, machine_note, metric_value, rtsep_server


def server_toml(config: Path | None, deflate: bool, overflow: str = "drop") -> str:
    """The servers' TOML: ``config``'s tables (flat: strings, booleans, numbers) with ``[runtime] overflow`` (drop:
    a step the server cannot keep up with is dropped, and counted) and, with ``deflate``,
    ``[server] ws_per_message_deflate = true``."""
    import tomllib

    tables = tomllib.loads(config.read_text()) if config is not None else {}
    tables.setdefault("runtime", {})["overflow"] = overflow
    if deflate:  # (off is the server's default: left unsaid, so that older checkouts' servers accept the file)
        tables.setdefault("server", {})["ws_per_message_deflate"] = True

    def value(v: object) -> str:
        return json.dumps(v) if isinstance(v, (str, bool, int, float)) else repr(v)

    return "".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in table.items())
                   for name, table in tables.items())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(ws_url: str, wav: Path, n: int, out: Path, pids: list[int], compression: str | None = None,
         speed: float = 1.0) -> tuple[list[dict], list, dict]:
    """The N clients in their own process (bench.clients); meanwhile the servers' memory every 5 s; the CPU seconds
    of the servers over the run and of the clients' process. Returns (the sessions' summaries,
    memory samples, cpu)."""
    memory: list[tuple[float, float]] = []
    t0 = time.monotonic()

    def rss() -> float:  # of all the servers together
        return round(sum(rss_mib(pid) for pid in pids), 1)

    result = out / "clients.json"
    server_cpu0 = sum(cpu_seconds(pid) for pid in pids)
    clients = subprocess.Popen([sys.executable, "-m", "bench.clients", "--url", ws_url, "--wav", str(wav),
                                "--sessions", str(n), "--out", str(out / "clients"), "--result", str(result),
                                "--speed", str(speed),
                                *(["--compression", compression] if compression else [])],
                               cwd=REPO)
    while clients.poll() is None:
        memory.append((round(time.monotonic() - t0, 1), rss()))
        try:
            clients.wait(5)
        except subprocess.TimeoutExpired:
            pass
    wall_s = time.monotonic() - t0
    server_cpu = sum(cpu_seconds(pid) for pid in pids) - server_cpu0
    memory.append((round(wall_s, 1), rss()))
    if clients.returncode != 0:
        raise RuntimeError(f"bench.clients exited with {clients.returncode}")
    answer = json.loads(result.read_text())
    cpu = {"wall_s": round(wall_s, 1), "server_cpu_s": round(server_cpu, 1), "clients_cpu_s": round(answer["cpu_s"], 1)}
    return answer["sessions"], memory, cpu


def _behind_nginx(tmp_path: Path, args: argparse.Namespace, long_wav: Path) -> tuple[list, list, dict, str, list[str]]:
    """N replicas on one PostgreSQL behind nginx; returns (results, memory, cpu, metrics text, served-by upstreams)."""
    from tests.postgres import run_postgres
    from tests.replicas import run_nginx, start_replica, stop

    config = tmp_path / "bench.toml"
    config.write_text(server_toml(args.config, args.deflate, args.overflow))
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
                results, memory, cpu = soak(proxy.ws_url, long_wav, args.sessions, tmp_path,
                                            [r.proc.pid for r in replicas], "deflate" if args.deflate else None,
                                            args.speed)
                metrics = "\n".join(httpx.get(f"http://127.0.0.1:{r.port}/metrics").text for r in replicas)
                served_by = proxy.upstreams("/v1/stream")
        finally:
            for r in replicas:
                stop(r.proc)
    return results, memory, cpu, metrics, served_by


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
    parser.add_argument("--config", type=Path, default=None,
                        help="a TOML of server settings (flat tables) merged under the bench's own")
    parser.add_argument("--deflate", action="store_true",
                        help="WebSocket permessage-deflate on: the servers' [server] ws_per_message_deflate = true "
                             "and the clients offer it (the servers' default and the clients' is off)")
    parser.add_argument("--speed", type=float, default=1.0,
                        help="the clients' pace (1: real time); with --overflow backpressure and speed > 1, a CPU "
                             "cost per session-second that does not depend on keeping up (the servers' real-time "
                             "guard allows up to 4x)")
    parser.add_argument("--overflow", choices=["drop", "backpressure"], default="drop")
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
            results, memory, cpu, metrics, served_by = _behind_nginx(tmp_path, args, long_wav)
        else:
            extra = ["--separator", args.separator] if args.separator else []
            with rtsep_server(tmp_path / "data", "--max-sessions", str(args.sessions), *extra,
                              config_toml=server_toml(args.config, args.deflate, args.overflow),
                              server_cwd=args.server_cwd) as (base, proc):
                results, memory, cpu = soak(base.replace("http", "ws") + "/v1/stream", long_wav,
                                            args.sessions, tmp_path, [proc.pid], "deflate" if args.deflate else None,
                                            args.speed)
                metrics = httpx.get(base + "/metrics").text
    ok = [r for r in results if r["error"] is None]
    frame_p95 = [r["frame_latency"]["p95_s"] for r in ok if r["frame_latency"]["count"]]
    source_p95 = [r["source_frame_latency"]["p95_s"] for r in ok if r["source_frame_latency"]["count"]]
    label_p95 = [r["label_latency"]["p95_s"] for r in ok if r["label_latency"]["count"]]
    session_s = args.sessions * args.minutes * 60
    rss = [m for _, m in memory]
    warm = rss[len(rss) // 4:] if len(rss) >= 4 else rss
    held = [r for r in ok if not r["dropped_a_step"]]
    report = {
        "sessions": args.sessions, "minutes": args.minutes, "replicas": args.replicas, "separator": args.separator,
        "config": str(args.config) if args.config else None, "deflate": args.deflate,
        "speed": args.speed, "overflow": args.overflow,
        "completed": len(ok), "errors": [r["error"] for r in results if r["error"] is not None][:3],
        "held_without_a_dropped_step": len(held),
        "sessions_per_replica": {u: served_by.count(u) for u in sorted(set(served_by))},
        "dropped_steps": metric_value(metrics, "rtsep_dropped_frames_total"),
        "dropped_steps_by_path": {path: metric_value(metrics, f'rtsep_dropped_frames_total{{path="{path}"}}')
                                  for path in ("diarization", "separation", "input")},
        "separator_adaptations": metric_value(metrics, "rtsep_separator_adaptations_total"),
        "frame_p95_s_median": round(statistics.median(frame_p95), 3) if frame_p95 else None,
        "frame_p95_s_worst": round(max(frame_p95), 3) if frame_p95 else None,
        "source_frame_p95_s_median": round(statistics.median(source_p95), 3) if source_p95 else None,
        "source_frame_p95_s_worst": round(max(source_p95), 3) if source_p95 else None,
        "label_p95_s_median": round(statistics.median(label_p95), 3) if label_p95 else None,
        # CPU seconds per second of streamed session audio (the server's from the clients' start to their end, the
        # clients' process's in all): what one more session costs each side
        "server_cpu_s_per_session_s": round(cpu["server_cpu_s"] / session_s, 4),
        "clients_cpu_s_per_session_s": round(cpu["clients_cpu_s"] / session_s, 4),
        "cpu": cpu,
        "server_rss_mib_start_end_max": [rss[0], rss[-1], max(rss)],
        "server_rss_mib_growth_after_warmup": round(warm[-1] - warm[0], 1),
        "memory_samples": memory,
        "machine": note,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
