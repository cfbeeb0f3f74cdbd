"""``--denoise`` (DeepFilterNet3, rtsep.enhance.deepfilter): what it costs and what it buys, on noisy meetings of
real voices.

    python -m bench.denoise [--meetings 3] [--seconds 40] [--snrs clean,20,10,5,0] [--split valid] [--out FILE]
    python -m bench.denoise --cost-only [--meetings 3]     # the denoiser's RTF (wall and CPU) and latency only

* Meetings: 3 talkers of one split of the real-voice corpus (/work/runs/real/corpus, training/corpus.py; 8 kHz
  recordings brought to the session's 16 kHz), turns of 3..8 s (whole utterances, 0.1..0.4 s apart), pauses of
  0.3..1 s between turns, about one turn in three starting before the previous one ends (overlap), per-talker
  levels within ±4 dB; the reference RTTM is each
  clean source's activity (10 ms frames above -40 dB of its peak, pauses < 0.3 s bridged). Noise: the corpus's
  own coloured noise (training.data._coloured_noise: white .. brown) at each SNR relative to the meeting's power.
* DER (pyannote.metrics, collar ±0.25 s, overlap scored) of the final and the live timeline of ``rtsep process``
  without and with ``--denoise`` (separator none: the diarizer is the same either way), and the SI-SDR of the
  speaker tracks (each reference talker against its best track, where that talker speaks alone) without and with
  ``--denoise --denoise-tracks``.
* The denoiser alone on each noisy meeting: SI-SDR of its output against the clean meeting, its real-time factor
  per stream (one stream, one thread: wall time / audio time, and its thread's CPU time / audio time, which the
  machine's load disturbs less) and its latency (input samples held back, measured
  after each 20 ms block while streaming).

Nothing here is tuned: the defaults (attenuation limit 100 dB, 320-sample blocks) are the library's and the
design's; so one split is the evidence (default: the validation actors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from bench.common import machine_note
from rtsep.compose import build_denoise, process_file
from rtsep.demo import diarization_error_rate
from rtsep.diarize.timeline import annotation_from_segments
from rtsep.enhance.config import DenoiseConfig
from rtsep.enhance.deepfilter import StreamingDenoiser, load_deepfilter
from rtsep.pipeline import PipelineConfig
from rtsep.runtime.diarization import DiarizationRuntime
from rtsep.separate.config import SeparatorConfig
from training.data import _coloured_noise

CORPUS = Path("/work/runs/real/corpus")
CORPUS_RATE_HZ = 8000
RATE_HZ = 16000


def si_sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    n = min(reference.size, estimate.size)
    ref, est = reference[:n].astype(np.float64), estimate[:n].astype(np.float64)
    ref, est = ref - ref.mean(), est - est.mean()
    scale = (est @ ref) / max(ref @ ref, 1e-12)
    target = scale * ref
    return float(10 * np.log10(max(target @ target, 1e-12) / max((est - target) @ (est - target), 1e-12)))


def activity(source: np.ndarray, rate: int, bridge_s: float = 0.3) -> list[tuple[float, float]]:
    frame = rate // 100
    frames = source[: source.size // frame * frame].reshape(-1, frame)
    energy_db = 10 * np.log10((frames.astype(np.float64) ** 2).mean(axis=1) + 1e-12)
    active = energy_db > energy_db.max() - 40
    spans: list[list[float]] = []
    for i in np.flatnonzero(active):
        t = i / 100
        if spans and t - spans[-1][1] < bridge_s:
            spans[-1][1] = t + 0.01
        else:
            spans.append([t, t + 0.01])
    return [(a, b) for a, b in spans]


def make_meeting(split: str, seed: int, seconds: float, talkers: int = 3) -> tuple[np.ndarray, list[np.ndarray]]:
    """(clean meeting, its sources) at 16 kHz: turns of whole utterances of ``talkers`` actors of ``split``."""
    rng = np.random.default_rng(seed)
    index = json.loads((CORPUS / "index.json").read_text())
    actors = sorted(k for k, v in index.items() if v["split"] == split and v["seconds"] >= 20)
    chosen = [actors[i] for i in rng.choice(len(actors), talkers, replace=False)]
    length = int(seconds * CORPUS_RATE_HZ)
    sources = [np.zeros(length, np.float32) for _ in chosen]
    gains = 10 ** (rng.uniform(-4, 4, talkers) / 20)
    pos, previous = int(0.5 * CORPUS_RATE_HZ), -1
    while pos < length - CORPUS_RATE_HZ:
        k = int(rng.choice([t for t in range(talkers) if t != previous]))
        audio = np.load(CORPUS / f"{chosen[k]}.npy", mmap_mode="r")
        offsets = index[chosen[k]]["offsets"] + [audio.size]
        turn_end = pos + int(rng.uniform(3.0, 8.0) * CORPUS_RATE_HZ)  # a turn: utterances with short pauses
        at = pos
        while at < min(turn_end, length - CORPUS_RATE_HZ // 2):
            u = int(rng.integers(len(offsets) - 1))
            utterance = np.asarray(audio[offsets[u]: offsets[u + 1]], np.float32) / 32768.0
            utterance = utterance[: min(utterance.size, 6 * CORPUS_RATE_HZ, length - at)]
            sources[k][at: at + utterance.size] += gains[k] * 0.3 * utterance / (np.abs(utterance).max() + 1e-9)
            at += utterance.size + int(rng.uniform(0.1, 0.4) * CORPUS_RATE_HZ)
        previous = k
        overlap = rng.random() < 0.3
        gap_s = -rng.uniform(0.3, 1.2) if overlap else rng.uniform(0.3, 1.0)
        pos = max(pos + CORPUS_RATE_HZ, at + int(gap_s * CORPUS_RATE_HZ))
    up = [soxr.resample(s, CORPUS_RATE_HZ, RATE_HZ).astype(np.float32) for s in sources]
    return np.sum(up, axis=0).astype(np.float32), up


def reference_rttm(sources: list[np.ndarray], uri: str) -> str:
    segments = [(a, b, f"T{k}") for k, s in enumerate(sources) for a, b in activity(s, RATE_HZ)]
    return annotation_from_segments(segments, uri).to_rttm()


def noisy(clean: np.ndarray, snr_db: float | None, seed: int) -> np.ndarray:
    if snr_db is None:
        return clean
    noise = _coloured_noise(np.random.default_rng(seed), clean.size)
    return (clean + noise * np.sqrt((clean ** 2).mean() / 10 ** (snr_db / 10))).astype(np.float32)


def solo_masks(sources: list[np.ndarray]) -> list[np.ndarray]:
    """Per talker, the samples where only that talker speaks (reference activity)."""
    active = []
    for s in sources:
        mask = np.zeros(s.size, bool)
        for a, b in activity(s, RATE_HZ):
            mask[int(a * RATE_HZ): int(b * RATE_HZ)] = True
        active.append(mask)
    total = np.sum(active, axis=0)
    return [m & (total == 1) for m in active]


def track_si_sdr(out_dir: Path, sources: list[np.ndarray]) -> float:
    """Mean over talkers of the SI-SDR of its best speaker track, on the samples where that talker speaks alone
    (what a speaker track should be there: the talker, without the background)."""
    tracks = [sf.read(str(p), dtype="float32")[0] for p in sorted((out_dir / "tracks").glob("*.wav"))]
    if not tracks:
        return float("nan")
    n = sources[0].size
    tracks = [np.pad(t[:n], (0, max(0, n - t.size))) for t in tracks]
    scores = []
    for source, mask in zip(sources, solo_masks(sources), strict=True):
        scores.append(max(si_sdr_db(source[mask], t[mask]) for t in tracks))
    return float(np.mean(scores))


def denoiser_alone(mixture: np.ndarray, clean: np.ndarray, block: int = 320) -> dict:
    denoiser = StreamingDenoiser(load_deepfilter(), RATE_HZ)
    held, parts = [], []
    t0, c0 = time.perf_counter(), time.thread_time()
    for i in range(0, mixture.size, block):
        parts.append(denoiser.process(mixture[i: i + block]))
        held.append(denoiser.held_samples)
    parts.append(denoiser.flush())
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    out = np.concatenate(parts)
    seconds = mixture.size / RATE_HZ
    return {"rtf": elapsed / seconds, "cpu_rtf": cpu / seconds,
            "held_ms_median": 1000 * statistics.median(held) / RATE_HZ, "held_ms_max": 1000 * max(held[10:]) / RATE_HZ,
            "si_sdr_in_db": si_sdr_db(clean, mixture), "si_sdr_out_db": si_sdr_db(clean, out),
            "same_length": out.size == mixture.size}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--meetings", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--snrs", default="clean,20,10,5,0")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--out")
    parser.add_argument("--cost-only", action="store_true",
                        help="only the denoiser's real-time factor and latency (no DER, no tracks)")
    args = parser.parse_args()
    if args.cost_only:
        rows = []
        for m in range(args.meetings):
            clean, _ = make_meeting(args.split, 1000 + m, args.seconds)
            rows.append(denoiser_alone(noisy(clean, 10.0, 2000 + m), clean))
        print(json.dumps({"machine": machine_note(), "meetings": args.meetings, "seconds": args.seconds,
                          **{k: round(statistics.median(r[k] for r in rows), 4)
                             for k in ("rtf", "cpu_rtf", "held_ms_median", "held_ms_max")},
                          "rtf_runs": [round(r["rtf"], 3) for r in rows],
                          "cpu_rtf_runs": [round(r["cpu_rtf"], 3) for r in rows]}, indent=1))
        return
    note = machine_note()
    snrs = [None if s == "clean" else float(s) for s in args.snrs.split(",")]
    base = PipelineConfig(separator=SeparatorConfig(name=None))
    variants = {"off": base, "denoise": replace(base, denoise=DenoiseConfig(enabled=True, tracks=True))}
    runtime = DiarizationRuntime(base.runtime, base.diarization)
    denoise_runtime = build_denoise(variants["denoise"])
    rows = []
    try:
        for m in range(args.meetings):
            clean, sources = make_meeting(args.split, 1000 + m, args.seconds)
            rttm = reference_rttm(sources, f"meeting{m}")
            for snr in snrs:
                mixture = noisy(clean, snr, 2000 + m)
                row = {"meeting": m, "snr_db": "clean" if snr is None else snr, **denoiser_alone(mixture, clean)}
                with tempfile.TemporaryDirectory() as scratch:
                    wav = Path(scratch) / "in.wav"
                    sf.write(str(wav), mixture, RATE_HZ, subtype="FLOAT")
                    for name, config in variants.items():
                        out = Path(scratch) / name
                        result = asyncio.run(process_file(wav, out, config, runtime,
                                                          denoise=denoise_runtime if name == "denoise" else None))
                        row[name] = {"final": diarization_error_rate(rttm, result.final),
                                     "live": diarization_error_rate(rttm, result.live),
                                     "speakers": len(result.speakers), "track_si_sdr_db": track_si_sdr(out, sources)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        runtime.close()
        if denoise_runtime is not None:
            denoise_runtime.close()

    def med(values):
        return round(statistics.median(values), 4)

    summary = {}
    for snr in dict.fromkeys(r["snr_db"] for r in rows):
        sel = [r for r in rows if r["snr_db"] == snr]
        summary[str(snr)] = {
            **{f"{v}_final_der": med([r[v]["final"]["der"] for r in sel]) for v in variants},
            **{f"{v}_live_der": med([r[v]["live"]["der"] for r in sel]) for v in variants},
            **{f"{v}_track_si_sdr_db": med([r[v]["track_si_sdr_db"] for r in sel]) for v in variants},
            "denoiser_si_sdr_in_db": med([r["si_sdr_in_db"] for r in sel]),
            "denoiser_si_sdr_out_db": med([r["si_sdr_out_db"] for r in sel]),
        }
    report = {"split": args.split, "meetings": args.meetings, "seconds": args.seconds, "machine": note,
              "denoiser_rtf_median": med([r["rtf"] for r in rows]),
              "denoiser_cpu_rtf_median": med([r["cpu_rtf"] for r in rows]),
              "denoiser_held_ms_median": med([r["held_ms_median"] for r in rows]),
              "denoiser_held_ms_max": max(r["held_ms_max"] for r in rows), "by_snr": summary, "rows": rows}
    text = json.dumps(report, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
