"""Train a separator (causal Conv-TasNet or causal TF-mask) with PIT SI-SNR on the real-voice corpus, resumably.

    python -m training.train --arch tfmask --corpus DIR --state training/state/tfmask.pt --run-dir RUN --cpu-hours 1
    python -m training.train --resume --corpus DIR --state training/state/tfmask.pt --run-dir RUN --cpu-hours 1

``DIR`` is built by ``python -m training.corpus build --out DIR`` (the same recipe gives the same corpus on any
machine). Training mixtures are drawn on the fly (training.mixing.RealMixer). Every ``--valid-every-s`` wall seconds
(or ``--valid-every-cpu-s`` seconds of training CPU; and at the end) the model is scored on the corpus's fixed
validation set (SI-SDRi, per SNR), and

* the resumable state is written to ``--state``, ONE file overwritten each time (atomic rename): weights,
  optimiser, the mixer's random-generator position, torch's RNG, step, training CPU-seconds and wall seconds,
  the validation history (the curve), the model and mixing configs, and the data recipe (corpus recipe version,
  hash of training/splits.json, hash of the fixed sets). Resuming continues exactly where it stopped (same
  batches, same optimiser moments) when mixtures are drawn in the training process (``--workers 0``, the CPU
  default); with ``--workers N`` each worker's stream restarts from the step (not bit-exact);
* an exponential moving average of the weights (``--ema-decay``) is kept beside them and validated too: an average
  over the last few hundred steps sits lower in the loss valley than any one step's weights, which a constant
  learning rate keeps bouncing around it;
* the best model so far (by validation SI-SDRi, the raw or the averaged weights, whichever scores higher) is exported
  next to it, ``<state stem>.best.safetensors``, in the format the package loads
  (``rtsep.separate.tfmask.load_tfmask`` / ``convtasnet.load_convtasnet``);
* a line goes to ``RUN/metrics.jsonl``.

CPU time is the process's CPU time spent in training steps (mixing included, validation excluded), so the curves of
two architectures compare per CPU-second. Threads: ``--threads`` (default 1). The pyannote sample is never read.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from rtsep.separate.convtasnet import ConvTasNet, ConvTasNetConfig, save_convtasnet
from rtsep.separate.losses import pit_si_sdr, pit_si_snr_loss, si_sdr
from rtsep.separate.tfmask import TFMaskConfig, TFMaskNet, save_tfmask
from training.corpus import SAMPLE_RATE_HZ, splits_hash
from training.mixing import RealCorpus, RealMixConfig, RealMixer, load_eval_set

log = logging.getLogger("training.train")
STATE_FORMAT = "rtsep-train-state"
STATE_VERSION = 1
ARCHS = {
    "tfmask": (TFMaskConfig, TFMaskNet, save_tfmask),
    "convtasnet": (ConvTasNetConfig, ConvTasNet, save_convtasnet),
}


def corpus_recipe(corpus: Path) -> dict:
    sets = corpus / "sets.json"
    if not sets.exists():
        raise FileNotFoundError(f"{corpus} is not a built corpus (no sets.json): run python -m training.corpus build")
    recipe = json.loads(sets.read_text())
    digest = hashlib.sha256()
    for name in ("valid.npz", "test.npz"):
        digest.update((corpus / name).read_bytes())
    return {"recipe_version": recipe["recipe_version"], "seed": recipe["seed"],
            "splits_sha256": recipe["splits_sha256"], "sets_sha256": digest.hexdigest()[:16], "hours": recipe["hours"],
            "build": {k: recipe.get(k, default) for k, default in (("world_per_speaker", 0), ("kokoro_voices", 0),
                                                                   ("kokoro_minutes", 1.2), ("asterisk", False))}}


@torch.no_grad()
def validate(model: torch.nn.Module, items: list[tuple[np.ndarray, np.ndarray]], snrs: np.ndarray | None = None,
             batch: int = 16) -> dict[str, float]:
    """Mean SI-SDR and SI-SDRi (best permutation) over fixed mixtures; batches items of equal length."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    by_len: dict[int, list[int]] = {}
    for i, (mix, _) in enumerate(items):
        by_len.setdefault(len(mix), []).append(i)
    sdr = np.zeros(len(items))
    sdri = np.zeros(len(items))
    for idx in by_len.values():
        for start in range(0, len(idx), batch):
            part = idx[start : start + batch]
            mix = torch.from_numpy(np.stack([items[i][0] for i in part])).to(device)
            ref = torch.from_numpy(np.stack([items[i][1] for i in part])).to(device)
            best, _ = pit_si_sdr(model(mix), ref)
            base = si_sdr(mix.unsqueeze(1).expand_as(ref), ref).mean(1)
            sdr[part] = best.double().cpu().numpy()
            sdri[part] = (best - base).double().cpu().numpy()
    model.train(was_training)
    out = {"valid_si_sdr_db": float(sdr.mean()), "valid_si_sdri_db": float(sdri.mean())}
    if snrs is not None:
        for snr in sorted(set(snrs.tolist())):
            out[f"valid_si_sdri_db@{snr:+.0f}dB"] = float(sdri[snrs == snr].mean())
    return out


class MixtureStream(torch.utils.data.IterableDataset):
    """Training batches from a RealMixer, one independent random stream per DataLoader worker."""

    def __init__(self, corpus: RealCorpus, config: RealMixConfig, batch_size: int, seed: tuple[int, ...]) -> None:
        self.corpus, self.config, self.batch_size, self.seed = corpus, config, batch_size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        mixer = RealMixer(self.corpus, self.config, np.random.default_rng([*self.seed, worker]))
        for mix, src in mixer.batches(self.batch_size):
            yield torch.from_numpy(mix), torch.from_numpy(src)


class WeightAverage:
    """An exponential moving average of a model's floating-point weights and buffers, updated after each step."""

    def __init__(self, model: torch.nn.Module, decay: float, weights: dict[str, torch.Tensor] | None = None) -> None:
        self.decay = decay
        current = model.state_dict()
        self.weights = {k: (weights[k] if weights is not None and k in weights else v).detach().clone().float()
                        for k, v in current.items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.weights:
                self.weights[k].mul_(self.decay).add_(v.detach().float(), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.weights.items()}

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model with the averaged weights for the duration of the block, its own weights restored after."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict({**saved, **{k: v.to(saved[k].dtype) for k, v in self.weights.items()}})
        try:
            yield model
        finally:
            model.load_state_dict(saved)


def _mix_config(base: dict, overrides: dict) -> RealMixConfig:
    known = {f.name for f in fields(RealMixConfig)}
    bad = set(overrides) - known
    if bad:
        raise SystemExit(f"unknown mix options {sorted(bad)}; known: {sorted(known)}")
    merged = {**base, **overrides}
    return RealMixConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})


def save_state(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--arch", choices=sorted(ARCHS), default=None, help="new runs only (a resumed run keeps its own)")
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--state", type=Path, required=True, help="the resumable state (one file, overwritten)")
    p.add_argument("--run-dir", type=Path, required=True, help="metrics.jsonl and the log (outside the repo)")
    p.add_argument("--resume", action="store_true", help="continue from --state (which must exist)")
    p.add_argument("--cpu-hours", type=float, default=None, help="stop after this many more training CPU-hours")
    p.add_argument("--hours", type=float, default=None, help="stop after this many more wall-clock hours")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this total step")
    p.add_argument("--batch-size", type=int, default=None, help="default 8 (a resumed run: its own)")
    p.add_argument("--segment-s", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: a new run 1e-3, a resumed run its own current rate)")
    p.add_argument("--halve-after-steps", type=int, default=1500,
                   help="halve the learning rate when the best validation score is this many steps old (0: never)")
    p.add_argument("--min-lr", type=float, default=5e-5, help="the rate is never halved below this")
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--ema-decay", type=float, default=0.998,
                   help="weight average's decay per step (0: off); its horizon is 1 / (1 - decay) steps")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--valid-every-s", type=float, default=300.0, help="wall seconds between validations")
    p.add_argument("--valid-every-cpu-s", type=float, default=None,
                   help="training CPU seconds between validations instead (on a shared machine a wall-clock "
                        "interval spends most of the CPU on validating)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=str, default="{}", help="JSON overrides of the model config (new runs only)")
    p.add_argument("--mix", type=str, default="{}", help="JSON overrides of RealMixConfig")
    p.add_argument("--device", type=str, default="cpu")
    p.add_argument("--workers", type=int, default=0, help="processes drawing mixtures (0: in the training loop)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    args.run_dir.mkdir(parents=True, exist_ok=True)
    args.state.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    recipe = corpus_recipe(args.corpus)
    if recipe["splits_sha256"] != splits_hash():
        p.error(f"{args.corpus} was built from another training/splits.json: rebuild it")
    segment = int(args.segment_s * SAMPLE_RATE_HZ) // 64 * 64

    if args.resume:
        if not args.state.exists():
            p.error(f"--resume: {args.state} does not exist")
        state = torch.load(args.state, map_location="cpu", weights_only=False)
        if state.get("format") != STATE_FORMAT or int(state.get("version", 0)) > STATE_VERSION:
            p.error(f"{args.state} is not a training state this trainer reads")
        if state["recipe"]["splits_sha256"] != recipe["splits_sha256"]:
            p.error("the state was trained on another split (training/splits.json changed)")
        if state["recipe"]["sets_sha256"] != recipe["sets_sha256"]:
            log.warning("the corpus's fixed sets differ from the ones this state was validated on")
        arch = state["arch"]
        config_cls, model_cls, export = ARCHS[arch]
        config = config_cls(**state["config"])
        model = model_cls(config)
        model.load_state_dict(state["model"])
        model.to(device)
        lr = args.lr if args.lr is not None else float(state.get("lr", 1e-3))
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:
            group["lr"] = lr
        mix_cfg = _mix_config(state["mix"], json.loads(args.mix))
        segment = mix_cfg.segment_samples
        rng = np.random.default_rng()
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, cpu_s, wall_s, best = state["step"], state["cpu_s"], state["wall_s"], state["best"]
        history = state["history"]
        ema_weights = state.get("ema")  # states before the average was kept start it from the weights
        # states before the schedule: the best's step from the curve
        best_step = state.get("best_step", max(history, key=lambda h: max(h["valid_si_sdri_db"],
                                                                          h.get("ema_valid_si_sdri_db", -1e9)))["step"])
        batch_size = args.batch_size or state["batch_size"]
        log.info("resumed %s (%s) at step %d, %.2f CPU-h, best %.2f dB", args.state, arch, step, cpu_s / 3600, best)
    else:
        if args.state.exists():
            p.error(f"{args.state} exists: pass --resume to continue it, or another --state")
        if args.arch is None:
            p.error("a new run needs --arch")
        arch = args.arch
        config_cls, model_cls, export = ARCHS[arch]
        config = config_cls(**json.loads(args.model))
        torch.manual_seed(args.seed)
        model = model_cls(config).to(device)
        lr = args.lr if args.lr is not None else 1e-3
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        mix_cfg = _mix_config(asdict(RealMixConfig(segment_samples=segment)), json.loads(args.mix))
        rng = np.random.default_rng(args.seed)
        step, cpu_s, wall_s, best, history = 0, 0.0, 0.0, -1e9, []
        ema_weights = None
        best_step = 0
        batch_size = args.batch_size or 8
        log.info("new %s run: %s, %d parameters", arch, asdict(config), model.num_parameters())

    train_corpus = RealCorpus(args.corpus, "train")
    log.info("train: %d speakers, %.2f h; mixing %s", len(train_corpus.speakers), train_corpus.seconds / 3600,
             asdict(mix_cfg))
    valid_items = load_eval_set(args.corpus / "valid.npz")
    valid_snrs = np.load(args.corpus / "valid.npz")["snr_db"]
    if args.workers > 0:
        stream = MixtureStream(train_corpus, mix_cfg, batch_size, (args.seed, step))
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                             pin_memory=device.type == "cuda", prefetch_factor=4,
                                             persistent_workers=True)
        batches = iter(loader)
    else:
        mixer = RealMixer(train_corpus, mix_cfg, rng)
        batches = ((torch.from_numpy(m), torch.from_numpy(s)) for m, s in mixer.batches(batch_size))
    best_path = args.state.with_name(args.state.stem + ".best.safetensors")
    if not 0.0 <= args.ema_decay < 1.0:
        p.error(f"--ema-decay must be within [0, 1), got {args.ema_decay}")
    ema = WeightAverage(model, args.ema_decay, ema_weights) if args.ema_decay > 0 else None

    def checkpoint(metrics: dict[str, float]) -> None:
        nonlocal best, best_step
        meta = {"arch": arch, "step": step, "cpu_s": round(cpu_s), "wall_s": round(wall_s), **metrics,
                "recipe": recipe, "device": str(device)}
        raw, averaged = metrics["valid_si_sdri_db"], metrics.get("ema_valid_si_sdri_db", -1e9)
        if max(raw, averaged) > best:
            best, best_step = max(raw, averaged), step
            if averaged > raw:
                with ema.swapped_in(model):
                    export(model, best_path, {**meta, "weights": f"average (decay {args.ema_decay})"})
            else:
                export(model, best_path, {**meta, "weights": "raw"})
        weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_state(args.state, {
            "format": STATE_FORMAT, "version": STATE_VERSION, "arch": arch, "config": asdict(config),
            "model": weights, "optimizer": opt.state_dict(), "mix": asdict(mix_cfg), "batch_size": batch_size,
            "step": step, "cpu_s": cpu_s, "wall_s": wall_s, "best": best, "history": history,
            "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(), "recipe": recipe,
            "ema": ema.state_dict() if ema is not None else None, "ema_decay": args.ema_decay,
            "lr": opt.param_groups[0]["lr"], "best_step": best_step,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def validate_both() -> dict[str, float]:
        metrics = validate(model, valid_items, valid_snrs)
        if ema is not None:
            with ema.swapped_in(model):
                averaged = validate(model, valid_items, valid_snrs)
            metrics.update({f"ema_{k}": v for k, v in averaged.items()})
        return metrics

    if not history:  # the untrained model's score: the curve's first point
        metrics = validate_both()
        history.append({"step": 0, "cpu_h": 0.0, **metrics})
    first_cpu, first_wall = cpu_s, time.monotonic()
    last_valid = time.monotonic()
    last_valid_cpu_s = cpu_s
    losses: list[float] = []
    model.train()
    with (args.run_dir / "metrics.jsonl").open("a") as metrics_file:
        while True:
            c0, w0 = time.process_time(), time.monotonic()
            mix, src = next(batches)
            est = model(mix.to(device, non_blocking=True))
            loss = pit_si_snr_loss(est, src.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
            if np.isfinite(grad_norm):
                opt.step()
                if ema is not None:
                    ema.update(model)
                losses.append(float(loss.detach()))
            else:
                log.warning("step %d: non-finite gradient, skipped", step)
            step += 1
            cpu_s += time.process_time() - c0
            wall_s += time.monotonic() - w0
            now = time.monotonic()
            done = ((args.max_steps is not None and step >= args.max_steps)
                    or (args.cpu_hours is not None and cpu_s - first_cpu >= args.cpu_hours * 3600)
                    or (args.hours is not None and now - first_wall >= args.hours * 3600))
            due = (cpu_s - last_valid_cpu_s >= args.valid_every_cpu_s if args.valid_every_cpu_s is not None
                   else now - last_valid >= args.valid_every_s)
            if due or done:
                last_valid_cpu_s = cpu_s
                metrics = validate_both()
                record = {"step": step, "cpu_h": round(cpu_s / 3600, 4), "wall_h": round(wall_s / 3600, 4),
                          "lr": opt.param_groups[0]["lr"],
                          "train_loss": float(np.mean(losses)) if losses else float("nan"), **metrics}
                history.append(record)
                metrics_file.write(json.dumps({**record, "time": time.time(), "arch": arch}) + "\n")
                metrics_file.flush()
                log.info("step %d | %.3f CPU-h | %.2f steps/s | loss %.2f | valid SI-SDRi %.2f dB (average %.2f)",
                         step, cpu_s / 3600, len(losses) / max(1e-9, now - last_valid), record["train_loss"],
                         metrics["valid_si_sdri_db"], metrics.get("ema_valid_si_sdri_db", float("nan")))
                losses.clear()
                checkpoint(metrics)
                rate = opt.param_groups[0]["lr"]
                if args.halve_after_steps and step - best_step >= args.halve_after_steps and rate / 2 >= args.min_lr:
                    for group in opt.param_groups:
                        group["lr"] = rate / 2
                    best_step = step  # the next halving waits as long again
                    log.info("step %d: no better validation for %d steps: learning rate %.2g -> %.2g", step,
                             args.halve_after_steps, rate, rate / 2)
                last_valid = time.monotonic()
            if done:
                break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
