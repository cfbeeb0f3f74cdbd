"""Malformed input against a real `rtsep serve`: every bad session must be closed with a clear code and a
JSON error, the server must not crash, and good sessions streaming at the same time must be unaffected.

    python -m bench.fuzz_server [--count 10000] [--concurrency 24] [--seed 0] [--wav FILE --rttm FILE]

Bounded: it stops after --count malformed sessions (loopback only).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import websockets
from rtsep_client import stream_file

from bench.common import add_audio_args, audio_paths, machine_note, rtsep_server

EXPECTED = {4400, 1009}


def malformed(rng: random.Random) -> list[str | bytes]:
    """One malformed session: a list of messages that must end in an error close."""
    start = {"type": "start", "sample_rate": 16000}
    kind = rng.randrange(12)
    junk = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
    if kind == 0:
        return [junk.decode("latin-1")]  # not JSON
    if kind == 1:
        return [json.dumps(rng.choice([[], 1, "x", None, {"type": 5}, {"no": "type"}]))]
    if kind == 2:
        return [json.dumps({"type": rng.choice(["hello", "START", "stop", "ready", ""])})]
    if kind == 3:
        return [junk + b"\x00"]  # audio before start
    if kind == 4:
        return [json.dumps({**start, "sample_rate": rng.choice([0, -1, 7999, 48001, 10**9, 2.5, "16k", True])})]
    if kind == 5:
        return [json.dumps({**start, "encoding": rng.choice(["mp3", "pcm_s24le", 1, None, ""])})]
    if kind == 6:
        return [json.dumps({**start, "channels": rng.choice([0, 3, 8, -1, "2"])})]
    if kind == 7:
        return [json.dumps({**start, rng.choice(["rate", "Sample_rate", "x"]): 1})]
    if kind == 8:  # odd number of bytes: not whole samples
        return [json.dumps(start), bytes(2 * rng.randrange(0, 100) + 1)]
    if kind == 9:  # NaN in float audio
        return [json.dumps({**start, "encoding": "pcm_f32le"}), np.array([0.1, np.nan], "<f4").tobytes()]
    if kind == 10:  # a second start, or stop twice
        return [json.dumps(start), rng.choice([json.dumps(start), '{"type":"stop","x":1}'])]
    return [json.dumps(start), bytes((1 << 20) + 2 * rng.randrange(1, 1000))]  # too big


async def one(url: str, messages: list, stats: collections.Counter, codes: collections.Counter) -> None:
    try:
        async with websockets.connect(url, open_timeout=30, max_size=None) as ws:
            saw_error = False
            try:
                for m in messages:
                    await ws.send(m)
                while True:
                    reply = await asyncio.wait_for(ws.recv(), 30)
                    if isinstance(reply, str) and json.loads(reply).get("type") == "error":
                        saw_error = True
            except websockets.ConnectionClosed:
                pass
            code = ws.close_code
            codes[code] += 1
            stats["clear" if code in EXPECTED and saw_error else "unclear"] += 1
    except Exception as exc:  # noqa: BLE001 - counted, the run goes on
        stats["client_exception"] += 1
        codes[type(exc).__name__] += 1


async def run(url: str, count: int, concurrency: int, seed: int, good_wav: Path, out: Path) -> dict:
    baseline = await stream_file(good_wav, url, out / "baseline", speed=0)  # the same file, no load
    rng = random.Random(seed)
    stats: collections.Counter = collections.Counter()
    codes: collections.Counter = collections.Counter()
    good = [asyncio.create_task(stream_file(good_wav, url, out / f"good{i}", speed=1.0)) for i in range(2)]
    queue: asyncio.Queue = asyncio.Queue()
    for _ in range(count):
        queue.put_nowait(malformed(rng))

    async def worker() -> None:
        while not queue.empty():
            await one(url, queue.get_nowait(), stats, codes)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    fuzz_s = time.monotonic() - started
    results = await asyncio.gather(*good, return_exceptions=True)
    # deterministic pipeline: a good session under fuzzing must give exactly the unloaded timeline
    good_ok = [r for r in results if not isinstance(r, BaseException)
               and r.timeline["segments"] == baseline.timeline["segments"]]
    return {"malformed_sessions": count, "clear_closes": stats["clear"], "unclear": stats["unclear"],
            "client_exceptions": stats["client_exception"], "close_codes": {str(k): v for k, v in codes.items()},
            "fuzz_seconds": round(fuzz_s, 1), "good_sessions_identical_to_unloaded_run": f"{len(good_ok)}/{len(good)}",
            "good_session_errors": [repr(r) for r in results if isinstance(r, BaseException)]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    add_audio_args(parser)
    args = parser.parse_args()
    note = machine_note()
    wav, _ = audio_paths(args)
    with tempfile.TemporaryDirectory() as tmp:
        with rtsep_server(Path(tmp) / "data", "--max-sessions", str(args.concurrency + 4)) as (base, proc):
            report = asyncio.run(run(base.replace("http", "ws") + "/v1/stream", args.count, args.concurrency,
                                     args.seed, wav, Path(tmp)))
            report["server_alive"] = proc.poll() is None
            report["healthz"] = httpx.get(base + "/healthz").json()["status"]
    report["machine"] = note
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
