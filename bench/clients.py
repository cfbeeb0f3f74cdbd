"""N reference clients (rtsep_client.stream_file) in one process of their own, so that a bench's measurement and
its server are not sharing an event loop (and a core's time slices) with the clients it measures.

    python -m bench.clients --url ws://127.0.0.1:PORT/v1/stream --wav FILE --sessions 16 --out DIR --result R.json

Each client streams ``--wav`` paced at ``--speed`` (1.0: real time), offering ``--compression`` (none by
default). ``R.json``'s ``sessions`` hold one entry per session: its error (or null), whether the server reported
a dropped step (a ``gap`` event), and the percentiles of its frame, separated-frame and label latencies (the
reference client's measure); ``cpu_s``: the process's own CPU time (user + system) at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

from rtsep_client import stream_file

from bench.common import pct


def summary(values: list[float]) -> dict[str, float | int | None]:
    """count, p50 and p95 (seconds) of a list of latencies."""
    return {"count": len(values), "p50_s": pct(values, 50), "p95_s": pct(values, 95)}


def session_entry(result: Any) -> dict[str, Any]:
    """What the bench keeps of one client's StreamResult, or of the exception it ended with."""
    if isinstance(result, BaseException):
        return {"error": repr(result)}
    return {"error": None, "session_id": result.session_id,
            "dropped_a_step": any(e["type"] == "gap" for e in result.events),
            "frame_latency": summary(result.frame_latency_s),
            "source_frame_latency": summary(result.source_frame_latency_s),
            "label_latency": summary(result.label_latency_s)}


async def run_clients(url: str, wav: Path, sessions: int, out: Path, speed: float,
                      compression: str | None = None) -> list[dict[str, Any]]:
    results = await asyncio.gather(*(stream_file(wav, url, out / f"s{i}", speed=speed, compression=compression)
                                     for i in range(sessions)), return_exceptions=True)
    return [session_entry(r) for r in results]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True, help="the server's WebSocket endpoint")
    parser.add_argument("--wav", type=Path, required=True)
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for each session's tracks and timeline")
    parser.add_argument("--result", type=Path, required=True, help="the JSON list of the sessions' summaries")
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--compression", choices=["deflate"], default=None, help="offer permessage-deflate")
    args = parser.parse_args()
    entries = asyncio.run(run_clients(args.url, args.wav, args.sessions, args.out, args.speed, args.compression))
    times = os.times()
    args.result.write_text(json.dumps({"sessions": entries, "cpu_s": times.user + times.system}))


if __name__ == "__main__":
    main()
