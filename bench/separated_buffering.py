"""How long a separated frame waits in rtsep's own buffers (chunking, rate conversion, the separator's step),
with the separator's computation taken as free: a CPU-independent floor under bench.streaming_latency's figure.

    python -m bench.separated_buffering [--step-s 0.1 0.02] [--frame-ms 20] [--seconds 30] [--late] [--soxr]

In one process, without a server: the real input machine (rtsep.stream.session.StreamSession, as the WebSocket
transport builds it from the configuration) and the real output machine (rtsep.stream.core.SessionCore) take the
pyannote sample in ``--frame-ms`` messages on a virtual clock, message k "sent" at k * frame (as the reference
client paces them); every separation due is answered at once with the input step itself as both sources. A
separated frame's wait = the virtual time it is released minus the time the client sent its last sample, the
measure of the reference client (rtsep_client.stream_file); ``first_sample_wait``: the same for the frame's
first sample (a listener waits this long for the start of each frame: the separator's step shows here). Runs
against whatever rtsep is on PYTHONPATH, so an older checkout can be measured by the same script
(``PYTHONPATH=OLD:OLD/clients/python``). The causes apart:
``--late`` gives the separator its input with the diarizer's steps only (as before SamplesReady), ``--soxr`` puts
soxr's stream converter back on the separator's path (as before the low-delay FIR).
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np
import soundfile as sf

from bench.common import machine_note, pct
from rtsep.stream.core import AudioOut, CoreConfig, SeparateDue, SeparatorLayout, SessionCore
from rtsep.stream.session import ChunkReady, StreamConfig, StreamSession


class _NoDiarizer:
    """The diarization path is not measured here: its steps stay in flight."""

    records: list = []
    embedding_labels: dict = {}

    def push(self, step):
        raise AssertionError("no diarization result is given")

    def finish(self):
        return []


def measure(audio: np.ndarray, rate: int, step_s: float, frame_ms: float, early: bool = True) -> dict:
    sep_rate, hop = 8000, 16  # the shipped Conv-TasNet's rate and hop; look-ahead one hop
    step_samples = max(hop, int(step_s * sep_rate + 1e-6) // hop * hop)
    layout = SeparatorLayout(sep_rate, step_samples, 2, hop)
    core = SessionCore(CoreConfig(session_id="bench", sample_rate_hz=16000, step_samples=4096, separator=layout),
                       _NoDiarizer())
    fields = {f.name for f in dataclasses.fields(StreamConfig)}
    extra = {"emit_samples": early} if "emit_samples" in fields else {}  # (an older rtsep has no such setting)
    stream = StreamSession(StreamConfig(model_sample_rate_hz=16000, step_samples=4096, **extra))
    stream.receive_text(json.dumps({"type": "start", "sample_rate": rate, "encoding": "pcm_f32le"}))
    frame = max(1, int(rate * frame_ms / 1000))
    sent_end, sent_at = [], []
    waits: list[float] = []
    first_waits: list[float] = []  # the same for the frame's first sample: what a listener waits for each sample
    for k, i in enumerate(range(0, audio.size, frame)):
        now = k * frame / rate  # message k is sent at its first sample's time, as the reference client does
        events = stream.receive_samples(audio[i:i + frame])
        sent_end.append(min(i + frame, audio.size))
        sent_at.append(now)
        out = []
        for event in events:
            if isinstance(event, ChunkReady):
                out += core.push_step(event, now)
            elif type(event).__name__ == "SamplesReady":
                out += core.push_samples(event.start_sample, event.samples)
        while out:
            event = out.pop(0)
            if isinstance(event, SeparateDue):
                sources = np.stack([event.samples, event.samples])
                out += core.separation_result(event.step_index, event.start_sample - layout.lookahead_samples,
                                              sources)
            elif isinstance(event, AudioOut) and event.track.startswith("source_0"):
                end = event.start_sample + event.samples.size  # at 16 kHz
                j = int(np.searchsorted(sent_end, int(np.ceil(end * rate / 16000))))
                first = int(np.searchsorted(sent_end, int(event.start_sample * rate / 16000) + 1))
                if j < len(sent_at):
                    waits.append(now - sent_at[j])
                    first_waits.append(now - sent_at[first])
    return {"step_s": step_samples / sep_rate, "frame_ms": frame_ms, "frames": len(waits),
            "wait_p50_s": round(pct(waits, 50), 4), "wait_p95_s": round(pct(waits, 95), 4),
            "wait_max_s": round(max(waits), 4), "first_sample_wait_p50_s": round(pct(first_waits, 50), 4),
            "first_sample_wait_p95_s": round(pct(first_waits, 95), 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--step-s", type=float, nargs="+", default=[0.1, 0.02])
    parser.add_argument("--frame-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--late", action="store_true", help="the separator hears the input with the steps only")
    parser.add_argument("--soxr", action="store_true", help="soxr's converter on the separator's path")
    args = parser.parse_args()
    if args.soxr:
        import rtsep.stream.core
        from rtsep.stream.resample import StreamResampler

        rtsep.stream.core.low_delay_resampler = StreamResampler  # what the core converted with before
    from rtsep.demo import sample_paths

    wav, _ = sample_paths()
    audio, rate = sf.read(str(wav), dtype="float32")
    audio = audio[: int(args.seconds * rate)]
    rows = [measure(audio, rate, step_s, args.frame_ms, early=not args.late) for step_s in args.step_s]
    print(json.dumps({"rows": rows, "late": args.late, "soxr": args.soxr, "machine": machine_note()}, indent=1))


if __name__ == "__main__":
    main()
