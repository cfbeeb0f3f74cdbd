"""Evaluate separator checkpoints: SI-SDRi on real and synthetic mixtures, streaming RTF, size.

    python -m bench.separation.eval --checkpoint rtsep/separate/weights/convtasnet_8k.safetensors \
        --corpus /work/runs/sep/corpus --rtf
    python -m bench.separation.eval --watch /work/runs/sep/run --corpus /work/runs/sep/corpus   # every snapshot
    python -m bench.separation.eval --postfilter-time-s 34 600 3600   # the Wiener post-filter's seconds per file

(a) ``real``: real speech, built from the pyannote sample (evaluation data only, never used in training):
    sample.rttm gives the regions where exactly one of the two talkers speaks; each talker's single-talker
    speech (regions >= 0.5 s, 50 ms trimmed at each edge) is concatenated and cut into 3 s segments; every
    pair of segments of the two talkers is remixed at -5, 0 and +5 dB (talker 2 relative to talker 1) at
    8 kHz. ``real-long`` remixes the whole concatenations (about 9 s) the same way (streaming-like: the
    cumulative norms see a longer past). Oracle: the ideal ratio mask (|S_i| / sum_j |S_j|, 32 ms STFT) on the
    same mixtures, the reference bound.
(b) ``synthetic``: mixtures of held-out voices of the training corpus (fixed seed), as training draws them.
Figures are permutation-invariant SI-SDR improvements over the mixture, averaged over mixtures.
RTF: streaming the model chunk by chunk on one thread, median of 3 runs over ``--rtf-seconds`` of noise.
Post-filter time: rtsep.separate.postfilter's default filter on two sources of noise that long at 8 kHz (median
of 3, one thread) and the process's peak memory.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rtsep.separate.convtasnet import (
    ConvTasNet,
    load_convtasnet,
    read_checkpoint_metadata,
)
from rtsep.separate.losses import pit_si_sdr_improvement
from rtsep.separate.postfilter import wiener_postfilter

RATE_HZ = 8000
SNRS_DB = (-5.0, 0.0, 5.0)


def pyannote_sample() -> tuple[Path, Path]:
    import pyannote.audio

    root = Path(pyannote.audio.__file__).parent / "sample"
    return root / "sample.wav", root / "sample.rttm"


def reference_turns() -> dict[str, list[tuple[float, float]]]:
    """Each talker's turns (start_s, end_s) in the pyannote sample, from sample.rttm."""
    turns: dict[str, list[tuple[float, float]]] = {}
    for line in pyannote_sample()[1].read_text().splitlines():
        f = line.split()
        if f and f[0] == "SPEAKER":
            turns.setdefault(f[7], []).append((float(f[3]), float(f[3]) + float(f[4])))
    return turns


def single_talker_regions(rate_hz: int = RATE_HZ, min_region_s: float = 0.5,
                          trim_s: float = 0.05) -> tuple[np.ndarray, list[list[tuple[int, int]]]]:
    """The pyannote sample at ``rate_hz`` and, per talker (sorted by name), the sample ranges where only that
    talker speaks according to sample.rttm (trimmed by ``trim_s``, at least ``min_region_s`` long)."""
    import soundfile as sf
    import soxr

    wav, _ = pyannote_sample()
    audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    audio = soxr.resample(audio.mean(1), rate, rate_hz).astype(np.float32)
    turns = reference_turns()
    step = 0.01
    total = len(audio) / rate_hz
    grid = np.arange(0, total, step)
    active = {s: np.zeros(len(grid), bool) for s in turns}
    for s, segs in turns.items():
        for a, b in segs:
            active[s][(grid >= a) & (grid < b)] = True
    count = sum(active.values())
    regions = []
    for s in sorted(turns):
        only = active[s] & (count == 1)
        edges = np.flatnonzero(np.diff(np.r_[0, only.astype(int), 0]))
        mine = []
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            start, end = grid[a] + trim_s, grid[b - 1] + step - trim_s
            if end - start >= min_region_s:
                mine.append((int(start * rate_hz), int(end * rate_hz)))
        regions.append(mine)
    return audio, regions


def single_talker_streams(rate_hz: int = RATE_HZ, min_region_s: float = 0.5, trim_s: float = 0.05) -> list[np.ndarray]:
    """Each talker's single-talker speech of the pyannote sample, concatenated, at ``rate_hz``."""
    audio, regions = single_talker_regions(rate_hz, min_region_s, trim_s)
    return [np.concatenate([audio[a:b] for a, b in mine]) for mine in regions]


def remix(a: np.ndarray, b: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    b = b * np.sqrt((a**2).mean() / ((b**2).mean() + 1e-12) * 10 ** (-snr_db / 10))
    sources = np.stack([a, b]).astype(np.float32)
    mix = sources.sum(0)
    peak = np.abs(mix).max()
    if peak > 0.99:
        mix, sources = mix * 0.99 / peak, sources * 0.99 / peak
    return mix.astype(np.float32), sources


def real_sets(segment_s: float = 3.0) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    s1, s2 = single_talker_streams()
    seg = int(segment_s * RATE_HZ)
    cut1 = [s1[i : i + seg] for i in range(0, len(s1) - seg + 1, seg)]
    cut2 = [s2[i : i + seg] for i in range(0, len(s2) - seg + 1, seg)]
    short = [remix(a, b, snr) for a in cut1 for b in cut2 for snr in SNRS_DB]
    long = [remix(s1, s2, snr) for snr in SNRS_DB]
    return {"real": short, "real-long": long}


def synthetic_set(corpus: Path, count: int = 100) -> list[tuple[np.ndarray, np.ndarray]]:
    from training.data import Corpus, DynamicMixer, MixConfig

    mixer = DynamicMixer(Corpus(corpus, "valid"), MixConfig(segment_samples=3 * RATE_HZ), np.random.default_rng(777))
    return [mixer.draw() for _ in range(count)]


def oracle_irm(mix: np.ndarray, sources: np.ndarray, n_fft: int = 256, hop: int = 64) -> np.ndarray:
    window = torch.hann_window(n_fft, dtype=torch.float64)
    def spec(x):
        return torch.stft(torch.from_numpy(np.asarray(x, np.float64)), n_fft, hop, window=window, return_complex=True)

    mags = torch.stack([spec(s).abs() for s in sources])
    mask = mags / (mags.sum(0, keepdim=True) + 1e-10)
    est = torch.istft(spec(mix).unsqueeze(0) * mask, n_fft, hop, window=window, length=len(mix))
    return est.numpy()


def score(sets: dict[str, list], separate) -> dict[str, dict[str, float]]:
    out = {}
    for name, items in sets.items():
        sdri, by_snr = [], {}
        for i, (mix, src) in enumerate(items):
            est = separate(mix)
            _, imp = pit_si_sdr_improvement(mix, est, src)
            sdri.append(imp)
            if name.startswith("real"):
                by_snr.setdefault(SNRS_DB[i % len(SNRS_DB)], []).append(imp)
        out[name] = {"si_sdri_db": float(np.mean(sdri)), "n": len(items),
                     **{f"si_sdri_db@{snr:+.0f}dB": float(np.mean(v)) for snr, v in by_snr.items()}}
    return out


def model_separate(model: ConvTasNet):
    def run(mix: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(mix)[None].to(model.device))[0].cpu().numpy()

    return run


def streaming_rtf(model: ConvTasNet, step_samples: int, batch: int = 1, seconds: float = 20.0, runs: int = 5) -> float:
    """Median seconds of compute per second of audio per session, streaming in ``step_samples`` chunks."""
    x = torch.randn(batch, int(seconds * RATE_HZ) // step_samples * step_samples) * 0.1
    times = []
    with torch.inference_mode():
        for _ in range(runs):
            states = [model.new_state() for _ in range(batch)]
            t0 = time.perf_counter()
            for i in range(0, x.shape[1], step_samples):
                model.stream(x[:, i : i + step_samples], states)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / (x.shape[1] / RATE_HZ) / batch


def evaluate_checkpoint(path: Path, sets: dict, rtf_steps: list[int] | None, rtf_seconds: float = 10.0,
                        norm_memory_s: float | None = None) -> dict:
    model = load_convtasnet(path, norm_memory_s)
    meta = read_checkpoint_metadata(path)["metadata"]
    result = {"checkpoint": str(path), "step": meta.get("step"),
              "trained_h": round(meta.get("cpu_s", meta.get("trained_s", 0)) / 3600, 3),
              "size_bytes": path.stat().st_size,
              "parameters": model.num_parameters(), **score(sets, model_separate(model))}
    if rtf_steps:
        result["rtf"] = {f"step{s}_batch{b}": round(streaming_rtf(model, s, b, seconds=rtf_seconds, runs=3), 4)
                         for s in rtf_steps for b in (1, 8)}
        with torch.inference_mode():
            x = torch.randn(1, int(rtf_seconds * RATE_HZ))
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        result["rtf"]["offline_batch1"] = round(statistics.median(times) / rtf_seconds, 4)
    return result


def time_postfilter(lengths_s: list[float], rate_hz: int = RATE_HZ) -> None:
    """One JSON line per length: the default Wiener post-filter's wall time on a file that long."""
    rng = np.random.default_rng(0)
    for seconds in lengths_s:
        sources = (0.1 * rng.standard_normal((2, int(seconds * rate_hz)))).astype(np.float32)
        mixture = sources.sum(0) + 0.01 * rng.standard_normal(sources.shape[1]).astype(np.float32)
        walls = []
        for _ in range(3):
            start = time.perf_counter()
            wiener_postfilter(mixture, sources, rate_hz)
            walls.append(time.perf_counter() - start)
        print(json.dumps({"postfilter_file_s": seconds, "wall_s_median": round(float(np.median(walls)), 3),
                          "rtf": round(float(np.median(walls)) / seconds, 5),
                          "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, action="append", default=[])
    p.add_argument("--watch", type=Path, help="a training run dir: evaluate every snapshot not yet in eval.jsonl")
    p.add_argument("--corpus", type=Path, help="training corpus (for held-out synthetic mixtures)")
    p.add_argument("--synthetic-count", type=int, default=100)
    p.add_argument("--rtf", action="store_true", help="also measure streaming RTF (one thread)")
    p.add_argument("--rtf-steps", type=str, default="64,160,800,2048")
    p.add_argument("--rtf-seconds", type=float, default=10.0)
    p.add_argument("--rtf-only", action="store_true", help="measure speed and size only")
    p.add_argument("--oracle", action="store_true", help="print the oracle IRM figures")
    p.add_argument("--out", type=Path, help="append JSON lines here")
    p.add_argument("--norm-memory-s", type=float, default=None, help="run the checkpoints with this norm memory")
    p.add_argument("--export-real", type=Path, help="write the real remix set as NPZ (for train.py --real-eval)")
    p.add_argument("--postfilter-time-s", type=float, nargs="+",
                   help="time the default Wiener post-filter on files this long instead")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.postfilter_time_s:
        time_postfilter(args.postfilter_time_s)
        return 0

    sets = {} if args.rtf_only else real_sets()
    if args.export_real is not None:
        np.savez(args.export_real, mixtures=np.stack([m for m, _ in sets["real"]]).astype(np.float16),
                 sources=np.stack([s for _, s in sets["real"]]).astype(np.float16))
    if args.corpus is not None and not args.rtf_only:
        sets["synthetic"] = synthetic_set(args.corpus, args.synthetic_count)
    if args.oracle:
        oracle = {}
        for name, items in sets.items():
            vals = [pit_si_sdr_improvement(m, oracle_irm(m, s), s)[1] for m, s in items]
            oracle[name] = {"si_sdri_db": float(np.mean(vals)), "n": len(vals)}
        print(json.dumps({"oracle_irm": oracle}))
        mixture_only = {name: {"si_sdr_mixture_db": float(np.mean([pit_si_sdr_improvement(m, np.stack([m, m]), s)[0]
                                                                    for m, s in items]))}
                        for name, items in sets.items()}
        print(json.dumps({"unprocessed": mixture_only}))
    paths = list(args.checkpoint)
    out = args.out
    if args.watch is not None:
        out = out or args.watch / "eval.jsonl"
        done = set()
        if out.exists():
            done = {json.loads(line)["checkpoint"] for line in out.read_text().splitlines() if line.strip()}
        paths += [q for q in sorted((args.watch / "snapshots").glob("step*.safetensors")) if str(q) not in done]
    steps = [int(s) for s in args.rtf_steps.split(",")] if args.rtf else None
    for path in paths:
        result = evaluate_checkpoint(path, sets, steps, args.rtf_seconds, args.norm_memory_s)
        result["norm_memory_s"] = args.norm_memory_s
        line = json.dumps(result)
        print(line, flush=True)
        if out is not None:
            with out.open("a") as f:
                f.write(line + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
