"""Pack a built real-voice corpus into one small file, and unpack it: to train on a machine that cannot build it.

    python -m training.pack_corpus pack /work/runs/real/corpus PACKED.npz [--budget-mb 32]
    python -m training.pack_corpus unpack PACKED.npz CORPUS_DIR

The corpus (training.corpus: int16 ``<speaker>.npy`` at 8 kHz, ``index.json``, ``rirs.npz``, the fixed
``valid.npz`` / ``test.npz`` and ``sets.json``) is a few hundred MB; an accelerator machine here is reached only
through a 64 MiB transfer and has none of the Debian voices. ``pack`` keeps the train split's speakers (whole
utterances, speaker by speaker in a round-robin, until the packed audio reaches ``--budget-mb``: every speaker
keeps some speech and the budget goes to those with the most) and the fixed validation set, all as 8-bit mu-law
(about 38 dB SNR, below the training mixtures' own noise) compressed with LZMA, and the room impulse responses as
float16. ``unpack`` needs numpy only and writes a corpus that training.train reads (its validation set rebuilt as
the sum of the decoded sources: its hash differs from the original's, which the trainer reports). Both print
what they kept.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
from pathlib import Path

import numpy as np

MU = 255.0
BYTES_PER_SAMPLE = 0.7  # LZMA of 8-bit mu-law speech, measured


def mulaw_encode(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int8 mu-law."""
    y = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.round(y * 127).astype(np.int8)


def mulaw_decode(q: np.ndarray) -> np.ndarray:
    y = q.astype(np.float32) / 127.0
    return (np.sign(y) * ((1 + MU) ** np.abs(y) - 1) / MU).astype(np.float32)


def _blob(q: np.ndarray) -> np.ndarray:
    return np.frombuffer(lzma.compress(q.tobytes(), preset=6), np.uint8)


def _unblob(b: np.ndarray) -> np.ndarray:
    return np.frombuffer(lzma.decompress(b.tobytes()), np.int8)


def pack(src: Path, dst: Path, budget_mb: float) -> None:
    index = {k: v for k, v in json.loads((src / "index.json").read_text()).items() if v["split"] == "train"}
    budget = budget_mb * 1e6 / BYTES_PER_SAMPLE
    utts = {name: list(zip(info["offsets"][:-1], info["offsets"][1:], strict=True)) for name, info in index.items()}
    kept: dict[str, list[tuple[int, int]]] = {name: [] for name in index}
    total, progress = 0, True
    while total < budget and progress:  # one utterance per speaker per round
        progress = False
        for name in sorted(utts):
            if utts[name] and total < budget:
                a, b = utts[name].pop(0)
                kept[name].append((a, b))
                total += b - a
                progress = True
    out_index, blobs = {}, {}
    for name, items in kept.items():
        if not items:
            continue
        audio = np.load(src / f"{name}.npy").astype(np.float32) / 32768.0
        pieces = [audio[a:b] for a, b in items]
        offsets = np.cumsum([0] + [len(p) for p in pieces]).tolist()
        blobs[f"speaker/{name}"] = _blob(mulaw_encode(np.concatenate(pieces)))
        out_index[name] = {**index[name], "offsets": offsets, "utterances": len(items),
                           "seconds": offsets[-1] / 8000}
    valid = np.load(src / "valid.npz")
    blobs["valid/sources"] = _blob(mulaw_encode(valid["sources"]))
    buffer = io.BytesIO()
    np.savez(buffer, index=np.frombuffer(json.dumps(out_index).encode(), np.uint8),
             sets=np.frombuffer((src / "sets.json").read_bytes(), np.uint8),
             rirs=np.load(src / "rirs.npz")["rirs"].astype(np.float16), valid_shape=np.array(valid["sources"].shape),
             valid_lengths=valid["lengths"], valid_snr_db=valid["snr_db"], **blobs)
    dst.write_bytes(buffer.getvalue())
    full = sum(info["offsets"][-1] for info in index.values()) / 8000 / 3600
    print(json.dumps({"speakers": len(out_index), "train_hours": round(total / 8000 / 3600, 2),
                      "of_hours": round(full, 2), "mb": round(dst.stat().st_size / 1e6, 1)}))


def unpack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    data = np.load(src)
    index = json.loads(bytes(data["index"]).decode())
    for name in index:
        audio = mulaw_decode(_unblob(data[f"speaker/{name}"]))
        np.save(dst / f"{name}.npy", np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16))
    np.savez(dst / "rirs.npz", rirs=data["rirs"].astype(np.float32))
    sources = mulaw_decode(_unblob(data["valid/sources"])).reshape(tuple(data["valid_shape"]))
    np.savez(dst / "valid.npz", mixtures=sources.sum(1), sources=sources, lengths=data["valid_lengths"],
             snr_db=data["valid_snr_db"])
    np.savez(dst / "test.npz", empty=np.zeros(0))  # the test set stays on the machine that built the corpus
    (dst / "index.json").write_text(json.dumps(index))
    (dst / "sets.json").write_bytes(bytes(data["sets"]))
    print(json.dumps({"speakers": len(index), "dir": str(dst)}))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.pack_corpus", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("src", type=Path)
    a.add_argument("dst", type=Path)
    a.add_argument("--budget-mb", type=float, default=32.0)
    b = sub.add_parser("unpack")
    b.add_argument("src", type=Path)
    b.add_argument("dst", type=Path)
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(args.src, args.dst, args.budget_mb)
    else:
        unpack(args.src, args.dst)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
