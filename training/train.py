"""Train the causal Conv-TasNet with PIT SI-SNR on dynamically mixed synthetic talkers.

    python -m training.train --corpus /work/runs/sep/corpus --run-dir /work/runs/sep/run1 [--hours 3]
    python -m training.train ... --device cuda --workers 14 --batch-size 16   # on a GPU machine

Runs on one CPU thread by default (``--threads``); with ``--workers N`` N processes draw the training mixtures
(a GPU waits on one) and resuming then restarts their random streams from the step (not bit-exact).
``--decay`` decays the learning rate (cosine) from ``--lr`` to ``--lr-final`` over this invocation's budget
(``--max-steps`` or ``--hours``, whichever ends it first). ``--real-eval NPZ`` (``mixtures`` (N, T),
``sources`` (N, 2, T) at 8 kHz, written by ``bench/separation/eval.py --export-real``) is scored at every
checkpoint beside the held-out synthetic set. Every ``--checkpoint-every-s`` seconds it validates on fixed mixtures
of held-out voices, writes ``last.pt`` (everything needed to resume: model, optimiser, step,
random states, best score), an exported snapshot ``snapshots/step<N>.safetensors`` (the format
:func:`rtsep.separate.convtasnet.load_convtasnet` reads) and ``best.safetensors``. Started again with the
same ``--run-dir`` it resumes from ``last.pt``. Metrics go to ``metrics.jsonl``; the log to stdout.
The pyannote sample is evaluation data and is never read here (see bench/separation/eval.py).
"""

from __future__ import annotations

import argparse
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
from training.data import Corpus, DynamicMixer, MixConfig

log = logging.getLogger("training.train")


def make_valid_set(corpus: Corpus, count: int, segment_samples: int, seed: int = 1234):
    mixer = DynamicMixer(corpus, MixConfig(segment_samples=segment_samples), np.random.default_rng(seed))
    pairs = [mixer.draw() for _ in range(count)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


@torch.no_grad()
def validate(model: ConvTasNet, mixtures: torch.Tensor, sources: torch.Tensor, batch: int = 8,
             prefix: str = "valid") -> dict[str, float]:
    model.eval()
    sdr, sdri = [], []
    device = next(model.parameters()).device
    for i in range(0, len(mixtures), batch):
        mix, ref = mixtures[i : i + batch].to(device), sources[i : i + batch].to(device)
        est = model(mix)
        best, _ = pit_si_sdr(est, ref)
        base = si_sdr(mix.unsqueeze(1).expand_as(ref), ref).mean(1)
        sdr.append(best)
        sdri.append(best - base)
    model.train()
    return {f"{prefix}_si_sdr_db": float(torch.cat(sdr).mean()), f"{prefix}_si_sdri_db": float(torch.cat(sdri).mean())}


class MixtureStream(torch.utils.data.IterableDataset):
    """Training batches from a DynamicMixer, one independent random stream per DataLoader worker."""

    def __init__(self, corpus: Corpus, config: MixConfig, batch_size: int, seed: tuple[int, ...]) -> None:
        self.corpus, self.config, self.batch_size, self.seed = corpus, config, batch_size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        mixer = DynamicMixer(self.corpus, self.config, np.random.default_rng([*self.seed, worker]))
        for mix, src in mixer.batches(self.batch_size):
            yield torch.from_numpy(mix), torch.from_numpy(src)


def load_real_eval(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = np.load(path)
    return torch.from_numpy(data["mixtures"].astype(np.float32)), torch.from_numpy(data["sources"].astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n")[0])
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--hours", type=float, default=None, help="stop after this much training time (this run)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--segment-s", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint-every-s", type=float, default=300.0)
    p.add_argument("--valid-count", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", type=str, default="{}", help="JSON overrides of ConvTasNetConfig (new runs only)")
    p.add_argument("--mix", type=str, default="{}", help="JSON overrides of MixConfig")
    p.add_argument("--init-from", type=Path, default=None, help="start a new run from these weights")
    p.add_argument("--device", type=str, default="cpu")
    p.add_argument("--workers", type=int, default=0, help="processes drawing mixtures (0: in the training loop)")
    p.add_argument("--decay", action="store_true", help="cosine decay of the rate over this invocation's budget")
    p.add_argument("--lr-final", type=float, default=1e-5)
    p.add_argument("--real-eval", type=Path, default=None, help="real-speech mixtures scored at every checkpoint")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)
    run = args.run_dir
    (run / "snapshots").mkdir(parents=True, exist_ok=True)
    last_path = run / "last.pt"

    mix_overrides = json.loads(args.mix)
    mix_fields = {f.name for f in fields(MixConfig)}
    bad = set(mix_overrides) - mix_fields
    if bad:
        p.error(f"unknown mix options {sorted(bad)}")
    segment = int(args.segment_s * 8000) // 8 * 8
    mix_cfg = MixConfig(segment_samples=segment, **{k: tuple(v) if isinstance(v, list) else v
                                                    for k, v in mix_overrides.items()})

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        config = ConvTasNetConfig(**state["config"])
        model = ConvTasNet(config)
        model.load_state_dict(state["model"])
        model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        opt.load_state_dict(state["optimizer"])
        for group in opt.param_groups:
            group["lr"] = args.lr
        step, trained_s, best = state["step"], state["trained_s"], state["best"]
        rng = np.random.default_rng()
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed %s at step %d (%.2f h trained, best %.2f dB)", last_path, step, trained_s / 3600, best)
    else:
        config = ConvTasNetConfig(**json.loads(args.model))
        torch.manual_seed(args.seed)
        model = ConvTasNet(config)
        if args.init_from is not None:
            from rtsep.separate.convtasnet import load_convtasnet

            model.load_state_dict(load_convtasnet(args.init_from).state_dict())
        model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        step, trained_s, best = 0, 0.0, -1e9
        rng = np.random.default_rng(args.seed)
        log.info("new run %s: %s, %d parameters", run, asdict(config), model.num_parameters())
    (run / "config.json").write_text(json.dumps({"model": asdict(config), "mix": asdict(mix_cfg), "args": vars(args)},
                                                default=str, indent=1))

    train_corpus = Corpus(args.corpus, "train")
    valid_corpus = Corpus(args.corpus, "valid")
    log.info("corpus: %d train speakers (%.2f h), %d held-out speakers (%.2f h)", len(train_corpus.speakers),
             train_corpus.seconds / 3600, len(valid_corpus.speakers), valid_corpus.seconds / 3600)
    valid_mix, valid_src = make_valid_set(valid_corpus, args.valid_count, segment)
    real_mix = real_src = None
    if args.real_eval is not None:
        real_mix, real_src = load_real_eval(args.real_eval)
    if args.workers > 0:
        stream = MixtureStream(train_corpus, mix_cfg, args.batch_size, (args.seed, step))
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=args.workers,
                                             pin_memory=device.type == "cuda", prefetch_factor=4,
                                             persistent_workers=True)
        batches = iter(loader)
    else:
        mixer = DynamicMixer(train_corpus, mix_cfg, rng)
        batches = ((torch.from_numpy(m), torch.from_numpy(s)) for m, s in mixer.batches(args.batch_size))
    first_step = step

    if args.decay and args.max_steps is None and args.hours is None:
        p.error("--decay needs --max-steps or --hours")

    def rate(at_step: int) -> float:
        if not args.decay:
            return args.lr
        shares = [(at_step - first_step) / max(1, args.max_steps - first_step)] if args.max_steps else []
        if args.hours:
            shares.append((time.monotonic() - started) / (args.hours * 3600))
        share = min(1.0, max(shares))
        return args.lr_final + (args.lr - args.lr_final) * 0.5 * (1 + np.cos(np.pi * share))

    def checkpoint(metrics: dict[str, float]) -> None:
        nonlocal best
        meta = {"step": step, "trained_s": round(trained_s), **metrics, "corpus": str(args.corpus)}
        save_convtasnet(model, run / "snapshots" / f"step{step:07d}.safetensors", meta)
        if metrics["valid_si_sdri_db"] > best:
            best = metrics["valid_si_sdri_db"]
            save_convtasnet(model, run / "best.safetensors", meta)
        tmp = run / "last.pt.tmp"
        weights = {k: v.cpu() for k, v in model.state_dict().items()}
        torch.save({"config": asdict(config), "model": weights, "optimizer": opt.state_dict(),
                    "step": step, "trained_s": trained_s, "best": best, "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(last_path)

    from tqdm import tqdm

    model.train()
    started = time.monotonic()
    last_ckpt = started
    losses: list[float] = []
    bar = tqdm(initial=step, total=args.max_steps, unit="step", mininterval=60, file=sys.stderr, dynamic_ncols=False)
    with (run / "metrics.jsonl").open("a") as metrics_file:
        while True:
            t0 = time.monotonic()
            mix, src = next(batches)
            for group in opt.param_groups:
                group["lr"] = rate(step)
            est = model(mix.to(device, non_blocking=True))
            loss = pit_si_snr_loss(est, src.to(device, non_blocking=True))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip))
            if not np.isfinite(grad_norm):
                log.warning("step %d: non-finite gradient, skipped", step)
                continue
            opt.step()
            step += 1
            trained_s += time.monotonic() - t0
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.2f}", refresh=False)
            now = time.monotonic()
            done = (args.max_steps is not None and step >= args.max_steps) or (
                args.hours is not None and now - started >= args.hours * 3600)
            if now - last_ckpt >= args.checkpoint_every_s or done:
                metrics = validate(model, valid_mix, valid_src)
                if real_mix is not None:
                    metrics.update(validate(model, real_mix, real_src, prefix="real"))
                record = {"step": step, "trained_h": round(trained_s / 3600, 3), "time": time.time(),
                          "train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"], **metrics}
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                log.info("step %d | loss %.2f | held-out SI-SDRi %.2f dB | real %s dB", step, record["train_loss"],
                         metrics["valid_si_sdri_db"], f"{metrics['real_si_sdri_db']:.2f}" if real_mix is not None
                         else "-")
                losses.clear()
                checkpoint(metrics)
                last_ckpt = time.monotonic()
            if done:
                break
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
