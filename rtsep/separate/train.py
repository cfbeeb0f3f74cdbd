"""Train the causal Conv-TasNet with PIT SI-SNR on dynamically mixed synthetic talkers.

    python -m rtsep.separate.train --corpus /work/runs/sep/corpus --run-dir /work/runs/sep/run1 [--hours 3]

Runs on one CPU thread by default (``--threads``). Every ``--checkpoint-every-s`` seconds it validates on
fixed mixtures of held-out voices, writes ``last.pt`` (everything needed to resume: model, optimiser, step,
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
from rtsep.separate.data import Corpus, DynamicMixer, MixConfig
from rtsep.separate.losses import pit_si_sdr, pit_si_snr_loss, si_sdr

log = logging.getLogger("rtsep.separate.train")


def make_valid_set(corpus: Corpus, count: int, segment_samples: int, seed: int = 1234):
    mixer = DynamicMixer(corpus, MixConfig(segment_samples=segment_samples), np.random.default_rng(seed))
    pairs = [mixer.draw() for _ in range(count)]
    return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))


@torch.no_grad()
def validate(model: ConvTasNet, mixtures: torch.Tensor, sources: torch.Tensor, batch: int = 8) -> dict[str, float]:
    model.eval()
    sdr, sdri = [], []
    for i in range(0, len(mixtures), batch):
        mix, ref = mixtures[i : i + batch], sources[i : i + batch]
        est = model(mix)
        best, _ = pit_si_sdr(est, ref)
        base = si_sdr(mix.unsqueeze(1).expand_as(ref), ref).mean(1)
        sdr.append(best)
        sdri.append(best - base)
    model.train()
    return {"valid_si_sdr_db": float(torch.cat(sdr).mean()), "valid_si_sdri_db": float(torch.cat(sdri).mean())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rtsep.separate.train", description=__doc__.split("\n")[0])
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

    if last_path.exists():
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        config = ConvTasNetConfig(**state["config"])
        model = ConvTasNet(config)
        model.load_state_dict(state["model"])
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
    mixer = DynamicMixer(train_corpus, mix_cfg, rng)
    batches = mixer.batches(args.batch_size)

    def checkpoint(metrics: dict[str, float]) -> None:
        nonlocal best
        meta = {"step": step, "trained_s": round(trained_s), **metrics, "corpus": str(args.corpus)}
        save_convtasnet(model, run / "snapshots" / f"step{step:07d}.safetensors", meta)
        if metrics["valid_si_sdri_db"] > best:
            best = metrics["valid_si_sdri_db"]
            save_convtasnet(model, run / "best.safetensors", meta)
        tmp = run / "last.pt.tmp"
        torch.save({"config": asdict(config), "model": model.state_dict(), "optimizer": opt.state_dict(),
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
            est = model(torch.from_numpy(mix))
            loss = pit_si_snr_loss(est, torch.from_numpy(src))
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
                record = {"step": step, "trained_h": round(trained_s / 3600, 3), "time": time.time(),
                          "train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"], **metrics}
                metrics_file.write(json.dumps(record) + "\n")
                metrics_file.flush()
                log.info("step %d | loss %.2f | held-out SI-SDRi %.2f dB", step, record["train_loss"],
                         metrics["valid_si_sdri_db"])
                losses.clear()
                checkpoint(metrics)
                last_ckpt = time.monotonic()
            if done:
                break
    bar.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
