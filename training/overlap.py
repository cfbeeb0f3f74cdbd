"""Train the overlapped-speech detector (rtsep.runtime.overlap.OverlapNet) on synthetic meetings of real voices.

    python -m training.overlap --corpus /work/runs/real/corpus --state /work/runs/overlap/state.pt \\
        --run-dir /work/runs/overlap --cpu-minutes 45 [--resume] [--export rtsep/diarize/weights/overlap_8k.safetensors]

Training examples are drawn on the fly from the real-voice corpus' **train** actors (training.corpus, splits by
actor in training/splits.json); the fixed validation set, which picks the exported checkpoint, from its **valid**
actors. The test actors and the pyannote sample are never read. Each example is ``--segment-s`` (4 s) of a small
meeting (training.overlap.MeetingChunker): 1..3 talkers taking turns of 0.5..3 s with pauses, 70 % of the turn
changes overlapped by 0.2..2 s, sometimes a short interjection inside another's turn; each utterance cut to its
speech and levelled as bench.meetings does, the talkers within ±6 dB, speed-perturbed (0.9..1.1); most in a
simulated shoebox room (RT60 0.15..0.8 s, training/rooms.py, one position per talker) and most with coloured
(white..brown, pink in the middle) noise at 5..20 dB SNR against the speech, at a random level. The frame targets
(20 ms: 0 / 1 / 2+ talkers) come from each *dry* talker's activity by the meeting set's reference rule
(bench.meetings.trim_to_speech / bridge: pauses >= 0.3 s are not speech), so the detector learns what the
reference RTTM calls overlap. Loss: cross-entropy per frame.

Every ``--valid-every-s`` CPU seconds the model is scored on the validation set (loss, overlap-frame average
precision, and F1 at 0.5 and at the best threshold); the resumable state (weights, optimiser, RNG positions, step,
CPU seconds, the curve) is written to ``--state`` (atomic rename), a line to ``RUN/metrics.jsonl``, and the best
weights by validation average precision to ``--export`` (safetensors, rtsep.runtime.overlap.save_overlap_net).
CPU time is the process' CPU time in training steps (mixing included, validation excluded); one thread by default.

    python -m training.overlap --state training/state/overlap.pt --export-only --export FILE

writes the *state's own* weights (its last step, not the best one, whose export may be gone) in the shipped format,
with the metadata a training export carries: the recipe, the step, the CPU seconds and the validation figures of
that step (the curve's last row, which the state was saved with), plus ``"exported_from": "state"``. No corpus is
read and nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from bench.meetings import bridge, trim_to_speech
from rtsep.runtime.overlap import OverlapNet, OverlapNetConfig, save_overlap_net
from training.corpus import SAMPLE_RATE_HZ, splits_hash
from training.data import _coloured_noise
from training.mixing import RealCorpus
from training.rooms import shoebox_talkers

log = logging.getLogger("training.overlap")

RECIPE_VERSION = 1
MAX_TALKERS = 3


@dataclass(frozen=True)
class ChunkConfig:
    segment_s: float = 4.0
    talkers_p: tuple[float, ...] = (0.25, 0.45, 0.30)  # 1, 2, 3 talkers
    turn_s: tuple[float, float] = (0.5, 3.0)
    pause_s: tuple[float, float] = (0.1, 1.2)
    overlap_p: float = 0.7  # share of turn changes that overlap
    overlap_s: tuple[float, float] = (0.2, 2.0)
    interjection_p: float = 0.4  # a short utterance of another talker inside the chunk
    level_db: float = 6.0  # talkers within +-level_db
    speed: tuple[float, float] = (0.9, 1.1)
    room_p: float = 0.8
    noise_p: float = 0.75
    noise_snr_db: tuple[float, float] = (5.0, 20.0)
    mix_dbfs: tuple[float, float] = (-38.0, -16.0)
    rooms: int = 48  # simulated rooms drawn once (pyroomacoustics is slow), MAX_TALKERS positions each
    source_weights: tuple[tuple[str, float], ...] = (("fillets-cs", 0.5), ("klettres", 0.35), ("festvox-ru", 0.15))


class MeetingChunker:
    """Draws ``(mixture (T,), counts (frames,))``: a chunk of a small synthetic meeting and the number of talkers
    speaking in each frame (capped at 2: the classes 0 / 1 / 2+)."""

    def __init__(self, corpus: RealCorpus, config: ChunkConfig, rng: np.random.Generator, frame_samples: int) -> None:
        self.corpus, self.config, self.rng = corpus, config, rng
        self.frame_samples = frame_samples
        weights = dict(config.source_weights)
        by_source: dict[str, list[str]] = {}
        for name in corpus.speakers:
            by_source.setdefault(corpus.source[name], []).append(name)
        self.by_source = by_source
        self.sources = sorted(by_source)
        p = np.array([weights.get(s, 0.0) for s in self.sources], np.float64)
        self.source_p = p / p.sum() if p.sum() > 0 else np.full(len(self.sources), 1 / len(self.sources))
        room_rng = np.random.default_rng(int(rng.integers(2**31)))
        self.rooms = [shoebox_talkers(room_rng, SAMPLE_RATE_HZ, int(0.8 * SAMPLE_RATE_HZ), True, MAX_TALKERS)[0]
                      for _ in range(config.rooms)]

    def _speakers(self, k: int) -> list[str]:
        chosen: list[str] = []
        for _ in range(100 * k):
            source = self.sources[int(self.rng.choice(len(self.sources), p=self.source_p))]
            names = self.by_source[source]
            name = names[int(self.rng.integers(len(names)))]
            if name not in chosen:
                chosen.append(name)
            if len(chosen) == k:
                return chosen
        raise RuntimeError(f"the corpus split holds fewer than {k} speakers with non-zero weight")

    def _utterance(self, speaker: str, speed: float) -> tuple[np.ndarray, np.ndarray]:
        """One utterance cut to its speech, at unit RMS x 0.1 and ``speed``, and its activity."""
        offs = self.corpus.offsets[speaker]
        i = int(self.rng.integers(len(offs) - 1))
        audio = self.corpus.audio[speaker][offs[i] : offs[i + 1]]
        audio, active = trim_to_speech(audio, SAMPLE_RATE_HZ)
        if speed != 1.0 and audio.size > 1:
            n = int(audio.size / speed)
            pos = np.arange(n) * speed
            audio = np.interp(pos, np.arange(audio.size), audio).astype(np.float32)
            active = active[np.minimum(pos.astype(np.int64), active.size - 1)]
        audio = audio / (np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-9) * 0.1
        return audio.astype(np.float32), active

    def _place(self, track: np.ndarray, mask: np.ndarray, audio: np.ndarray, active: np.ndarray, start: int) -> None:
        a, b = max(0, start), min(track.size, start + audio.size)
        if b > a:
            track[a:b] += audio[a - start : b - start]
            mask[a:b] |= active[a - start : b - start]

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        from scipy.signal import fftconvolve

        c, rng, rate = self.config, self.rng, SAMPLE_RATE_HZ
        n = round(c.segment_s * rate)
        k = int(rng.choice(len(c.talkers_p), p=np.asarray(c.talkers_p) / sum(c.talkers_p))) + 1
        names = self._speakers(k)
        speeds = rng.uniform(*c.speed, k)
        tracks = np.zeros((k, n), np.float32)
        masks = np.zeros((k, n), bool)
        pos = int(rng.uniform(-2.0, 0.5) * rate)
        prev = -1
        while pos < n:
            who = int(rng.integers(k)) if k == 1 or prev < 0 else int((prev + 1 + rng.integers(k - 1)) % k)
            want = rng.uniform(*c.turn_s) * rate
            start = pos
            if prev >= 0 and who != prev and rng.random() < c.overlap_p:
                start = pos - int(rng.uniform(*c.overlap_s) * rate)
            elif prev >= 0:
                start = pos + int(rng.uniform(*c.pause_s) * rate)
            at = start
            while at - start < want and at < n:
                audio, active = self._utterance(names[who], speeds[who])
                self._place(tracks[who], masks[who], audio, active, at)
                at += audio.size + int(rng.uniform(0.05, 0.25) * rate)
            prev, pos = who, max(at, pos + 1)
        if k >= 2 and rng.random() < c.interjection_p:
            who = int(rng.integers(k))
            audio, active = self._utterance(names[who], speeds[who])
            audio, active = audio[: int(1.0 * rate)], active[: int(1.0 * rate)]
            self._place(tracks[who], masks[who], audio, active, int(rng.integers(0, n)))
        active = np.stack([bridge(m, rate) for m in masks])
        gains = 10 ** (rng.uniform(-c.level_db, c.level_db, k) / 20)
        tracks *= gains[:, None].astype(np.float32)
        if self.rooms and rng.random() < c.room_p:
            room = self.rooms[int(rng.integers(len(self.rooms)))]
            slots = rng.permutation(MAX_TALKERS)[:k]
            tracks = np.stack([fftconvolve(tracks[i], room[s])[:n] for i, s in enumerate(slots)]).astype(np.float32)
        mixture = tracks.sum(0)
        speech_power = float((mixture.astype(np.float64) ** 2).mean())
        if rng.random() < c.noise_p or speech_power < 1e-12:
            noise = _coloured_noise(rng, n)
            scale = np.sqrt(max(speech_power, 1e-6) / 10 ** (rng.uniform(*c.noise_snr_db) / 10))
            mixture = mixture + noise * scale
        level = 10 ** (rng.uniform(*c.mix_dbfs) / 20) / (np.sqrt((mixture.astype(np.float64) ** 2).mean()) + 1e-9)
        mixture = mixture * level
        peak = float(np.abs(mixture).max())
        if peak > 0.99:
            mixture = mixture * (0.99 / peak)
        frames = n // self.frame_samples
        per_frame = active[:, : frames * self.frame_samples].reshape(k, frames, self.frame_samples).mean(2) > 0.5
        counts = np.minimum(per_frame.sum(0), 2).astype(np.int64)
        return mixture.astype(np.float32), counts

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.draw() for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as sklearn's average_precision_score)."""
    order = np.argsort(-scores, kind="stable")
    hits = positive[order].astype(np.float64)
    if hits.sum() == 0:
        return float("nan")
    precision = np.cumsum(hits) / np.arange(1, hits.size + 1)
    return float((precision * hits).sum() / hits.sum())


def f1_at(scores: np.ndarray, positive: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """(precision, recall, F1) of ``scores >= threshold`` against ``positive``."""
    predicted = scores >= threshold
    tp = float((predicted & positive).sum())
    precision = tp / max(1.0, float(predicted.sum()))
    recall = tp / max(1.0, float(positive.sum()))
    return precision, recall, 2 * precision * recall / max(1e-12, precision + recall)


def evaluate(model: OverlapNet, mixtures: np.ndarray, counts: np.ndarray, batch: int = 32) -> dict:
    model.eval()
    logits = []
    with torch.inference_mode():
        for i in range(0, len(mixtures), batch):
            logits.append(model(torch.from_numpy(mixtures[i : i + batch])))
    out = torch.cat(logits)
    target = torch.from_numpy(counts)
    loss = float(torch.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1)))
    overlap = torch.softmax(out, -1)[..., 2].numpy().reshape(-1)
    positive = counts.reshape(-1) == 2
    best = max((f1_at(overlap, positive, t) + (t,) for t in np.arange(0.05, 1.0, 0.05)), key=lambda r: r[2])
    p, r, f = f1_at(overlap, positive, 0.5)
    accuracy = float((out.argmax(-1) == target).float().mean())
    model.train()
    return {"loss": round(loss, 4), "accuracy": round(accuracy, 4),
            "overlap_ap": round(average_precision(overlap, positive), 4),
            "overlap_p50": round(p, 4), "overlap_r50": round(r, 4), "overlap_f1_50": round(f, 4),
            "best_threshold": round(float(best[3]), 2), "best_f1": round(best[2], 4),
            "overlap_share": round(float(positive.mean()), 4)}


def _save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def export_state(state_path: Path, export: Path) -> dict:
    """Write the weights of the resumable state at ``state_path`` to ``export`` (save_overlap_net) with the
    metadata of its own step; returns that metadata."""
    state = torch.load(state_path, weights_only=False)
    rows = [row for row in state["history"] if row["step"] == state["step"]]
    if not rows:
        raise SystemExit(f"{state_path}: no validation row at the state's step {state['step']} (the state is saved "
                         "right after its validation: this one was not written by training.overlap)")
    model = OverlapNet(OverlapNetConfig(**state["config"]))
    model.load_state_dict(state["model"])
    figures = {k: v for k, v in rows[-1].items() if k not in ("step", "cpu_s", "wall")}
    params = sum(p.numel() for p in model.parameters())
    metadata = {**state["recipe"], "step": state["step"], "cpu_s": round(state["cpu_s"], 1), "valid": figures,
                "parameters": params, "exported_from": "state"}
    export.parent.mkdir(parents=True, exist_ok=True)
    save_overlap_net(model, export, metadata)
    log.info("exported %s from %s (step %d, %.0f CPU s, valid AP %.4f)", export, state_path, state["step"],
             state["cpu_s"], figures["overlap_ap"])
    return metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.overlap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, help="the real-voice corpus (training.corpus); needed to train")
    parser.add_argument("--state", required=True, type=Path, help="the resumable state (one file, overwritten)")
    parser.add_argument("--run-dir", type=Path, help="metrics.jsonl goes here; needed to train")
    parser.add_argument("--export", type=Path, help="the best weights (default: <state stem>.best.safetensors)")
    parser.add_argument("--export-only", action="store_true",
                        help="write the state's own weights (its last step) to --export and stop")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--cpu-minutes", type=float, default=45.0, help="training CPU budget (all runs together)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (smoke tests)")
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--valid-items", type=int, default=192)
    parser.add_argument("--valid-every-s", type=float, default=240.0, help="CPU seconds between validations")
    parser.add_argument("--rooms", type=int, default=ChunkConfig.rooms)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.export_only:
        if args.export is None:
            parser.error("--export-only needs --export FILE")
        if not args.state.is_file():
            parser.error(f"{args.state}: no such state")
        export_state(args.state, args.export)
        return 0
    if args.corpus is None or args.run_dir is None:
        parser.error("training needs --corpus and --run-dir")
    if args.state.exists() and not args.resume:
        parser.error(f"{args.state} exists: --resume continues it (a new run never overwrites a state)")
    torch.set_num_threads(args.threads)
    export = args.export or args.state.with_name(args.state.stem + ".best.safetensors")
    net_config = OverlapNetConfig()
    chunk_config = ChunkConfig(segment_s=net_config.window_s, rooms=args.rooms)
    train_corpus = RealCorpus(args.corpus, "train")
    valid_corpus = RealCorpus(args.corpus, "valid")
    log.info("train: %d speakers, %.0f s; valid: %d speakers", len(train_corpus.speakers), train_corpus.seconds,
             len(valid_corpus.speakers))
    # the fixed validation set: its own seed, the valid actors only
    valid_chunker = MeetingChunker(valid_corpus, chunk_config, np.random.default_rng(10_000 + args.seed),
                                   net_config.frame_samples)
    valid_x, valid_y = valid_chunker.batch(args.valid_items)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    model = OverlapNet(net_config)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr)
    chunker = MeetingChunker(train_corpus, chunk_config, rng, net_config.frame_samples)
    step, cpu_s, history, best = 0, 0.0, [], None
    if args.resume and args.state.exists():
        state = torch.load(args.state, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step, cpu_s, history, best = state["step"], state["cpu_s"], state["history"], state["best"]
        log.info("resumed at step %d, %.0f CPU s", step, cpu_s)
    recipe = {"recipe_version": RECIPE_VERSION, "splits_hash": splits_hash(), "chunks": asdict(chunk_config),
              "batch": args.batch, "lr": args.lr, "seed": args.seed, "valid_items": args.valid_items}
    params = sum(p.numel() for p in model.parameters())
    log.info("OverlapNet: %d parameters; budget %.0f CPU min", params, args.cpu_minutes)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    metrics = (args.run_dir / "metrics.jsonl").open("a")
    last_valid = cpu_s
    budget_s = args.cpu_minutes * 60
    steps_done = 0

    def checkpoint() -> None:
        nonlocal best
        figures = evaluate(model, valid_x, valid_y)
        row = {"step": step, "cpu_s": round(cpu_s, 1), "wall": time.strftime("%H:%M:%S"), **figures}
        history.append(row)
        metrics.write(json.dumps(row) + "\n")
        metrics.flush()
        log.info("valid %s", row)
        if best is None or figures["overlap_ap"] > best["overlap_ap"]:
            best = row
            save_overlap_net(model, export, {**recipe, "step": step, "cpu_s": round(cpu_s, 1), "valid": figures,
                                            "parameters": params})
            log.info("exported %s (step %d, valid AP %.4f)", export, step, figures["overlap_ap"])
        _save_state(args.state, {"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                                 "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "step": step,
                                 "cpu_s": cpu_s, "history": history, "best": best, "recipe": recipe,
                                 "config": asdict(net_config)})

    model.train()
    while cpu_s < budget_s and (args.steps is None or steps_done < args.steps):
        t0 = time.process_time()
        # cosine decay over the CPU budget, to a tenth of the initial rate
        frac = min(1.0, cpu_s / budget_s)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * (0.1 + 0.45 * (1 + np.cos(np.pi * frac)))
        x, y = chunker.batch(args.batch)
        logits = model(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(y).reshape(-1))
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimiser.step()
        step += 1
        steps_done += 1
        cpu_s += time.process_time() - t0
        if step % 50 == 0:
            log.info("step %d loss %.4f cpu %.0f s", step, float(loss), cpu_s)
        if cpu_s - last_valid >= args.valid_every_s:
            checkpoint()
            last_valid = cpu_s
    checkpoint()
    metrics.close()
    log.info("done: step %d, %.0f CPU s; best step %d (valid AP %.4f, F1 %.4f at %.2f)", step, cpu_s, best["step"],
             best["overlap_ap"], best["best_f1"], best["best_threshold"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
