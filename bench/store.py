"""The store: write latency and event-loop lag with SQLite vs PostgreSQL, and failover time of replicas.

    python -m bench.store latency [--sessions 8] [--seconds 20] [--paths writer loop]
    python -m bench.store failover [--leases 2s 10s] [--runs 3]

``latency``: N simulated live sessions write what a session writes (one track chunk per diarization step,
a live segment every 2 s, the session info when a speaker appears), paced at real time, on one asyncio event
loop, by one of two paths:

- ``writer`` (the product path): through :class:`~rtsep.store.writer.StoreWriter`, as the session driver does:
  the loop queues each write (``on_loop``: how long the loop spends on it), the writer's thread performs it
  (``in_thread``), and the commit is confirmed back on the loop (``to_commit``: from queueing to that
  confirmation, which is what a ``segment`` or ``stored`` acknowledgement waits for);
- ``loop`` (before issue 17, for comparison): each store call made synchronously on the event loop.

A probe task measures the event loop's lag (how late a 10 ms sleep wakes up). SQLite + files in a temp dir;
PostgreSQL started by initdb + pg_ctl in a temp dir (tests/postgres.py), on the same machine, over TCP on
loopback.

``failover``: a real PostgreSQL and two `rtsep serve --separator none` replicas; a session streams into one,
which is killed with -9; the time from the kill to the survivor answering the session's status as
``interrupted`` (polled every 50 ms over HTTP) is measured, for each lease length.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.common import machine_note
from rtsep.config import parse_duration_s
from rtsep.diarize.online import DiarizationConfig
from rtsep.sessions import hash_token
from rtsep.store.base import SessionInfo, SessionStore
from rtsep.store.writer import StoreWriter


def _percentiles_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.asarray(values) * 1000
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p95_ms": round(float(np.percentile(a, 95)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "max_ms": round(float(a.max()), 3)}


class _Timings:
    """What one run measured: per kind of write, and per stage of the writer path."""

    def __init__(self) -> None:
        self.kinds: dict[str, list[float]] = {"create": [], "track": [], "segment": [], "update": []}
        self.on_loop: list[float] = []
        self.in_thread: list[float] = []
        self.to_commit: list[float] = []
        self.failures: list[str] = []


async def _session(store: SessionStore, k: int, seconds: float, t: _Timings, writer: StoreWriter | None) -> None:
    config = DiarizationConfig()
    step, rate = config.step_samples, config.sample_rate_hz
    info = SessionInfo(f"bench{k:03d}{os.getpid()}", hash_token("t"), time.time(), "live", "websocket", 48000, rate)

    async def timed(kind, call, *args):
        t0 = time.perf_counter()
        if writer is None:  # on the loop
            call(*args)
            t.kinds[kind].append(time.perf_counter() - t0)
            return

        def op():
            t1 = time.perf_counter()
            call(*args)
            t.in_thread.append(time.perf_counter() - t1)

        def committed():
            t.to_commit.append(time.perf_counter() - t0)
            t.kinds[kind].append(time.perf_counter() - t0)

        await writer.submit(op, lambda error: t.failures.append(error.message), committed)
        t.on_loop.append(time.perf_counter() - t0)

    await timed("create", store.create, info)
    if writer is not None:
        await writer.flush()  # the session exists before its first write, as SessionManager.open makes sure
    loop = asyncio.get_running_loop()
    start = loop.time() + k * config.step_s / 8  # sessions out of phase, as real ones are
    chunk = (0.1 * np.sin(np.arange(step) / 7)).astype(np.float32)
    for i in range(int(seconds / config.step_s)):
        await asyncio.sleep(max(0.0, start + (i + 1) * config.step_s - loop.time()))
        await timed("track", store.write_track, info.session_id, f"SPEAKER_{i // 40 % 2:02d}", i * step, chunk)
        if i % 8 == 7:
            await timed("segment", store.append_live_segment, info.session_id, "SPEAKER_00",
                        (i - 7) * config.step_s, i * config.step_s)
        if i in (1, 40):
            info.speakers.append(f"SPEAKER_{len(info.speakers):02d}")
            await timed("update", store.update, dataclasses.replace(info, speakers=list(info.speakers)))
    info.state, info.ended_at = "done", time.time()
    await timed("update", store.update, dataclasses.replace(info, speakers=list(info.speakers)))
    if writer is None:
        store.close_session(info.session_id)
    else:
        await writer.call(lambda: store.close_session(info.session_id))


async def _run_sessions(store: SessionStore, sessions: int, seconds: float, path: str) -> dict:
    t = _Timings()
    writer = StoreWriter() if path == "writer" else None  # as the server makes it
    lags: list[float] = []
    done = asyncio.Event()

    async def probe():
        loop = asyncio.get_running_loop()
        while not done.is_set():
            t0 = loop.time()
            await asyncio.sleep(0.01)
            lags.append(max(0.0, loop.time() - t0 - 0.01))

    prober = asyncio.create_task(probe())
    try:
        await asyncio.gather(*(_session(store, k, seconds, t, writer) for k in range(sessions)))
    finally:
        done.set()
        await prober
        if writer is not None:
            await asyncio.to_thread(writer.close)
    if t.failures:
        raise RuntimeError(f"{len(t.failures)} store write(s) failed, e.g. {t.failures[0]}")
    writes = t.kinds["track"] + t.kinds["segment"] + t.kinds["update"]
    report = {"path": path, "writes": _percentiles_ms(writes), **{k: _percentiles_ms(v) for k, v in t.kinds.items()},
              "event_loop_lag": _percentiles_ms(lags)}
    if writer is not None:
        report |= {"on_loop": _percentiles_ms(t.on_loop), "in_thread": _percentiles_ms(t.in_thread),
                   "to_commit": _percentiles_ms(t.to_commit)}
    return report


def cmd_latency(args: argparse.Namespace) -> dict:
    from rtsep.store.postgres import PostgresSessionStore
    from rtsep.store.sqlite import SqliteSessionStore
    from tests.postgres import run_postgres

    report = {"machine": machine_note(), "sessions": args.sessions, "seconds": args.seconds, "runs": []}
    with run_postgres() as pg:
        for repeat in range(args.repeats):
            for path in args.paths:  # side by side: the machine's load changes between runs
                with tempfile.TemporaryDirectory() as folder:
                    store = SqliteSessionStore(Path(folder) / "data")
                    result = asyncio.run(_run_sessions(store, args.sessions, args.seconds, path))
                    store.close()
                report["runs"].append({"backend": "sqlite", "repeat": repeat, **result})
                print(json.dumps(_brief(report["runs"][-1])), file=sys.stderr, flush=True)
                store = PostgresSessionStore(pg.create_database(f"bench_{path}_{repeat}"), replica_id="bench")
                result = asyncio.run(_run_sessions(store, args.sessions, args.seconds, path))
                store.close()
                report["runs"].append({"backend": "postgresql", "repeat": repeat, **result})
                print(json.dumps(_brief(report["runs"][-1])), file=sys.stderr, flush=True)
    report["machine_after"] = machine_note()
    return report


def _brief(run: dict) -> dict:
    keys = ("writes", "to_commit", "on_loop", "in_thread", "event_loop_lag")
    return {"backend": run["backend"], "path": run["path"], "repeat": run["repeat"],
            **{k: {q: run[k][q] for q in ("p50_ms", "p95_ms", "max_ms")} for k in keys if k in run}}


def _stream_then_kill(ws_url: str, victim, seconds: float = 6.0) -> dict:
    import websockets

    async def go() -> dict:
        async with websockets.connect(ws_url) as ws:
            await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
            ready = json.loads(await ws.recv())
            tone = (3000 * np.sin(np.arange(int(seconds * 16000)) * 0.05)).astype("<i2")
            await ws.send(tone.tobytes())
            while True:  # until the server has processed some of it
                message = await asyncio.wait_for(ws.recv(), 60)
                if isinstance(message, str) and json.loads(message)["type"] == "stats":
                    break
            ready["killed_at"] = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            return ready

    return asyncio.run(go())


def cmd_failover(args: argparse.Namespace) -> dict:
    from tests.postgres import run_postgres
    from tests.replicas import start_replica, stop

    report = {"machine": machine_note(), "runs": []}
    with run_postgres() as pg, tempfile.TemporaryDirectory() as folder:
        url = pg.create_database("failover")
        for lease in args.leases:
            flags = ("--separator", "none", "--lease", lease)
            survivor = start_replica(Path(folder), url, f"survivor-{lease}", *flags)
            try:
                for run in range(args.runs):
                    victim = start_replica(Path(folder), url, f"victim-{lease}-{run}", *flags)
                    try:
                        ready = _stream_then_kill(f"ws://127.0.0.1:{victim.port}/v1/stream", victim.proc)
                        victim.proc.wait(30)
                        auth = {"Authorization": f"Bearer {ready['token']}"}
                        status_url = f"http://127.0.0.1:{survivor.port}/v1/sessions/{ready['session_id']}"
                        while httpx.get(status_url, headers=auth, timeout=5).json()["state"] != "interrupted":
                            if time.monotonic() - ready["killed_at"] > 3 * parse_duration_s(lease) + 30:
                                raise RuntimeError("the survivor never marked the session interrupted")
                            time.sleep(0.05)
                        seconds = time.monotonic() - ready["killed_at"]
                    finally:
                        stop(victim.proc)
                    report["runs"].append({"lease": lease, "run": run, "kill_to_interrupted_s": round(seconds, 2)})
                    print(json.dumps(report["runs"][-1]), file=sys.stderr, flush=True)
            finally:
                stop(survivor.proc)
    by_lease = {}
    for lease in args.leases:
        values = [r["kill_to_interrupted_s"] for r in report["runs"] if r["lease"] == lease]
        by_lease[lease] = {"median_s": float(np.median(values)), "min_s": min(values), "max_s": max(values)}
    report["summary"] = by_lease
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("latency")
    p.add_argument("--sessions", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0, help="of simulated audio per session, paced 1x")
    p.add_argument("--paths", nargs="+", choices=["writer", "loop"], default=["writer", "loop"])
    p.add_argument("--repeats", type=int, default=1)
    p.set_defaults(func=cmd_latency)
    p = sub.add_parser("failover")
    p.add_argument("--leases", nargs="+", default=["2s", "10s"])
    p.add_argument("--runs", type=int, default=3)
    p.set_defaults(func=cmd_failover)
    args = parser.parse_args()
    print(json.dumps(args.func(args), indent=1))


if __name__ == "__main__":
    main()
