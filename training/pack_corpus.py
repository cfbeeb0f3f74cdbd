"""Pack a training corpus into one small file, and unpack it: to train on a machine that cannot build it.

    python -m training.pack_corpus pack /work/runs/sep/corpus PACKED.npz [--budget-mb 40]
    python -m training.pack_corpus unpack PACKED.npz CORPUS_DIR

The corpus (training.data: int16 ``<voice>.npy`` at 8 kHz, ``index.json``, ``rirs.npz``) is ~0.6 GB;
an accelerator machine here is reached only through a 64 MiB transfer and has no speech synthesisers. ``pack``
keeps whole utterances of every voice, voice by voice in a round-robin, until the packed audio reaches
``--budget-mb`` (so every voice keeps some speech and the budget goes to the voices with the most), stores them
as 8-bit mu-law (about 38 dB SNR, below the training mixtures' own noise and codec augmentation) compressed with
LZMA, and the room impulse responses as float16. ``unpack`` needs numpy only and writes a corpus that
``training.data.Corpus`` reads. Both print what they kept.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
from pathlib import Path

import numpy as np

MU = 255.0
# LZMA of 8-bit mu-law speech: about 0.7 byte per sample (measured on the corpus)
BYTES_PER_SAMPLE = 0.7


def mulaw_encode(x_int16: np.ndarray) -> np.ndarray:
    x = x_int16.astype(np.float32) / 32768.0
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.round(y * 127).astype(np.int8)


def mulaw_decode(q: np.ndarray) -> np.ndarray:
    y = q.astype(np.float32) / 127.0
    x = np.sign(y) * ((1 + MU) ** np.abs(y) - 1) / MU
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def pack(src: Path, dst: Path, budget_mb: float) -> None:
    index = json.loads((src / "index.json").read_text())
    budget = budget_mb * 1e6 / BYTES_PER_SAMPLE
    utts = {name: list(zip(info["offsets"][:-1], info["offsets"][1:], info["text_ids"], strict=True))
            for name, info in index.items()}
    kept: dict[str, list] = {name: [] for name in index}
    total, progress = 0, True
    while total < budget and progress:  # one utterance per voice per round
        progress = False
        for name in sorted(utts):
            if utts[name] and total < budget:
                a, b, tid = utts[name].pop(0)
                kept[name].append((a, b, tid))
                total += b - a
                progress = True
    out_index, blobs = {}, {}
    for name, items in kept.items():
        if not items:
            continue
        audio = np.load(src / f"{name}.npy")
        pieces = [audio[a:b] for a, b, _ in items]
        offsets = np.cumsum([0] + [len(p) for p in pieces]).tolist()
        blobs[name] = np.frombuffer(lzma.compress(mulaw_encode(np.concatenate(pieces)).tobytes(), preset=6), np.uint8)
        out_index[name] = {**index[name], "offsets": offsets, "text_ids": [t for _, _, t in items]}
    rirs = np.load(src / "rirs.npz")["rirs"].astype(np.float16)
    buffer = io.BytesIO()
    np.savez(buffer, index=np.frombuffer(json.dumps(out_index).encode(), np.uint8), rirs=rirs,
             **{f"voice/{k}": v for k, v in blobs.items()})
    dst.write_bytes(buffer.getvalue())
    full = sum(info["offsets"][-1] for info in index.values()) / 8000 / 3600
    print(json.dumps({"voices": len(out_index), "hours": round(total / 8000 / 3600, 2), "of_hours": round(full, 2),
                      "mb": round(dst.stat().st_size / 1e6, 1)}))


def unpack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    data = np.load(src)
    index = json.loads(bytes(data["index"]).decode())
    for name in index:
        q = np.frombuffer(lzma.decompress(data[f"voice/{name}"].tobytes()), np.int8)
        np.save(dst / f"{name}.npy", mulaw_decode(q))
    np.savez(dst / "rirs.npz", rirs=data["rirs"].astype(np.float32))
    (dst / "index.json").write_text(json.dumps(index))
    print(json.dumps({"voices": len(index), "dir": str(dst)}))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("src", type=Path)
    a.add_argument("dst", type=Path)
    a.add_argument("--budget-mb", type=float, default=40.0)
    b = sub.add_parser("unpack")
    b.add_argument("src", type=Path)
    b.add_argument("dst", type=Path)
    args = p.parse_args()
    if args.cmd == "pack":
        pack(args.src, args.dst, args.budget_mb)
    else:
        unpack(args.src, args.dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
