"""Event-loop lag of a loaded server, seen from outside: /healthz response times while N sessions stream.

    python -m bench.loop_lag [--sessions 8] [--seconds 30] [--separator none] [--server-cwd DIR] [--wav F --rttm F]

A real `rtsep serve` (with a --data-dir, so the session store is written) and N reference clients, in one child
process, streaming the recording's first ``--seconds`` paced in real time. Meanwhile this process requests
/healthz every ``--poll-ms`` on one kept-alive connection and records each response time. /healthz does no work,
so its response time is the time the request waited for the server's event loop: a proxy for the loop's lag. The
same is recorded for a few seconds before the sessions start (idle baseline).

The server is started only through its CLI and reached only over HTTP and WebSocket, so ``--server-cwd`` can
point at another checkout of rtsep (an older commit) and the same measurement compares the two versions.
``--separator default`` leaves the server's separator at its default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import soundfile as sf

from bench.common import REPO, add_audio_args, audio_paths, cpu_seconds, machine_note, pct, rtsep_server


def poll_healthz(client: httpx.Client, url: str, period_s: float, until) -> tuple[list[float], list[float], int]:
    """GET ``url`` every ``period_s`` (a fixed schedule) while ``until()`` is false.

    Returns (response times, when each request was sent in seconds from the first, failures)."""
    times_s, sent_s, failures = [], [], 0
    first_s = next_s = time.perf_counter()
    while not until():
        start_s = time.perf_counter()
        try:
            if client.get(url).status_code == 200:
                times_s.append(time.perf_counter() - start_s)
                sent_s.append(start_s - first_s)
            else:
                failures += 1
        except httpx.HTTPError:
            failures += 1
        next_s += period_s
        time.sleep(max(0.0, next_s - time.perf_counter()))
    return times_s, sent_s, failures


def summary(times_s: list[float], sent_s: list[float]) -> dict:
    def ms(value: float | None) -> float | None:
        return round(value * 1000, 2) if value is not None else None

    return {"n": len(times_s), "p50_ms": ms(pct(times_s, 50)), "p95_ms": ms(pct(times_s, 95)),
            "p99_ms": ms(pct(times_s, 99)), "max_ms": ms(max(times_s) if times_s else None),
            # the 3 slowest: (seconds from the phase's start, response ms), to place stalls in a session's life
            "slowest": [(round(sent_s[i], 2), ms(times_s[i])) for i in sorted(range(len(times_s)),
                                                                         key=times_s.__getitem__)[-3:]]}


def measure(args: argparse.Namespace) -> dict:
    wav, _ = audio_paths(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        audio, rate = sf.read(str(wav), dtype="float32")
        clip = tmp_path / "clip.wav"
        sf.write(str(clip), audio[: int(args.seconds * rate)], rate)
        extra = ["--max-sessions", str(args.sessions)]
        if args.separator != "default":
            extra += ["--separator", args.separator]
        with rtsep_server(tmp_path / "data", *extra, server_cwd=args.server_cwd) as (base, proc), \
                httpx.Client(timeout=10) as client:
            url = base + "/healthz"
            idle_end_s = time.monotonic() + args.idle_s
            period_s = args.poll_ms / 1000
            idle, idle_sent, idle_failures = poll_healthz(client, url, period_s, lambda: time.monotonic() > idle_end_s)
            path = [str(REPO), str(REPO / "clients" / "python")]
            clients = subprocess.Popen(
                [sys.executable, "-m", "bench.loop_lag", "_clients", "--url", base.replace("http", "ws") + "/v1/stream",
                 "--wav", str(clip), "--sessions", str(args.sessions), "--out", str(tmp_path / "out")],
                cwd=REPO, stdout=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(path)})
            cpu0_s, wall0_s = cpu_seconds(proc.pid), time.monotonic()
            done = lambda: clients.poll() is not None  # noqa: E731
            loaded, loaded_sent, loaded_failures = poll_healthz(client, url, period_s, done)
            server_cores = (cpu_seconds(proc.pid) - cpu0_s) / (time.monotonic() - wall0_s)
            out, _ = clients.communicate()
            if clients.returncode != 0:
                raise RuntimeError(f"the clients' process exited {clients.returncode}")
            sessions = json.loads(out)
    return {
        "idle": summary(idle, idle_sent), "loaded": summary(loaded, loaded_sent),
        "failures": idle_failures + loaded_failures,
        "server_cpu_cores": round(server_cores, 2), "sessions": sessions,
        "options": {"sessions": args.sessions, "seconds": args.seconds, "separator": args.separator,
                    "poll_ms": args.poll_ms, "server_cwd": str(args.server_cwd or REPO)},
    }


async def _stream_all(url: str, wav: Path, n: int, out: Path) -> list:
    from rtsep_client import stream_file

    tasks = [stream_file(wav, url, out / f"s{i}", speed=1.0) for i in range(n)]
    return await asyncio.gather(*tasks, return_exceptions=True)


def clients_main(args: argparse.Namespace) -> None:
    """The child process: N clients at once; prints their errors and worst latency p95s as one JSON line."""
    results = asyncio.run(_stream_all(args.url, args.wav, args.sessions, args.out))
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]

    def worst_p95(values_s: list[list[float]]) -> float | None:  # no frames with --separator none
        p95s = [pct(v, 95) for v in values_s if v]
        return round(max(p95s), 3) if p95s else None

    print(json.dumps({"completed": len(ok), "errors": errors[:3],
                      "frame_p95_s_worst": worst_p95([r.frame_latency_s for r in ok]),
                      "label_p95_s_worst": worst_p95([r.label_latency_s for r in ok])}))


def main() -> None:
    if sys.argv[1:2] == ["_clients"]:
        p = argparse.ArgumentParser()
        p.add_argument("_clients")
        p.add_argument("--url", required=True)
        p.add_argument("--wav", type=Path, required=True)
        p.add_argument("--sessions", type=int, required=True)
        p.add_argument("--out", type=Path, required=True)
        clients_main(p.parse_args())
        return
    p = argparse.ArgumentParser()
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--seconds", type=float, default=30.0, help="length of each session (from the recording's start)")
    p.add_argument("--separator", default="none", help="the server's --separator; 'default' leaves it unset")
    p.add_argument("--server-cwd", type=Path, help="a checkout of rtsep to run the server from (default: this one)")
    p.add_argument("--poll-ms", type=float, default=50.0)
    p.add_argument("--idle-s", type=float, default=3.0, help="seconds of polling before the sessions start")
    add_audio_args(p)
    args = p.parse_args()
    note = machine_note()
    report = measure(args)
    report["machine"] = note
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
